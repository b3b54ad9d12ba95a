//! PSRP messages (MS-PSRP 2.2.1): destination, message type, runspace pool and pipeline ids, data.

//! PSRP fragments (MS-PSRP 2.2.4): splitting messages to the negotiated blob size and joining them.

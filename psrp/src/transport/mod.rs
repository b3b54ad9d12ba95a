//! Transports: they move bytes and know nothing of PSRP messages.

pub mod outofproc;
pub mod ssh;
pub mod wsman;

//! A PowerShell Remoting Protocol (MS-PSRP) client, with no Kubernetes in it.
//!
//! Shaped like psrpcore and pypsrp: a sans-IO protocol core (fragments, messages, CLIXML, runspace
//! pool and pipeline state machines: bytes in, events out, bytes to send) and transports beside it
//! that only move bytes (the out-of-process framing over an SSH `powershell` subsystem; SOAP
//! envelopes over WS-Management's HTTP, with its authentication and message encryption), joined
//! by a small async facade.

pub mod clixml;
pub mod crypto;
pub mod fragment;
pub mod host;
pub mod message;
pub mod messages;
pub mod pool;
pub mod session;
pub mod state;
pub mod transport;
pub mod wsman;

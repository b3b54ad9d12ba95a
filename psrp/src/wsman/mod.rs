//! The sans-IO WS-Management / WinRS layer for PowerShell shells (MS-WSMV; MS-PSRP 3.1.4 for how
//! PowerShell uses it): builders of request envelopes (bytes) and parsers of response envelopes
//! into typed values, shaped like pypsrp's `wsman.py` and `shell.py`. No HTTP, no auth: the
//! transport posts [`Envelope::to_bytes`] and hands the answer's body to a `parse_*` function.
//!
//! - [`namespaces`]: namespace, action, resource and signal URIs.
//! - [`envelope`]: the request envelope, its headers and bodies.
//! - [`response`]: reading a response envelope's headers and body.
//! - [`error`]: what can go wrong, as [`WsmanError`].
//! - [`shell`]: [`WsmanClient`] and the operations on shells; Create, Command, Connect, Get
//!   responses.
//! - [`receive`]: ReceiveResponse, and how received output is acknowledged.
//! - [`enumerate`]: shells and commands of Enumerate/Pull.
//! - [`fault`]: SOAP faults as [`Fault`].

pub mod duration;
pub mod enumerate;
pub mod envelope;
pub mod error;
pub mod fault;
pub mod namespaces;
pub mod receive;
pub mod response;
pub mod shell;
pub mod xml;

pub use enumerate::{CommandInfo, EnumerationPage, ShellInfo, ShellState, parse_commands, parse_shells};
pub use envelope::{
    Body, BufferMode, CreateShellBody, Envelope, OperationId, Selector, SendStream, WsOption,
};
pub use error::WsmanError;
pub use fault::{Fault, FaultDetail};
pub use receive::{CommandState, CommandStateKind, ReceiveResponse, ReceivedStream, parse_receive_response};
pub use response::{Response, ResponseHeader, parse_header, parse_uuid};
pub use shell::{
    ConnectResponse, CreatePowerShell, Signal, WsmanClient, parse_acknowledge, parse_command_response,
    parse_config_max_envelope_size, parse_connect_response, parse_create_response, parse_empty_response,
    parse_get_shell_response,
};

#[cfg(test)]
mod tests;

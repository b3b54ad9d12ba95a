//! Receive: output of the shell and its commands (MS-WSMV 3.1.4.14), and how a client keeps it
//! safe before it asks for more.
//!
//! # Acknowledging received output
//!
//! "Output is persisted before more is requested" rests on three mechanisms, from the one every
//! server has to the one only some offer:
//!
//! 1. **The next Receive.** A server hands out output once: what a ReceiveResponse carried is gone
//!    from its buffer, and it waits for the next Receive before sending more (MS-WSMV 3.1.4.14;
//!    MS-PSRP 3.1.4.10.3: after each ReceiveResponse the client MUST send another Receive). So a
//!    client persists a response's output (status, output ConfigMap) and only then sends the next
//!    Receive; while it has not, a disconnected server buffers the rest (BufferMode Block).
//! 2. **`rsp:Receive/@SequenceId`.** Windows' own client numbers its Receives
//!    (`<rsp:Receive SequenceId="0">`) and the server echoes the number on the ReceiveResponse
//!    (the Custom Shell Receive example, MS-WSMV 4.8.4). The schemas leave the request attribute
//!    out (2.2.4.26) and call the response's `SequenceID` reserved, to be ignored (2.2.4.27): it
//!    correlates a response with the Receive it answers, it does not make a server resend.
//!    [`super::WsmanClient::receive_numbered`] writes it, [`ReceiveResponse::sequence_id`] reads
//!    the echo.
//! 3. **Robust Connection Support** (MS-WSMV 3.1.4.1.39), which a server SHOULD offer for custom
//!    remote shells such as PowerShell's: a client that puts a `wsmv:OperationID` and
//!    `wsmv:SequenceId` 1 on its request ([`super::Envelope::operation_id`]) gets the same
//!    OperationID and a numbered `wsmv:SequenceId` on every response ([`super::ResponseHeader`]);
//!    the server keeps those responses, and after a network failure the client sends the same
//!    request again with the OperationID's `mustUnderstand="true"`
//!    ([`super::Envelope::retransmission`]): the server answers with an Acknowledge of what it had
//!    received ([`super::parse_acknowledge`]) and the responses the client missed (example in
//!    4.11.3). When its cache is full the server sends an AcknowledgeRequest (3.1.6.6,
//!    [`super::ResponseHeader::acknowledge_requested`]); the client answers with an Acknowledge
//!    naming the last sequence number it has persisted ([`super::WsmanClient::acknowledge`],
//!    3.1.4.18), and the server deletes the responses up to it. A server without robust
//!    connections for the resource ignores the OperationID and leaves both headers out of its
//!    responses, which is how a client tells whether it has them.

use uuid::Uuid;

use super::error::WsmanError;
use super::namespaces::{SHELL, action};
use super::response::{Response, decode_base64, parse_uuid, read_response};

/// `rsp:CommandState/@State` (MS-WSMV 2.2.5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandStateKind {
    /// `.../CommandState/Done`: the command has ended; its output is complete.
    Done,
    /// `.../CommandState/Pending`: the command waits for input.
    Pending,
    /// `.../CommandState/Running`.
    Running,
    /// Any other URI, kept.
    Other(String),
}

impl CommandStateKind {
    fn parse(uri: &str) -> CommandStateKind {
        match uri.trim().rsplit('/').next() {
            Some("Done") => CommandStateKind::Done,
            Some("Pending") => CommandStateKind::Pending,
            Some("Running") => CommandStateKind::Running,
            _ => CommandStateKind::Other(uri.trim().to_string()),
        }
    }
}

/// `rsp:CommandState` (MS-WSMV 2.2.4.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandState {
    pub command_id: Option<Uuid>,
    pub state: CommandStateKind,
    /// `rsp:ExitCode` (WinRS commands; PowerShell pipelines report 0).
    pub exit_code: Option<i64>,
}

/// One `rsp:Stream` of a ReceiveResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedStream {
    /// `stdout` (PowerShell), `stdout` or `stderr` (WinRS).
    pub name: String,
    /// The pipeline the data belongs to; `None` for the runspace pool's own messages.
    pub command_id: Option<Uuid>,
    /// `End="true"`: the last data of this stream for the command.
    pub end: bool,
    /// The decoded bytes (PowerShell: PSRP fragments).
    pub data: Vec<u8>,
}

/// The body of a ReceiveResponse (MS-WSMV 2.2.4.27).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiveResponse {
    /// Every `rsp:Stream` chunk, in order.
    pub streams: Vec<ReceivedStream>,
    pub command_state: Option<CommandState>,
    /// `rsp:ReceiveResponse/@SequenceId` (2.2.4.27 spells it `SequenceID`, reserves it and says to
    /// ignore it; Windows echoes the Receive's `SequenceId` in it, example of 4.8.4).
    pub sequence_id: Option<u64>,
}

impl ReceiveResponse {
    /// Whether the command (or, with `None`, any command) reported Done.
    pub fn is_done(&self, command_id: Option<Uuid>) -> bool {
        self.command_state.as_ref().is_some_and(|s| {
            s.state == CommandStateKind::Done && (command_id.is_none() || s.command_id == command_id)
        })
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim() {
        "true" | "True" | "TRUE" | "1" => Some(true),
        "false" | "False" | "FALSE" | "0" => Some(false),
        _ => None,
    }
}

fn optional_uuid(what: &'static str, text: Option<&str>) -> Result<Option<Uuid>, WsmanError> {
    text.map(|t| parse_uuid(t).ok_or_else(|| WsmanError::invalid(what, t)))
        .transpose()
}

/// Parses a ReceiveResponse. A `w:TimedOut` fault (no output within the OperationTimeout) comes
/// back as `WsmanError::Fault(Fault::OperationTimeout(_))`: ask again.
pub fn parse_receive_response(bytes: &[u8]) -> Result<Response<ReceiveResponse>, WsmanError> {
    let (header, body) = read_response(bytes, action::RECEIVE_RESPONSE)?;
    let rr = body
        .child(SHELL, "ReceiveResponse")
        .ok_or(WsmanError::Missing("rsp:ReceiveResponse"))?;
    let mut out = ReceiveResponse {
        sequence_id: match rr.attr("SequenceId").or_else(|| rr.attr("SequenceID")) {
            Some(s) => Some(
                s.trim()
                    .parse()
                    .map_err(|_| WsmanError::invalid("ReceiveResponse/@SequenceId", s))?,
            ),
            None => None,
        },
        ..ReceiveResponse::default()
    };
    for stream in rr.children(SHELL, "Stream") {
        let name = stream
            .attr("Name")
            .ok_or(WsmanError::Missing("rsp:Stream/@Name"))?
            .to_string();
        let command_id = optional_uuid("rsp:Stream/@CommandId", stream.attr("CommandId"))?;
        let end = match stream.attr("End") {
            Some(e) => parse_bool(e).ok_or_else(|| WsmanError::invalid("rsp:Stream/@End", e))?,
            None => false,
        };
        let data = decode_base64("rsp:Stream", &stream.text)?;
        out.streams.push(ReceivedStream {
            name,
            command_id,
            end,
            data,
        });
    }
    // One CommandState by the schema (2.2.4.27), but the example of 4.8.4 has a Pending and then a
    // Done in one response: the last one is the command's state.
    if let Some(cs) = rr.children(SHELL, "CommandState").last() {
        let state = cs
            .attr("State")
            .ok_or(WsmanError::Missing("rsp:CommandState/@State"))?;
        let exit_code = match cs.child_text(SHELL, "ExitCode") {
            Some(code) => Some(
                code.parse()
                    .map_err(|_| WsmanError::invalid("rsp:ExitCode", code))?,
            ),
            None => None,
        };
        out.command_state = Some(CommandState {
            command_id: optional_uuid("rsp:CommandState/@CommandId", cs.attr("CommandId"))?,
            state: CommandStateKind::parse(state),
            exit_code,
        });
    }
    Ok(Response { header, body: out })
}

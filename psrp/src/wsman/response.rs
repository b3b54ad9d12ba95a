//! Reading a response envelope: its headers (action, message ids, robust-connection ids) and its
//! body, with a fault in the body turned into [`WsmanError::Fault`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use uuid::Uuid;

use super::error::WsmanError;
use super::fault::Fault;
use super::namespaces::{ADDRESSING, SOAP, WSMV, action};
use super::xml::{self, Element};

/// The headers of a response that matter to a client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseHeader {
    /// `wsa:Action` (empty when the server sent none).
    pub action: String,
    /// `wsa:MessageID`.
    pub message_id: Option<String>,
    /// `wsa:RelatesTo`: the request's MessageID.
    pub relates_to: Option<String>,
    /// `wsmv:OperationID`: present when the server supports robust connections for the request's
    /// resource and the request carried an operation id (MS-WSMV 3.1.4.1.39).
    pub operation_id: Option<Uuid>,
    /// `wsmv:SequenceId` (or `SequenceID`): the number of this response within its operation
    /// (MS-WSMV 3.1.6.6); what a client names in an Acknowledge once it has kept the response.
    pub sequence_id: Option<u64>,
}

impl ResponseHeader {
    /// The server's cache of robust-connection responses is full: it asks the client to
    /// acknowledge what it has kept (MS-WSMV 3.1.6.6) with [`super::shell::WsmanClient::acknowledge`].
    pub fn acknowledge_requested(&self) -> bool {
        self.action == action::ACKNOWLEDGE_REQUEST
    }
}

/// A parsed response: its headers and its typed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<T> {
    pub header: ResponseHeader,
    pub body: T,
}

/// Parses a GUID as WS-Management writes it: bare or as a `uuid:` URI, any case.
pub fn parse_uuid(text: &str) -> Option<Uuid> {
    let text = text.trim();
    let text = text
        .strip_prefix("uuid:")
        .or_else(|| text.strip_prefix("urn:uuid:"))
        .unwrap_or(text);
    Uuid::try_parse(text).ok()
}

/// Reads an envelope into its headers and body element; a body holding an `s:Fault` is returned
/// as [`WsmanError::Fault`].
pub(crate) fn read_envelope(bytes: &[u8]) -> Result<(ResponseHeader, Element), WsmanError> {
    let root = xml::parse(bytes)?;
    if !root.is(SOAP, "Envelope") {
        return Err(WsmanError::NotEnvelope(root.name));
    }
    let mut header = ResponseHeader::default();
    if let Some(h) = root.child(SOAP, "Header") {
        header.action = h.child_text(ADDRESSING, "Action").unwrap_or("").to_string();
        header.message_id = h.child_text(ADDRESSING, "MessageID").map(str::to_string);
        header.relates_to = h.child_text(ADDRESSING, "RelatesTo").map(str::to_string);
        if let Some(op) = h.child_text(WSMV, "OperationID") {
            header.operation_id =
                Some(parse_uuid(op).ok_or_else(|| WsmanError::invalid("wsmv:OperationID", op))?);
        }
        if let Some(seq) = h
            .child_text(WSMV, "SequenceId")
            .or_else(|| h.child_text(WSMV, "SequenceID"))
        {
            header.sequence_id = Some(
                seq.parse()
                    .map_err(|_| WsmanError::invalid("wsmv:SequenceId", seq))?,
            );
        }
    }
    let body = root
        .children
        .into_iter()
        .find(|c| c.is(SOAP, "Body"))
        .ok_or(WsmanError::Missing("s:Body"))?;
    if let Some(fault) = body.child(SOAP, "Fault") {
        return Err(Fault::from_element(fault).into());
    }
    Ok((header, body))
}

/// Reads an envelope and checks its action (when it has one) is `expected`.
pub(crate) fn read_response(
    bytes: &[u8],
    expected: &'static str,
) -> Result<(ResponseHeader, Element), WsmanError> {
    let (header, body) = read_envelope(bytes)?;
    if !header.action.is_empty() && header.action != expected {
        return Err(WsmanError::UnexpectedAction {
            expected,
            got: header.action,
        });
    }
    Ok((header, body))
}

/// The headers of any response envelope (a fault is an error), to see what it is before
/// parsing it: e.g. a robust connection's AcknowledgeRequest (MS-WSMV 3.1.6.6).
pub fn parse_header(bytes: &[u8]) -> Result<ResponseHeader, WsmanError> {
    read_envelope(bytes).map(|(header, _)| header)
}

/// Decodes base64 text of a stream or a PowerShell payload (whitespace allowed).
pub(crate) fn decode_base64(what: &'static str, text: &str) -> Result<Vec<u8>, WsmanError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    BASE64
        .decode(compact.as_bytes())
        .map_err(|_| WsmanError::invalid(what, text.chars().take(40).collect::<String>()))
}

//! The SOAP 1.2 envelope of a request, with the WS-Addressing and WS-Management headers Windows
//! expects (MS-WSMV 3.1.4.1), and the bodies of the shell operations (MS-WSMV 2.2.4).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use uuid::Uuid;

use super::duration;
use super::namespaces::{ADDRESSING, ANONYMOUS, SOAP, WSMAN, WSMV};
use super::xml::XmlWriter;

/// A `wsman:Selector` of the `wsman:SelectorSet` (the shell's `ShellId`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: String,
    pub value: String,
}

/// A `wsman:Option` of the `wsman:OptionSet` (MS-WSMV 3.1.4.1.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsOption {
    pub name: String,
    pub value: String,
    /// `MustComply`, written when set (`protocolversion` and `WINRS_NOPROFILE` carry it).
    pub must_comply: Option<bool>,
}

impl WsOption {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        WsOption {
            name: name.into(),
            value: value.into(),
            must_comply: None,
        }
    }

    pub fn must_comply(name: impl Into<String>, value: impl Into<String>) -> Self {
        WsOption {
            must_comply: Some(true),
            ..WsOption::new(name, value)
        }
    }
}

/// Robust connection support (MS-WSMV 3.1.4.1.39): the operation id a client puts on a request
/// so that the server caches the responses of the operation, and the client can fetch them again
/// after a network outage by sending the same request with the same id as a retransmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationId {
    /// `wsmv:OperationID` (MS-WSMV 2.2.4.45), written as `uuid:<GUID>`.
    pub id: Uuid,
    /// A retransmission of an earlier request of this operation: `s:mustUnderstand="true"` on
    /// the `wsmv:OperationID` header (MS-WSMV 3.1.4.1.39); the server then answers from its cache.
    pub retransmission: bool,
    /// `wsmv:SequenceId` (MS-WSMV 2.2.4.46 names the element `SequenceID`; Windows writes
    /// `SequenceId`, as in the examples of 4.11): 1 for the first message of an operation, which
    /// is what a request carries; the server numbers its responses from 1 on.
    pub sequence_id: u64,
}

impl OperationId {
    pub fn new(id: Uuid) -> Self {
        OperationId {
            id,
            retransmission: false,
            sequence_id: 1,
        }
    }

    /// The same operation sent again after an outage.
    pub fn retransmit(self) -> Self {
        OperationId {
            retransmission: true,
            sequence_id: 1,
            ..self
        }
    }
}

/// One `rsp:Stream` of a Send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendStream {
    /// `stdin` for data, `pr` for answers to host calls (PowerShell's prompt-response stream).
    pub name: String,
    /// The pipeline, or `None` for data of the runspace pool itself.
    pub command_id: Option<Uuid>,
    /// `End`: no more data on this stream (WinRS commands; PowerShell does not use it).
    pub end: Option<bool>,
    pub data: Vec<u8>,
}

/// The body of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `<s:Body/>`: Delete, Get, Reconnect.
    Empty,
    /// `rsp:Shell` of a Create (MS-WSMV 2.2.4.37; MS-PSRP 3.1.5.3.1 for `creationXml`).
    CreateShell(CreateShellBody),
    /// `rsp:CommandLine` (MS-WSMV 2.2.4.7): a PowerShell pipeline (an empty `rsp:Command` and the
    /// base64 CREATE_PIPELINE fragments as the one argument, MS-PSRP 3.1.5.3.3) or a WinRS command.
    CommandLine {
        command_id: Option<Uuid>,
        command: String,
        arguments: Vec<String>,
    },
    /// `rsp:Send` (MS-WSMV 2.2.4.32).
    Send(Vec<SendStream>),
    /// `rsp:Receive` (MS-WSMV 2.2.4.26).
    Receive {
        /// Space-separated stream names (`stdout`; WinRS: `stdout stderr`).
        streams: String,
        command_id: Option<Uuid>,
        /// The `SequenceId` attribute Windows' own client puts on `rsp:Receive` (MS-WSMV 4.8.4,
        /// an informative example; the schema in 2.2.4.26 does not list it): the number of this
        /// Receive of the command. See [`super::receive`].
        sequence_id: Option<u64>,
    },
    /// `rsp:Signal` (MS-WSMV 2.2.4.38).
    Signal { command_id: Option<Uuid>, code: String },
    /// `rsp:Disconnect` (MS-WSMV 2.2.4.15; MS-PSRP 3.1.5.3.16), empty when both are `None`.
    Disconnect {
        buffer_mode: Option<BufferMode>,
        idle_timeout: Option<Duration>,
    },
    /// `rsp:Connect` (MS-WSMV 2.2.4.12): with `connectXml` to connect to a disconnected pool, or
    /// with a `CommandId` to connect to one of its pipelines (MS-PSRP 3.1.5.3.14, 3.1.4.10.3).
    Connect {
        command_id: Option<Uuid>,
        connect_xml: Option<Vec<u8>>,
    },
    /// `wsen:Enumerate` with `wsman:OptimizeEnumeration` and `wsman:MaxElements`, and, for the
    /// commands of one shell, a selector filter on its ShellId (MS-WSMV 3.1.4.8.2).
    Enumerate {
        max_elements: u32,
        shell_filter: Option<Uuid>,
    },
    /// `wsen:Pull` of the next page of an enumeration (MS-WSMV 3.1.4.9).
    Pull { context: String, max_elements: u32 },
    /// An Acknowledge (MS-WSMV 2.2.4.44, 3.1.4.18): `wsmv:LastSequenceIdReceived`, the last
    /// robust-connection response the client has kept, directly in the body as in the example of
    /// MS-WSMV 4.11.3.
    Acknowledge { last_sequence_id_received: u64 },
}

/// `rsp:BufferMode` (MS-WSMV 2.2.5.10): what the server does with output while no client is
/// connected: `Block` stops the pipeline when the buffer is full, `Drop` drops the oldest output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferMode {
    Block,
    Drop,
}

impl BufferMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BufferMode::Block => "Block",
            BufferMode::Drop => "Drop",
        }
    }

    pub fn parse(text: &str) -> Option<BufferMode> {
        match text.trim() {
            "Block" => Some(BufferMode::Block),
            "Drop" => Some(BufferMode::Drop),
            _ => None,
        }
    }
}

/// The content of an `rsp:Shell` of a Create.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateShellBody {
    /// The `ShellId` attribute: chosen by the client for PowerShell (the runspace pool id; a
    /// shell can be disconnected only when the client chose its id, MS-WSMV 3.1.4.15), absent for
    /// WinRS.
    pub shell_id: Option<Uuid>,
    /// `rsp:Name`.
    pub name: Option<String>,
    /// `rsp:InputStreams`, e.g. `stdin pr`.
    pub input_streams: String,
    /// `rsp:OutputStreams`, e.g. `stdout`.
    pub output_streams: String,
    /// `rsp:IdleTimeOut` (MS-WSMV 2.2.4.37): after this long without a request the server deletes
    /// the shell (MS-WSMV 3.1.5.3).
    pub idle_timeout: Option<Duration>,
    /// `rsp:Lifetime` (WinRS).
    pub lifetime: Option<Duration>,
    /// `rsp:WorkingDirectory` (WinRS).
    pub working_directory: Option<String>,
    /// `rsp:Environment` variables (WinRS).
    pub environment: Vec<(String, String)>,
    /// `rsp:BufferMode`: what the server does with output while the shell is disconnected; a
    /// Disconnect can override it (MS-WSMV 2.2.4.15).
    pub buffer_mode: Option<BufferMode>,
    /// `creationXml`: the runspace pool's SESSION_CAPABILITY and INIT_RUNSPACEPOOL fragments.
    pub creation_xml: Option<Vec<u8>>,
}

/// A request envelope. The `to_bytes` of it is what the transport posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `wsa:Action`.
    pub action: String,
    /// `wsa:To`: the endpoint URL (`http://host:5985/wsman`).
    pub to: String,
    /// `wsman:ResourceURI`.
    pub resource_uri: String,
    /// `wsa:MessageID`, written as `uuid:<GUID>`; the response's `wsa:RelatesTo` names it.
    pub message_id: Uuid,
    /// `wsmv:SessionId` (MS-WSMV 3.1.4.1.37): one id for all requests of a client session. MS-PSRP
    /// 3.1.4.9 requires it on every message for Disconnect and Reconnect to work: the server
    /// tells client sessions apart by it, and a Reconnect must carry the one of the session that
    /// disconnected (3.1.4.10.2).
    pub session_id: Option<Uuid>,
    /// `wsman:MaxEnvelopeSize` in bytes (MS-WSMV 3.1.4.1.7).
    pub max_envelope_size: u32,
    /// `wsman:OperationTimeout` (MS-WSMV 3.1.4.1.6).
    pub operation_timeout: Duration,
    /// `wsman:Locale` (MS-WSMV 3.1.4.1.8), e.g. `en-US`.
    pub locale: Option<String>,
    /// `wsmv:DataLocale` (MS-WSMV 3.1.4.1.9).
    pub data_locale: Option<String>,
    /// `wsman:SelectorSet`.
    pub selectors: Vec<Selector>,
    /// `wsman:OptionSet`.
    pub options: Vec<WsOption>,
    /// `wsmv:OperationID` and `wsmv:SequenceID` of robust connection support.
    pub operation_id: Option<OperationId>,
    pub body: Body,
}

fn upper(id: Uuid) -> String {
    format!("{id:X}")
}

fn uuid_uri(id: Uuid) -> String {
    format!("uuid:{}", upper(id))
}

fn bool_text(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

impl Envelope {
    /// How many payload bytes (PSRP fragments, before base64) still fit into this envelope under
    /// its `MaxEnvelopeSize` (MS-WSMV 3.1.4.1.7): build the request with an empty payload, ask,
    /// and fragment to at most that (MS-PSRP 3.1.5.1.1: as many fragments per message as fit).
    /// Base64 takes 4 bytes for every 3; the HTTP layer's encryption is outside the envelope.
    pub fn payload_capacity(&self) -> usize {
        let used = self.to_bytes().len();
        let room = (self.max_envelope_size as usize).saturating_sub(used);
        room / 4 * 3
    }

    /// The same request sent again after a network failure (MS-WSMV 3.1.4.1.39, example in
    /// 4.11.3): same MessageID, same OperationID with `mustUnderstand="true"`, so that a server
    /// with robust connection support answers from its cache. `None` when the request carried no
    /// OperationID (then there is no cache to ask).
    pub fn retransmission(&self) -> Option<Envelope> {
        let op = self.operation_id?;
        Some(Envelope {
            operation_id: Some(op.retransmit()),
            ..self.clone()
        })
    }

    /// The envelope's XML (UTF-8, no declaration).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = XmlWriter::new();
        w.start(
            "s:Envelope",
            &[
                ("xmlns:s", SOAP),
                ("xmlns:wsa", ADDRESSING),
                ("xmlns:wsman", WSMAN),
                ("xmlns:wsmv", WSMV),
                ("xmlns:rsp", super::namespaces::SHELL),
                ("xmlns:wsen", super::namespaces::ENUMERATION),
            ],
        );
        w.start("s:Header", &[]);
        w.element("wsa:Action", &[("s:mustUnderstand", "true")], &self.action);
        if let Some(locale) = &self.data_locale {
            w.empty(
                "wsmv:DataLocale",
                &[("s:mustUnderstand", "false"), ("xml:lang", locale)],
            );
        }
        if let Some(locale) = &self.locale {
            w.empty(
                "wsman:Locale",
                &[("s:mustUnderstand", "false"), ("xml:lang", locale)],
            );
        }
        w.element(
            "wsman:MaxEnvelopeSize",
            &[("s:mustUnderstand", "true")],
            &self.max_envelope_size.to_string(),
        );
        w.element("wsa:MessageID", &[], &uuid_uri(self.message_id));
        w.element(
            "wsman:OperationTimeout",
            &[],
            &duration::format(self.operation_timeout),
        );
        w.start("wsa:ReplyTo", &[]);
        w.element("wsa:Address", &[("s:mustUnderstand", "true")], ANONYMOUS);
        w.end("wsa:ReplyTo");
        w.element(
            "wsman:ResourceURI",
            &[("s:mustUnderstand", "true")],
            &self.resource_uri,
        );
        if let Some(session_id) = self.session_id {
            w.element(
                "wsmv:SessionId",
                &[("s:mustUnderstand", "false")],
                &uuid_uri(session_id),
            );
        }
        w.element("wsa:To", &[], &self.to);
        if let Some(op) = self.operation_id {
            w.element(
                "wsmv:OperationID",
                &[(
                    "s:mustUnderstand",
                    if op.retransmission { "true" } else { "false" },
                )],
                &uuid_uri(op.id),
            );
            w.element(
                "wsmv:SequenceId",
                &[("s:mustUnderstand", "false")],
                &op.sequence_id.to_string(),
            );
        }
        if !self.options.is_empty() {
            w.start("wsman:OptionSet", &[("s:mustUnderstand", "true")]);
            for option in &self.options {
                match option.must_comply {
                    Some(mc) => w.element(
                        "wsman:Option",
                        &[
                            ("MustComply", if mc { "true" } else { "false" }),
                            ("Name", &option.name),
                        ],
                        &option.value,
                    ),
                    None => w.element("wsman:Option", &[("Name", &option.name)], &option.value),
                }
            }
            w.end("wsman:OptionSet");
        }
        if !self.selectors.is_empty() {
            write_selectors(&mut w, &self.selectors);
        }
        w.end("s:Header");
        if self.body == Body::Empty {
            w.empty("s:Body", &[]);
        } else {
            w.start("s:Body", &[]);
            self.write_body(&mut w);
            w.end("s:Body");
        }
        w.end("s:Envelope");
        w.finish()
    }

    fn write_body(&self, w: &mut XmlWriter) {
        match &self.body {
            Body::Empty => {}
            Body::CreateShell(shell) => {
                let shell_id = shell.shell_id.map(upper);
                match &shell_id {
                    Some(id) => w.start("rsp:Shell", &[("ShellId", id)]),
                    None => w.start("rsp:Shell", &[]),
                }
                // The element order of MS-WSMV 2.2.4.37's sequence (the ShellId is an attribute,
                // as PowerShell and pypsrp send it).
                if let Some(name) = &shell.name {
                    w.element("rsp:Name", &[], name);
                }
                if !shell.environment.is_empty() {
                    w.start("rsp:Environment", &[]);
                    for (name, value) in &shell.environment {
                        w.element("rsp:Variable", &[("Name", name)], value);
                    }
                    w.end("rsp:Environment");
                }
                if let Some(dir) = &shell.working_directory {
                    w.element("rsp:WorkingDirectory", &[], dir);
                }
                if let Some(t) = shell.lifetime {
                    w.element("rsp:Lifetime", &[], &duration::format(t));
                }
                if let Some(t) = shell.idle_timeout {
                    w.element("rsp:IdleTimeOut", &[], &duration::format(t));
                }
                w.element("rsp:InputStreams", &[], &shell.input_streams);
                w.element("rsp:OutputStreams", &[], &shell.output_streams);
                if let Some(mode) = shell.buffer_mode {
                    w.element("rsp:BufferMode", &[], mode.as_str());
                }
                if let Some(data) = &shell.creation_xml {
                    w.element_full(
                        "creationXml",
                        &[("xmlns", super::namespaces::POWERSHELL)],
                        &BASE64.encode(data),
                    );
                }
                w.end("rsp:Shell");
            }
            Body::CommandLine {
                command_id,
                command,
                arguments,
            } => {
                let id = command_id.map(upper);
                match &id {
                    Some(id) => w.start("rsp:CommandLine", &[("CommandId", id)]),
                    None => w.start("rsp:CommandLine", &[]),
                }
                w.element("rsp:Command", &[], command);
                for argument in arguments {
                    w.element_full("rsp:Arguments", &[], argument);
                }
                w.end("rsp:CommandLine");
            }
            Body::Send(streams) => {
                w.start("rsp:Send", &[]);
                for stream in streams {
                    let id = stream.command_id.map(upper);
                    let mut attrs: Vec<(&str, &str)> = vec![("Name", &stream.name)];
                    if let Some(id) = &id {
                        attrs.push(("CommandId", id));
                    }
                    if let Some(end) = stream.end {
                        attrs.push(("End", bool_text(end)));
                    }
                    w.element_full("rsp:Stream", &attrs, &BASE64.encode(&stream.data));
                }
                w.end("rsp:Send");
            }
            Body::Receive {
                streams,
                command_id,
                sequence_id,
            } => {
                let sequence = sequence_id.map(|n| n.to_string());
                match &sequence {
                    Some(n) => w.start("rsp:Receive", &[("SequenceId", n)]),
                    None => w.start("rsp:Receive", &[]),
                }
                let id = command_id.map(upper);
                match &id {
                    Some(id) => w.element("rsp:DesiredStream", &[("CommandId", id)], streams),
                    None => w.element("rsp:DesiredStream", &[], streams),
                }
                w.end("rsp:Receive");
            }
            Body::Signal { command_id, code } => {
                let id = command_id.map(upper);
                match &id {
                    Some(id) => w.start("rsp:Signal", &[("CommandId", id)]),
                    None => w.start("rsp:Signal", &[]),
                }
                w.element("rsp:Code", &[], code);
                w.end("rsp:Signal");
            }
            Body::Disconnect {
                buffer_mode,
                idle_timeout,
            } => {
                if buffer_mode.is_none() && idle_timeout.is_none() {
                    w.empty("rsp:Disconnect", &[]);
                } else {
                    // MS-WSMV 2.2.4.15: a sequence of IdleTimeOut, then BufferMode.
                    w.start("rsp:Disconnect", &[]);
                    if let Some(t) = idle_timeout {
                        w.element("rsp:IdleTimeOut", &[], &duration::format(*t));
                    }
                    if let Some(mode) = buffer_mode {
                        w.element("rsp:BufferMode", &[], mode.as_str());
                    }
                    w.end("rsp:Disconnect");
                }
            }
            Body::Connect {
                command_id,
                connect_xml,
            } => {
                let id = command_id.map(upper);
                let attrs: Vec<(&str, &str)> = id
                    .as_deref()
                    .map(|id| vec![("CommandId", id)])
                    .unwrap_or_default();
                match connect_xml {
                    Some(data) => {
                        w.start("rsp:Connect", &attrs);
                        w.element_full(
                            "connectXml",
                            &[("xmlns", super::namespaces::POWERSHELL)],
                            &BASE64.encode(data),
                        );
                        w.end("rsp:Connect");
                    }
                    None => w.empty("rsp:Connect", &attrs),
                }
            }
            Body::Enumerate {
                max_elements,
                shell_filter,
            } => {
                w.start("wsen:Enumerate", &[]);
                w.empty("wsman:OptimizeEnumeration", &[]);
                w.element("wsman:MaxElements", &[], &max_elements.to_string());
                if let Some(shell_id) = shell_filter {
                    w.start("wsman:Filter", &[("Dialect", super::namespaces::SELECTOR_FILTER)]);
                    write_selectors(
                        w,
                        &[Selector {
                            name: "ShellId".into(),
                            value: upper(*shell_id),
                        }],
                    );
                    w.end("wsman:Filter");
                }
                w.end("wsen:Enumerate");
            }
            Body::Pull {
                context,
                max_elements,
            } => {
                w.start("wsen:Pull", &[]);
                w.element("wsen:EnumerationContext", &[], context);
                w.element("wsen:MaxElements", &[], &max_elements.to_string());
                w.end("wsen:Pull");
            }
            Body::Acknowledge {
                last_sequence_id_received,
            } => {
                w.element(
                    "wsmv:LastSequenceIdReceived",
                    &[],
                    &last_sequence_id_received.to_string(),
                );
            }
        }
    }
}

fn write_selectors(w: &mut XmlWriter, selectors: &[Selector]) {
    w.start("wsman:SelectorSet", &[]);
    for selector in selectors {
        w.element("wsman:Selector", &[("Name", &selector.name)], &selector.value);
    }
    w.end("wsman:SelectorSet");
}

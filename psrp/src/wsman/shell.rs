//! The operations on shells: a sans-IO [`WsmanClient`] that builds request envelopes, and the
//! parsers of their responses.
//!
//! PowerShell's use of them is MS-PSRP 3.1.5.3 (rules for the WS-MAN messages) and 3.1.4 (the
//! procedures), MS-WSMV 2.2.4 for their bodies: Create carries the pool's opening fragments in
//! `creationXml` (MS-PSRP 3.1.5.3.1), Command one pipeline's CREATE_PIPELINE (3.1.5.3.3), Send
//! and Receive the fragments of both directions (3.1.5.3.5, 3.1.5.3.7), Signal
//! `powershell/signal/crtl_c` stops a pipeline (3.1.5.3.9), Delete closes the pool (3.1.5.3.11),
//! Disconnect keeps the pool on the server (3.1.5.3.16, 3.1.4.9), Reconnect takes it back in the
//! same client session (3.1.5.3.18, 3.1.4.10.2), Enumerate finds pools and pipelines
//! (3.1.4.10.1), Connect takes a pool over from a new client session and the per-command Connect
//! one of its pipelines (3.1.5.3.14, 3.1.4.10.3).

use std::time::Duration;

use uuid::Uuid;

use super::enumerate::ShellInfo;
use super::envelope::{
    Body, BufferMode, CreateShellBody, Envelope, OperationId, Selector, SendStream, WsOption,
};
use super::error::WsmanError;
use super::namespaces::{CONFIG, POWERSHELL, SHELL, TRANSFER, action, resource, signal};
use super::response::{Response, decode_base64, parse_uuid, read_response};

/// The PSRP protocol version a PowerShell client announces on Create and Connect (the
/// `protocolversion` option with MustComply, MS-PSRP 3.1.5.3.1 and 3.1.5.3.14).
pub const PROTOCOL_VERSION: &str = "2.3";
/// Windows' default `MaxEnvelopeSize` (150 KiB, `MaxEnvelopeSizekb` 150) and what a client sends
/// until it knows the server's (pypsrp and PowerShell start with it).
pub const DEFAULT_MAX_ENVELOPE_SIZE: u32 = 153_600;
/// `wsman:MaxElements` of an Enumerate, as PowerShell sends it.
pub const DEFAULT_MAX_ELEMENTS: u32 = 32_000;

/// A signal to a shell or a command (MS-WSMV 2.2.4.38).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Stop a PowerShell pipeline: `powershell/signal/crtl_c`, the value MS-PSRP 3.1.5.3.9 requires
    /// (and PowerShell sends).
    PsCtrlC,
    /// Release a finished command's state on the server.
    Terminate,
    /// WinRS Ctrl+C.
    CtrlC,
    /// Any other code, as given.
    Code(String),
}

impl Signal {
    pub fn code(&self) -> &str {
        match self {
            Signal::PsCtrlC => signal::PS_CTRL_C,
            Signal::Terminate => signal::TERMINATE,
            Signal::CtrlC => signal::CTRL_C,
            Signal::Code(code) => code,
        }
    }
}

/// What a PowerShell Create needs beyond the client's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePowerShell {
    /// The shell id, chosen by the client: the runspace pool's id.
    pub shell_id: Uuid,
    /// SESSION_CAPABILITY and INIT_RUNSPACEPOOL, fragmented.
    pub creation_xml: Vec<u8>,
    /// `rsp:IdleTimeOut`; the server's default (2 h) when `None`.
    pub idle_timeout: Option<Duration>,
    /// `rsp:Name`.
    pub name: Option<String>,
    /// The `WINRS_NOPROFILE` option: do not load the user's profile.
    pub no_profile: bool,
    /// `rsp:BufferMode` of the shell, until a Disconnect says otherwise.
    pub buffer_mode: Option<BufferMode>,
    /// `protocolversion`; [`PROTOCOL_VERSION`] when `None`.
    pub protocol_version: Option<String>,
}

impl CreatePowerShell {
    pub fn new(shell_id: Uuid, creation_xml: Vec<u8>) -> Self {
        CreatePowerShell {
            shell_id,
            creation_xml,
            idle_timeout: None,
            name: None,
            no_profile: false,
            buffer_mode: None,
            protocol_version: None,
        }
    }
}

/// The settings every request of one client session shares, and the builders of its requests.
/// No IO: each builder returns an [`Envelope`] with a fresh MessageID; the caller may set its
/// `operation_id` (robust connections) and posts `to_bytes()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsmanClient {
    /// `wsa:To`: `http(s)://host:port/wsman`.
    pub endpoint: String,
    /// The resource URI of the shells this client makes: `resource::powershell(configurationName)`.
    pub resource_uri: String,
    /// `wsmv:SessionId`: kept for the client session and sent on every request, also by a new
    /// process that takes the session over (so it is an input, stored beside the shell id).
    pub session_id: Uuid,
    pub max_envelope_size: u32,
    pub operation_timeout: Duration,
    pub locale: String,
    pub data_locale: String,
}

impl WsmanClient {
    /// A client for a PowerShell session configuration (`Microsoft.PowerShell`, a JEA endpoint).
    pub fn powershell(endpoint: impl Into<String>, configuration_name: &str, session_id: Uuid) -> Self {
        WsmanClient {
            endpoint: endpoint.into(),
            resource_uri: resource::powershell(configuration_name),
            session_id,
            max_envelope_size: DEFAULT_MAX_ENVELOPE_SIZE,
            operation_timeout: Duration::from_secs(20),
            locale: "en-US".into(),
            data_locale: "en-US".into(),
        }
    }

    /// An envelope with this client's headers.
    pub fn envelope(&self, action: &str, resource_uri: &str, body: Body) -> Envelope {
        Envelope {
            action: action.to_string(),
            to: self.endpoint.clone(),
            resource_uri: resource_uri.to_string(),
            message_id: Uuid::new_v4(),
            session_id: Some(self.session_id),
            max_envelope_size: self.max_envelope_size,
            operation_timeout: self.operation_timeout,
            locale: Some(self.locale.clone()),
            data_locale: Some(self.data_locale.clone()),
            selectors: Vec::new(),
            options: Vec::new(),
            operation_id: None,
            body,
        }
    }

    fn shell_envelope(&self, action: &str, shell_id: Uuid, body: Body) -> Envelope {
        let mut e = self.envelope(action, &self.resource_uri, body);
        e.selectors = vec![shell_selector(shell_id)];
        e
    }

    /// Create of a PowerShell shell (MS-PSRP 3.1.5.3.1): `stdin pr` in, `stdout` out.
    pub fn create(&self, create: &CreatePowerShell) -> Envelope {
        let mut e = self.envelope(
            action::CREATE,
            &self.resource_uri,
            Body::CreateShell(CreateShellBody {
                shell_id: Some(create.shell_id),
                name: create.name.clone(),
                input_streams: "stdin pr".into(),
                output_streams: "stdout".into(),
                idle_timeout: create.idle_timeout,
                buffer_mode: create.buffer_mode,
                creation_xml: Some(create.creation_xml.clone()),
                ..CreateShellBody::default()
            }),
        );
        e.options.push(WsOption::must_comply(
            "protocolversion",
            create.protocol_version.as_deref().unwrap_or(PROTOCOL_VERSION),
        ));
        if create.no_profile {
            e.options.push(WsOption::must_comply("WINRS_NOPROFILE", "TRUE"));
        }
        e
    }

    /// Create of a shell with a body of the caller's (WinRS `cmd` shells), and options.
    pub fn create_shell(&self, body: CreateShellBody, options: Vec<WsOption>) -> Envelope {
        let mut e = self.envelope(action::CREATE, &self.resource_uri, Body::CreateShell(body));
        e.options = options;
        e
    }

    /// Command: creates pipeline `command_id` (the PowerShell pipeline id) from its
    /// CREATE_PIPELINE fragments (MS-PSRP 3.1.5.3.3: an empty Command, base64 Arguments).
    pub fn command(&self, shell_id: Uuid, command_id: Uuid, create_pipeline: &[u8]) -> Envelope {
        use base64::Engine as _;
        self.command_line(
            shell_id,
            Some(command_id),
            "",
            vec![base64::engine::general_purpose::STANDARD.encode(create_pipeline)],
        )
    }

    /// Command with a command line of the caller's (WinRS), `WINRS_SKIP_CMD_SHELL` false.
    pub fn command_line(
        &self,
        shell_id: Uuid,
        command_id: Option<Uuid>,
        command: &str,
        arguments: Vec<String>,
    ) -> Envelope {
        let mut e = self.shell_envelope(
            action::COMMAND,
            shell_id,
            Body::CommandLine {
                command_id,
                command: command.to_string(),
                arguments,
            },
        );
        e.options.push(WsOption::new("WINRS_SKIP_CMD_SHELL", "False"));
        e
    }

    /// Send of data on `stdin` (or answers to host calls on `pr`) to the pool (`command_id`
    /// `None`) or to a pipeline.
    pub fn send(&self, shell_id: Uuid, stream: &str, command_id: Option<Uuid>, data: &[u8]) -> Envelope {
        self.send_streams(
            shell_id,
            vec![SendStream {
                name: stream.to_string(),
                command_id,
                end: None,
                data: data.to_vec(),
            }],
        )
    }

    /// The largest PSRP payload one Send to a pipeline can carry under this client's
    /// `max_envelope_size`: the fragment size to give the runspace pool (`PoolOptions`), so that
    /// every fragment fits a Send (a Create or Command carries a little less; ask their envelope's
    /// [`Envelope::payload_capacity`]).
    pub fn max_send_payload(&self, shell_id: Uuid) -> usize {
        self.send(shell_id, "stdin", Some(Uuid::max()), &[])
            .payload_capacity()
    }

    /// Send of several streams in one request.
    pub fn send_streams(&self, shell_id: Uuid, streams: Vec<SendStream>) -> Envelope {
        self.shell_envelope(action::SEND, shell_id, Body::Send(streams))
    }

    /// Receive of `stdout`, of the pool (`command_id` `None`) or of one pipeline, with
    /// `WSMAN_CMDSHELL_OPTION_KEEPALIVE` as PowerShell sends it. See [`super::receive`] for how
    /// received output is acknowledged.
    pub fn receive(&self, shell_id: Uuid, command_id: Option<Uuid>) -> Envelope {
        self.receive_streams(shell_id, command_id, "stdout")
    }

    /// Receive of the given space-separated streams (WinRS: `stdout stderr`).
    pub fn receive_streams(&self, shell_id: Uuid, command_id: Option<Uuid>, streams: &str) -> Envelope {
        let mut e = self.shell_envelope(
            action::RECEIVE,
            shell_id,
            Body::Receive {
                streams: streams.to_string(),
                command_id,
                sequence_id: None,
            },
        );
        e.options
            .push(WsOption::new("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "True"));
        e
    }

    /// Receive numbered as Windows' own client numbers them: `rsp:Receive SequenceId="n"`
    /// (MS-WSMV 4.8.4). See [`super::receive`] for what the number is and is not.
    pub fn receive_numbered(&self, shell_id: Uuid, command_id: Option<Uuid>, sequence_id: u64) -> Envelope {
        let mut e = self.receive(shell_id, command_id);
        if let Body::Receive { sequence_id: n, .. } = &mut e.body {
            *n = Some(sequence_id);
        }
        e
    }

    /// Signal to a command (or the shell).
    pub fn signal(&self, shell_id: Uuid, command_id: Option<Uuid>, signal: &Signal) -> Envelope {
        self.shell_envelope(
            action::SIGNAL,
            shell_id,
            Body::Signal {
                command_id,
                code: signal.code().to_string(),
            },
        )
    }

    /// Delete of the shell: closes the runspace pool and frees the remote process.
    pub fn delete(&self, shell_id: Uuid) -> Envelope {
        self.shell_envelope(action::DELETE, shell_id, Body::Empty)
    }

    /// Disconnect (MS-PSRP 3.1.5.3.16, 3.1.4.9): the server keeps the shell, its running
    /// pipelines and their output (buffered by `buffer_mode`) for `idle_timeout`. Windows refuses
    /// less than 60 s ([`super::Fault::InvalidIdleTimeout`]). Wait for outstanding Sends first.
    pub fn disconnect(
        &self,
        shell_id: Uuid,
        buffer_mode: Option<BufferMode>,
        idle_timeout: Option<Duration>,
    ) -> Envelope {
        self.shell_envelope(
            action::DISCONNECT,
            shell_id,
            Body::Disconnect {
                buffer_mode,
                idle_timeout,
            },
        )
    }

    /// Reconnect (MS-PSRP 3.1.5.3.18, 3.1.4.10.2): the client session that disconnected (same
    /// `session_id`) takes its shell back, then sends Receives again.
    pub fn reconnect(&self, shell_id: Uuid) -> Envelope {
        self.shell_envelope(action::RECONNECT, shell_id, Body::Empty)
    }

    /// Connect (MS-PSRP 3.1.5.3.14, 3.1.4.10.3): a new client session connects to a disconnected
    /// shell, sending SESSION_CAPABILITY and CONNECT_RUNSPACEPOOL in `connectXml`.
    pub fn connect(&self, shell_id: Uuid, connect_xml: &[u8]) -> Envelope {
        let mut e = self.shell_envelope(
            action::CONNECT,
            shell_id,
            Body::Connect {
                command_id: None,
                connect_xml: Some(connect_xml.to_vec()),
            },
        );
        e.options
            .push(WsOption::must_comply("protocolversion", PROTOCOL_VERSION));
        e
    }

    /// Connect to a pipeline of a connected-to shell (MS-PSRP 3.1.5.3.14, 3.1.4.10.3;
    /// Receive-PSSession): Receives of that command then get its buffered output.
    pub fn connect_command(&self, shell_id: Uuid, command_id: Uuid) -> Envelope {
        self.shell_envelope(
            action::CONNECT,
            shell_id,
            Body::Connect {
                command_id: Some(command_id),
                connect_xml: None,
            },
        )
    }

    /// Get of one shell's properties (its State, for a liveness check).
    pub fn get_shell(&self, shell_id: Uuid) -> Envelope {
        let mut e = self.envelope(action::GET, resource::SHELLS, Body::Empty);
        e.selectors = vec![shell_selector(shell_id)];
        e
    }

    /// Get of the service configuration, to learn its `MaxEnvelopeSizekb`.
    pub fn get_config(&self) -> Envelope {
        self.envelope(action::GET, resource::CONFIG, Body::Empty)
    }

    /// Enumerate of the user's shells on the host (Get-PSSession -ComputerName; MS-PSRP
    /// 3.1.4.10.1, MS-WSMV 3.1.4.8.2).
    pub fn enumerate_shells(&self) -> Envelope {
        self.envelope(
            action::ENUMERATE,
            resource::SHELLS,
            Body::Enumerate {
                max_elements: DEFAULT_MAX_ELEMENTS,
                shell_filter: None,
            },
        )
    }

    /// Enumerate of the commands (pipelines) of one shell.
    pub fn enumerate_commands(&self, shell_id: Uuid) -> Envelope {
        self.envelope(
            action::ENUMERATE,
            resource::COMMANDS,
            Body::Enumerate {
                max_elements: DEFAULT_MAX_ELEMENTS,
                shell_filter: Some(shell_id),
            },
        )
    }

    /// Pull of the next page of an enumeration of `resource_uri`.
    pub fn pull(&self, resource_uri: &str, context: &str) -> Envelope {
        self.envelope(
            action::PULL,
            resource_uri,
            Body::Pull {
                context: context.to_string(),
                max_elements: DEFAULT_MAX_ELEMENTS,
            },
        )
    }

    /// Acknowledge (MS-WSMV 3.1.4.18) of the robust-connection responses of operation
    /// `operation_id` up to `last_sequence_id_received`, once their content is kept: the server
    /// then deletes them from its cache. See [`super::receive`].
    pub fn acknowledge(&self, operation_id: Uuid, last_sequence_id_received: u64) -> Envelope {
        let mut e = self.envelope(
            action::ACKNOWLEDGE,
            resource::ROBUST_CONNECTION,
            Body::Acknowledge {
                last_sequence_id_received,
            },
        );
        e.operation_id = Some(OperationId::new(operation_id));
        e
    }
}

/// The `ShellId` selector.
pub fn shell_selector(shell_id: Uuid) -> Selector {
    Selector {
        name: "ShellId".into(),
        value: format!("{shell_id:X}"),
    }
}

/// Parses a CreateResponse: the shell as created (Windows returns its `rsp:Shell`; servers that
/// only return `wst:ResourceCreated` give the ShellId selector of its reference parameters).
pub fn parse_create_response(bytes: &[u8]) -> Result<Response<ShellInfo>, WsmanError> {
    let (header, body) = read_response(bytes, action::CREATE_RESPONSE)?;
    let shell = match body.child(SHELL, "Shell") {
        Some(shell) => ShellInfo::from_element(shell)?,
        None => {
            let created = body
                .child(TRANSFER, "ResourceCreated")
                .ok_or(WsmanError::Missing("rsp:Shell or wst:ResourceCreated"))?;
            let id = created
                .descendant(super::namespaces::WSMAN, "Selector")
                .filter(|s| s.attr("Name") == Some("ShellId"))
                .map(|s| s.text.trim())
                .ok_or(WsmanError::Missing("the ShellId selector"))?;
            let shell_id = parse_uuid(id).ok_or_else(|| WsmanError::invalid("ShellId", id))?;
            ShellInfo::with_id(shell_id)
        }
    };
    Ok(Response { header, body: shell })
}

/// Parses a GetResponse of a shell.
pub fn parse_get_shell_response(bytes: &[u8]) -> Result<Response<ShellInfo>, WsmanError> {
    let (header, body) = read_response(bytes, action::GET_RESPONSE)?;
    let shell = body
        .child(SHELL, "Shell")
        .ok_or(WsmanError::Missing("rsp:Shell"))?;
    Ok(Response {
        header,
        body: ShellInfo::from_element(shell)?,
    })
}

/// Parses a GetResponse of the configuration: `MaxEnvelopeSizekb` in bytes.
pub fn parse_config_max_envelope_size(bytes: &[u8]) -> Result<Response<u32>, WsmanError> {
    let (header, body) = read_response(bytes, action::GET_RESPONSE)?;
    let kb = body
        .descendant(CONFIG, "MaxEnvelopeSizekb")
        .map(|e| e.text.trim())
        .ok_or(WsmanError::Missing("cfg:MaxEnvelopeSizekb"))?;
    let size = kb
        .parse::<u32>()
        .ok()
        .and_then(|kb| kb.checked_mul(1024))
        .ok_or_else(|| WsmanError::invalid("cfg:MaxEnvelopeSizekb", kb))?;
    Ok(Response { header, body: size })
}

/// Parses a CommandResponse: the command id (the one the client chose, for PowerShell).
pub fn parse_command_response(bytes: &[u8]) -> Result<Response<Uuid>, WsmanError> {
    let (header, body) = read_response(bytes, action::COMMAND_RESPONSE)?;
    let id = body
        .child(SHELL, "CommandResponse")
        .and_then(|c| c.child_text(SHELL, "CommandId"))
        .ok_or(WsmanError::Missing("rsp:CommandResponse/rsp:CommandId"))?;
    let id = parse_uuid(id).ok_or_else(|| WsmanError::invalid("rsp:CommandId", id))?;
    Ok(Response { header, body: id })
}

/// What a ConnectResponse carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectResponse {
    /// `connectResponseXml`: the server's SESSION_CAPABILITY and RUNSPACEPOOL_INIT_DATA
    /// fragments (MS-PSRP 3.1.5.3.15); `None` for the per-command Connect.
    pub connect_response_xml: Option<Vec<u8>>,
    pub input_streams: Option<String>,
    pub output_streams: Option<String>,
}

/// Parses a ConnectResponse.
pub fn parse_connect_response(bytes: &[u8]) -> Result<Response<ConnectResponse>, WsmanError> {
    let (header, body) = read_response(bytes, action::CONNECT_RESPONSE)?;
    let cr = body
        .child(SHELL, "ConnectResponse")
        .ok_or(WsmanError::Missing("rsp:ConnectResponse"))?;
    let connect_response_xml = match cr.child(POWERSHELL, "connectResponseXml") {
        Some(e) => Some(decode_base64("connectResponseXml", &e.text)?),
        None => None,
    };
    Ok(Response {
        header,
        body: ConnectResponse {
            connect_response_xml,
            input_streams: cr.child_text(SHELL, "InputStreams").map(str::to_string),
            output_streams: cr.child_text(SHELL, "OutputStreams").map(str::to_string),
        },
    })
}

/// Parses a server's Acknowledge (MS-WSMV 3.1.4.18; the example in 4.11.3): the sequence number
/// of the last message of the operation it received from the client.
pub fn parse_acknowledge(bytes: &[u8]) -> Result<Response<u64>, WsmanError> {
    let (header, body) = read_response(bytes, action::ACKNOWLEDGE)?;
    let last = body
        .descendant(super::namespaces::WSMV, "LastSequenceIdReceived")
        .map(|e| e.text.trim())
        .ok_or(WsmanError::Missing("wsmv:LastSequenceIdReceived"))?;
    let last = last
        .parse()
        .map_err(|_| WsmanError::invalid("wsmv:LastSequenceIdReceived", last))?;
    Ok(Response { header, body: last })
}

/// Parses the answer to a request whose response has no content of interest (Send, Signal,
/// Delete, Disconnect, Reconnect, Acknowledge): it must be `expected_action` and not a fault.
pub fn parse_empty_response(bytes: &[u8], expected_action: &'static str) -> Result<Response<()>, WsmanError> {
    let (header, _) = read_response(bytes, expected_action)?;
    Ok(Response { header, body: () })
}

//! Typed bodies of the PSRP messages (MS-PSRP 2.2.2.x): what the client writes, and what it reads
//! out of the server's. Bodies are CLIXML values ([`PsValue`]); this module knows their property
//! names and types, nothing about fragments or transports.

use std::sync::Arc;

use thiserror::Error;

use crate::{
    clixml::{ListKind, ObjContent, PsObject, PsValue, PsVersion},
    state::{PipelineState, RunspacePoolState},
};

/// The protocol version this client speaks (PowerShell 5.1 and 7 speak 2.3).
pub const PROTOCOL_VERSION: PsVersion = PsVersion::new(2, 3);

/// A server message whose body is not what MS-PSRP says it is.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("{message}: property {property} is missing or has the wrong type")]
    Property {
        message: &'static str,
        property: &'static str,
    },
    #[error("{message}: {value} is not a known state")]
    UnknownState { message: &'static str, value: i64 },
}

fn property<'v>(
    value: &'v PsValue,
    message: &'static str,
    name: &'static str,
) -> Result<&'v PsValue, BodyError> {
    value.get(name).ok_or(BodyError::Property {
        message,
        property: name,
    })
}

fn int_property(value: &PsValue, message: &'static str, name: &'static str) -> Result<i64, BodyError> {
    property(value, message, name)?
        .as_i64()
        .ok_or(BodyError::Property {
            message,
            property: name,
        })
}

/// An optional property: absent and `$null` are the same.
fn optional(value: &PsValue, name: &str) -> Option<PsValue> {
    value.get(name).filter(|v| !v.is_nil()).cloned()
}

/// A .NET enum value as PowerShell serializes it: the number, its type names and its name.
fn enum_value(number: i32, type_name: &str, name: &str) -> PsValue {
    PsObject {
        type_names: vec![
            type_name.to_owned(),
            "System.Enum".to_owned(),
            "System.ValueType".to_owned(),
            "System.Object".to_owned(),
        ],
        to_string: Some(name.to_owned()),
        content: ObjContent::Value(PsValue::I32(number)),
        ..PsObject::default()
    }
    .into()
}

/// A HostInfo saying "no host": the server must not call host methods it cannot get answered. A
/// non-interactive client still answers the calls that arrive (see `host`), but tells the truth.
fn no_host() -> PsValue {
    PsObject::custom([
        ("_isHostNull", true),
        ("_isHostUINull", true),
        ("_isHostRawUINull", true),
        ("_useRunspaceHost", true),
    ])
    .into()
}

fn apartment_state_unknown() -> PsValue {
    enum_value(2, "System.Threading.ApartmentState", "Unknown")
}

/// SESSION_CAPABILITY (2.2.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCapability {
    pub ps_version: PsVersion,
    pub protocol_version: PsVersion,
    pub serialization_version: PsVersion,
}

impl SessionCapability {
    /// What this client announces.
    pub fn client() -> Self {
        SessionCapability {
            ps_version: PsVersion::new(2, 0),
            protocol_version: PROTOCOL_VERSION,
            serialization_version: PsVersion::parse("1.1.0.1").unwrap_or(PsVersion::new(1, 1)),
        }
    }

    pub fn to_value(&self) -> PsValue {
        PsObject::custom([
            ("PSVersion", PsValue::Version(self.ps_version)),
            ("protocolversion", PsValue::Version(self.protocol_version)),
            (
                "SerializationVersion",
                PsValue::Version(self.serialization_version),
            ),
        ])
        .into()
    }

    pub fn from_value(value: &PsValue) -> Result<Self, BodyError> {
        const M: &str = "SESSION_CAPABILITY";
        let version = |name| match property(value, M, name)? {
            PsValue::Version(v) => Ok(*v),
            PsValue::Str(s) => PsVersion::parse(s).map_err(|_| BodyError::Property {
                message: M,
                property: name,
            }),
            _ => Err(BodyError::Property {
                message: M,
                property: name,
            }),
        };
        Ok(SessionCapability {
            ps_version: version("PSVersion")?,
            protocol_version: version("protocolversion")?,
            serialization_version: version("SerializationVersion")?,
        })
    }
}

/// INIT_RUNSPACEPOOL (2.2.2.2).
#[derive(Debug, Clone, PartialEq)]
pub struct InitRunspacePool {
    pub min_runspaces: i32,
    pub max_runspaces: i32,
    /// `$PSSenderInfo.ApplicationArguments` on the server (a PSPrimitiveDictionary).
    pub application_arguments: Vec<(String, PsValue)>,
}

impl InitRunspacePool {
    pub fn to_value(&self) -> PsValue {
        PsObject::custom([
            ("MinRunspaces", PsValue::I32(self.min_runspaces)),
            ("MaxRunspaces", PsValue::I32(self.max_runspaces)),
            (
                "PSThreadOptions",
                enum_value(
                    0,
                    "System.Management.Automation.Runspaces.PSThreadOptions",
                    "Default",
                ),
            ),
            ("ApartmentState", apartment_state_unknown()),
            ("HostInfo", no_host()),
            (
                "ApplicationArguments",
                primitive_dictionary(&self.application_arguments),
            ),
        ])
        .into()
    }
}

fn primitive_dictionary(entries: &[(String, PsValue)]) -> PsValue {
    PsObject {
        type_names: vec![
            "System.Management.Automation.PSPrimitiveDictionary".to_owned(),
            "System.Collections.Hashtable".to_owned(),
            "System.Object".to_owned(),
        ],
        content: ObjContent::Dict(
            entries
                .iter()
                .map(|(k, v)| (PsValue::from(k.as_str()), v.clone()))
                .collect(),
        ),
        ..PsObject::default()
    }
    .into()
}

/// CONNECT_RUNSPACEPOOL (2.2.2.29): reattach to a disconnected pool; min/max may stay unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectRunspacePool {
    pub min_runspaces: Option<i32>,
    pub max_runspaces: Option<i32>,
}

impl ConnectRunspacePool {
    pub fn to_value(&self) -> PsValue {
        let mut props = Vec::new();
        if let Some(min) = self.min_runspaces {
            props.push(("MinRunspaces", PsValue::I32(min)));
        }
        if let Some(max) = self.max_runspaces {
            props.push(("MaxRunspaces", PsValue::I32(max)));
        }
        if props.is_empty() {
            // An empty body is a string in PowerShell's own client.
            return PsValue::Str(String::new());
        }
        PsObject::custom(props).into()
    }
}

/// RUNSPACEPOOL_INIT_DATA (2.2.2.30): the pool's runspace limits, after a connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunspacePoolInitData {
    pub min_runspaces: i64,
    pub max_runspaces: i64,
}

impl RunspacePoolInitData {
    pub fn from_value(value: &PsValue) -> Result<Self, BodyError> {
        const M: &str = "RUNSPACEPOOL_INIT_DATA";
        Ok(RunspacePoolInitData {
            min_runspaces: int_property(value, M, "MinRunspaces")?,
            max_runspaces: int_property(value, M, "MaxRunspaces")?,
        })
    }
}

/// SET_MAX_RUNSPACES / SET_MIN_RUNSPACES (2.2.2.6, 2.2.2.7) and GET_AVAILABLE_RUNSPACES (2.2.2.11):
/// a call id the answer (RUNSPACE_AVAILABILITY) carries back.
pub fn set_runspaces(max: bool, count: i32, call_id: i64) -> PsValue {
    let name = if max { "MaxRunspaces" } else { "MinRunspaces" };
    PsObject::custom([(name, PsValue::I32(count)), ("ci", PsValue::I64(call_id))]).into()
}

pub fn get_available_runspaces(call_id: i64) -> PsValue {
    PsObject::custom([("ci", PsValue::I64(call_id))]).into()
}

/// RESET_RUNSPACE_STATE (2.2.2.31).
pub fn reset_runspace_state(call_id: i64) -> PsValue {
    get_available_runspaces(call_id)
}

/// RUNSPACE_AVAILABILITY (2.2.2.8): a bool (set min/max) or a count (available runspaces).
#[derive(Debug, Clone, PartialEq)]
pub struct RunspaceAvailability {
    pub call_id: i64,
    pub response: PsValue,
}

impl RunspaceAvailability {
    pub fn from_value(value: &PsValue) -> Result<Self, BodyError> {
        const M: &str = "RUNSPACE_AVAILABILITY";
        Ok(RunspaceAvailability {
            call_id: int_property(value, M, "ci")?,
            response: property(value, M, "SetMinMaxRunspacesResponse")?.clone(),
        })
    }
}

/// RUNSPACEPOOL_STATE (2.2.2.9).
#[derive(Debug, Clone, PartialEq)]
pub struct RunspacePoolStateMsg {
    pub state: RunspacePoolState,
    /// The ErrorRecord that explains a Broken pool.
    pub error: Option<PsValue>,
}

impl RunspacePoolStateMsg {
    pub fn from_value(value: &PsValue) -> Result<Self, BodyError> {
        const M: &str = "RUNSPACEPOOL_STATE";
        let raw = int_property(value, M, "RunspaceState")?;
        let state = RunspacePoolState::from_wire(raw).ok_or(BodyError::UnknownState {
            message: M,
            value: raw,
        })?;
        Ok(RunspacePoolStateMsg {
            state,
            error: optional(value, "ExceptionAsErrorRecord"),
        })
    }
}

/// PIPELINE_STATE (2.2.2.21).
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineStateMsg {
    pub state: PipelineState,
    /// The ErrorRecord of a Failed (or Stopped) pipeline.
    pub error: Option<PsValue>,
}

impl PipelineStateMsg {
    pub fn from_value(value: &PsValue) -> Result<Self, BodyError> {
        const M: &str = "PIPELINE_STATE";
        let raw = int_property(value, M, "PipelineState")?;
        let state = PipelineState::from_wire(raw).ok_or(BodyError::UnknownState {
            message: M,
            value: raw,
        })?;
        Ok(PipelineStateMsg {
            state,
            error: optional(value, "ExceptionAsErrorRecord"),
        })
    }
}

/// APPLICATION_PRIVATE_DATA (2.2.2.13): the session configuration's private data (a dictionary).
pub fn application_private_data(value: &PsValue) -> Result<PsValue, BodyError> {
    property(value, "APPLICATION_PRIVATE_DATA", "ApplicationPrivateData").cloned()
}

/// One command of a pipeline (2.2.3.12), a script (`AddScript`) or a cmdlet (`AddCommand`).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub text: String,
    pub is_script: bool,
    /// Run in a local scope (`AddScript(script, useLocalScope: true)`). `None`: PowerShell's default,
    /// which dot-sources a script into the session, so its variables persist (the point of a session).
    pub use_local_scope: Option<bool>,
    /// Named (`Some(name)`) and positional (`None`) arguments, in order.
    pub arguments: Vec<(Option<String>, PsValue)>,
}

impl Command {
    pub fn script(text: impl Into<String>) -> Self {
        Command {
            text: text.into(),
            is_script: true,
            use_local_scope: None,
            arguments: Vec::new(),
        }
    }

    pub fn cmdlet(name: impl Into<String>) -> Self {
        Command {
            text: name.into(),
            is_script: false,
            use_local_scope: None,
            arguments: Vec::new(),
        }
    }

    pub fn parameter(mut self, name: impl Into<String>, value: impl Into<PsValue>) -> Self {
        self.arguments.push((Some(name.into()), value.into()));
        self
    }

    pub fn argument(mut self, value: impl Into<PsValue>) -> Self {
        self.arguments.push((None, value.into()));
        self
    }

    fn to_value(&self) -> PsValue {
        let no_merge = || {
            enum_value(
                0,
                "System.Management.Automation.Runspaces.PipelineResultTypes",
                "None",
            )
        };
        let arguments = self
            .arguments
            .iter()
            .map(|(name, value)| {
                PsObject::custom([
                    ("N", name.as_deref().map(PsValue::from).unwrap_or_default()),
                    ("V", value.clone()),
                ])
                .into()
            })
            .collect();
        let mut object = PsObject::custom([
            ("Cmd", PsValue::from(self.text.as_str())),
            ("Args", list(arguments)),
            ("IsScript", PsValue::Bool(self.is_script)),
            (
                "UseLocalScope",
                self.use_local_scope.map(PsValue::Bool).unwrap_or_default(),
            ),
            ("MergeMyResult", no_merge()),
            ("MergeToResult", no_merge()),
            ("MergePreviousResults", no_merge()),
            // Protocol 2.2+: each stream stays on its own (2.2.3.13).
            ("MergeError", no_merge()),
            ("MergeWarning", no_merge()),
            ("MergeVerbose", no_merge()),
            ("MergeDebug", no_merge()),
            ("MergeInformation", no_merge()),
        ]);
        object.to_string = Some(self.text.clone());
        object.into()
    }
}

fn list(items: Vec<PsValue>) -> PsValue {
    PsObject {
        type_names: vec![
            "System.Collections.ArrayList".to_owned(),
            "System.Object".to_owned(),
        ],
        content: ObjContent::List(ListKind::List, items),
        ..PsObject::default()
    }
    .into()
}

/// CREATE_PIPELINE (2.2.2.10): one statement of commands piped into each other.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatePipeline {
    pub commands: Vec<Command>,
    /// No PIPELINE_INPUT will follow.
    pub no_input: bool,
}

impl CreatePipeline {
    pub fn to_value(&self) -> PsValue {
        let powershell = PsObject::custom([
            (
                "Cmds",
                list(self.commands.iter().map(Command::to_value).collect()),
            ),
            ("IsNested", PsValue::Bool(false)),
            ("History", PsValue::Nil),
            ("RedirectShellErrorOutputPipe", PsValue::Bool(true)),
        ]);
        PsObject::custom([
            ("NoInput", PsValue::Bool(self.no_input)),
            ("ApartmentState", apartment_state_unknown()),
            (
                "RemoteStreamOptions",
                enum_value(0, "System.Management.Automation.RemoteStreamOptions", "None"),
            ),
            ("AddToHistory", PsValue::Bool(false)),
            ("HostInfo", no_host()),
            ("PowerShell", powershell.into()),
            ("IsNested", PsValue::Bool(false)),
        ])
        .into()
    }
}

/// RUNSPACEPOOL_HOST_CALL / PIPELINE_HOST_CALL (2.2.2.15, 2.2.2.27).
#[derive(Debug, Clone, PartialEq)]
pub struct HostCall {
    pub call_id: i64,
    /// The HostMethodIdentifier's number (2.2.3.17).
    pub method_id: i64,
    /// Its name (`ReadLine`, `PromptForCredential`, `WriteLine2`, ...), when the server sent one.
    pub method_name: Option<String>,
    pub parameters: Vec<PsValue>,
}

impl HostCall {
    pub fn from_value(value: &PsValue) -> Result<Self, BodyError> {
        const M: &str = "HOST_CALL";
        let method = property(value, M, "mi")?;
        let method_id = match method {
            PsValue::Object(object) => match &object.content {
                ObjContent::Value(number) => number.as_i64(),
                _ => None,
            },
            other => other.as_i64(),
        }
        .ok_or(BodyError::Property {
            message: M,
            property: "mi",
        })?;
        let method_name = match method {
            PsValue::Object(object) => object.to_string.clone(),
            _ => None,
        };
        let parameters = value
            .get("mp")
            .and_then(PsValue::as_list)
            .map(<[PsValue]>::to_vec)
            .unwrap_or_default();
        Ok(HostCall {
            call_id: int_property(value, M, "ci")?,
            method_id,
            method_name,
            parameters,
        })
    }

    /// Whether the method returns a value: the server waits for a response only for those. The void
    /// methods of 2.2.3.17 (SetShouldExit, the Write* family, Set* of the raw UI, Push/PopRunspace)
    /// get none.
    pub fn expects_response(&self) -> bool {
        !matches!(
            self.method_id,
            6..=10 | 13..=22 | 28 | 30 | 32 | 34 | 36 | 38 | 40 | 42 | 47..=49 | 51..=53
        )
    }
}

/// The answer to a host call (2.2.2.16, 2.2.2.28): a return value, or an error record.
pub fn host_response(call: &HostCall, result: Result<PsValue, PsValue>) -> PsValue {
    let method = PsObject {
        type_names: vec![
            "System.Management.Automation.Remoting.RemoteHostMethodId".to_owned(),
            "System.Enum".to_owned(),
            "System.ValueType".to_owned(),
            "System.Object".to_owned(),
        ],
        to_string: call.method_name.clone(),
        content: ObjContent::Value(PsValue::I32(i32::try_from(call.method_id).unwrap_or_default())),
        ..PsObject::default()
    };
    let mut props = vec![("ci", PsValue::I64(call.call_id)), ("mi", method.into())];
    match result {
        Ok(value) => props.push(("mr", value)),
        Err(error) => props.push(("me", error)),
    }
    PsObject::custom(props).into()
}

/// An ErrorRecord the client sends back when it cannot do what a host call asks: a non-interactive
/// host cannot prompt, so a script that prompts fails with this message instead of hanging.
pub fn host_error_record(method: &str) -> PsValue {
    let message = format!(
        "The PowerShell host of the operator is not interactive: {method} is not supported. \
         Remove the prompt from the script or pass the value as a parameter."
    );
    let exception = PsObject {
        type_names: vec![
            "System.Management.Automation.Host.HostException".to_owned(),
            "System.Exception".to_owned(),
            "System.Object".to_owned(),
        ],
        to_string: Some(message.clone()),
        adapted: [("Message", PsValue::from(message.as_str()))]
            .into_iter()
            .collect(),
        ..PsObject::default()
    };
    let mut record = PsObject::custom([
        ("Exception", PsValue::Object(Arc::new(exception))),
        ("TargetObject", PsValue::Nil),
        (
            "FullyQualifiedErrorId",
            PsValue::from("HostFunctionNotImplemented"),
        ),
        ("InvocationInfo", PsValue::Nil),
        ("ErrorCategory_Category", PsValue::I32(9)),
        ("ErrorCategory_Activity", PsValue::from(method)),
        ("ErrorCategory_Reason", PsValue::from("HostException")),
        ("ErrorCategory_TargetName", PsValue::from("")),
        ("ErrorCategory_TargetType", PsValue::from("")),
        ("ErrorCategory_Message", PsValue::from(message.as_str())),
        ("SerializeExtendedInfo", PsValue::Bool(false)),
    ]);
    record.type_names = vec![
        "System.Management.Automation.ErrorRecord".to_owned(),
        "System.Object".to_owned(),
    ];
    record.to_string = Some(message);
    record.into()
}

/// PUBLIC_KEY (2.2.2.3): the client's RSA public key, as the base64 of its CAPI PUBLICKEYBLOB.
pub fn public_key(blob_base64: &str) -> PsValue {
    PsObject::custom([("PublicKey", PsValue::from(blob_base64))]).into()
}

/// ENCRYPTED_SESSION_KEY (2.2.2.4): the session key, base64, encrypted with the client's key.
pub fn encrypted_session_key(value: &PsValue) -> Result<String, BodyError> {
    const M: &str = "ENCRYPTED_SESSION_KEY";
    property(value, M, "EncryptedSessionKey")?
        .as_str()
        .map(str::to_owned)
        .ok_or(BodyError::Property {
            message: M,
            property: "EncryptedSessionKey",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_capability_round_trips() {
        let ours = SessionCapability::client();
        assert_eq!(SessionCapability::from_value(&ours.to_value()), Ok(ours));
    }

    #[test]
    fn states_are_read_and_unknown_states_refused() {
        let body = PsObject::custom([("RunspaceState", PsValue::I32(2))]).into();
        let msg = RunspacePoolStateMsg::from_value(&body).expect("valid");
        assert_eq!(msg.state, RunspacePoolState::Opened);
        assert_eq!(msg.error, None);
        let body = PsObject::custom([("PipelineState", PsValue::I32(42))]).into();
        assert_eq!(
            PipelineStateMsg::from_value(&body),
            Err(BodyError::UnknownState {
                message: "PIPELINE_STATE",
                value: 42
            })
        );
        let body = PsObject::custom([("Other", PsValue::I32(1))]).into();
        assert!(PipelineStateMsg::from_value(&body).is_err());
        assert!(RunspacePoolStateMsg::from_value(&PsValue::Nil).is_err());
    }

    #[test]
    fn a_create_pipeline_carries_commands_and_typed_arguments() {
        let pipeline = CreatePipeline {
            commands: vec![Command::script("param($A) $A").parameter("A", 1i32).argument("x")],
            no_input: true,
        };
        let value = pipeline.to_value();
        let cmds = value
            .get("PowerShell")
            .and_then(|p| p.get("Cmds"))
            .and_then(PsValue::as_list)
            .expect("Cmds");
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].get("Cmd").and_then(PsValue::as_str), Some("param($A) $A"));
        assert_eq!(cmds[0].get("IsScript").and_then(PsValue::as_bool), Some(true));
        let args = cmds[0].get("Args").and_then(PsValue::as_list).expect("Args");
        assert_eq!(args[0].get("N").and_then(PsValue::as_str), Some("A"));
        assert_eq!(args[0].get("V").and_then(PsValue::as_i32), Some(1));
        assert!(args[1].get("N").is_some_and(PsValue::is_nil));
    }

    #[test]
    fn host_calls_are_read_and_answered() {
        let method = PsObject {
            to_string: Some("ReadLine".to_owned()),
            content: ObjContent::Value(PsValue::I32(11)),
            ..PsObject::default()
        };
        let body = PsObject::custom([
            ("ci", PsValue::I64(7)),
            ("mi", method.into()),
            ("mp", list(Vec::new())),
        ])
        .into();
        let call = HostCall::from_value(&body).expect("valid host call");
        assert_eq!(
            (call.call_id, call.method_id, call.method_name.as_deref()),
            (7, 11, Some("ReadLine"))
        );
        assert!(call.expects_response());
        let answer = host_response(&call, Err(host_error_record("ReadLine")));
        assert_eq!(answer.get("ci").and_then(PsValue::as_i64), Some(7));
        assert!(answer.get("me").is_some());
    }
}

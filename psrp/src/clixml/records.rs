//! The records of PowerShell's streams, read from the objects PowerShell serializes them as.
//!
//! PowerShell flattens these records into note properties when it sends them (its
//! `ToPSObjectForRemoting` methods; MS-PSRP 2.2.3.15 ErrorRecord, 2.2.3.16 InformationalRecord,
//! 2.2.2.25 PROGRESS_RECORD, 2.2.2.26 INFORMATION_RECORD):
//! - ErrorRecord: `Exception`, `TargetObject`, `FullyQualifiedErrorId`, `InvocationInfo`,
//!   `ErrorCategory_Category` (a number), `ErrorCategory_Activity`, `_Reason`, `_TargetName`,
//!   `_TargetType`, `_Message`, `ErrorDetails_Message`, `ErrorDetails_RecommendedAction`,
//!   `ErrorDetails_ScriptStackTrace`, `SerializeExtendedInfo` and, when that is true, the
//!   `InvocationInfo_*` and `CommandInfo_*` properties and `PipelineIterationInfo`;
//! - warning, verbose and debug records (InformationalRecord): `InformationalRecord_Message` — the
//!   message is there and not in a `Message` property — `InformationalRecord_SerializeInvocationInfo`
//!   and, when true, the same `InvocationInfo_*` properties and
//!   `InformationalRecord_PipelineIterationInfo`;
//! - InformationRecord: `MessageData`, `Source`, `TimeGenerated`, `Tags`, `User`, `Computer`,
//!   `ProcessId`, `NativeThreadId`, `ManagedThreadId`;
//! - ProgressRecord: `Activity`, `ActivityId`, `StatusDescription`, `CurrentOperation`,
//!   `ParentActivityId`, `PercentComplete`, `Type` (an enum object), `SecondsRemaining`.
//!
//! The readers here are lenient: a missing property is `None` or a default, never an error, because
//! a record with one odd field still carries a message a user should see. The same objects written
//! as ordinary output (a deserialized `ErrorRecord` with adapted `Exception`, `CategoryInfo`...) are
//! read through the same names where they exist.

use std::fmt;

use super::error::ClixmlError;
use super::render;
use super::value::{PsDateTime, PsObject, PsValue};

/// `System.Management.Automation.ErrorCategory`, by number.
pub const ERROR_CATEGORIES: [&str; 32] = [
    "NotSpecified",
    "OpenError",
    "CloseError",
    "DeviceError",
    "DeadlockDetected",
    "InvalidArgument",
    "InvalidData",
    "InvalidOperation",
    "InvalidResult",
    "InvalidType",
    "MetadataError",
    "NotImplemented",
    "NotInstalled",
    "ObjectNotFound",
    "OperationStopped",
    "OperationTimeout",
    "SyntaxError",
    "ParserError",
    "PermissionDenied",
    "ResourceBusy",
    "ResourceExists",
    "ResourceUnavailable",
    "ReadError",
    "WriteError",
    "FromStdErr",
    "SecurityError",
    "ProtocolError",
    "ConnectionError",
    "AuthenticationError",
    "LimitsExceeded",
    "QuotaExceeded",
    "NotEnabled",
];

fn object_of<'v>(value: &'v PsValue, expected: &'static str) -> Result<&'v PsObject, ClixmlError> {
    value.as_object().ok_or_else(|| ClixmlError::NotARecord {
        expected,
        found: value.kind(),
    })
}

/// A string property: a string, or the text of anything else that is not `$null`.
fn text(obj: &PsObject, name: &str) -> Option<String> {
    match obj.get(name)? {
        PsValue::Nil => None,
        PsValue::Str(s) => Some(s.clone()),
        other => Some(render::inline_text(other)),
    }
}

fn int(obj: &PsObject, name: &str) -> Option<i64> {
    obj.get(name)?.as_i64()
}

fn flag(obj: &PsObject, name: &str) -> bool {
    obj.get(name).and_then(PsValue::as_bool).unwrap_or(false)
}

fn ints(value: Option<&PsValue>) -> Vec<i32> {
    value
        .and_then(PsValue::as_list)
        .map(|items| items.iter().filter_map(PsValue::as_i32).collect())
        .unwrap_or_default()
}

/// An `ErrorRecord` (MS-PSRP 2.2.3.15): the error stream, and a failed pipeline's reason.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRecord {
    /// The exception's `Message`.
    pub exception_message: Option<String>,
    /// The exception's type names (`System.Management.Automation.RuntimeException`, ...).
    pub exception_type_names: Vec<String>,
    /// The exception object as sent (a string when PowerShell's depth limit cut it).
    pub exception: PsValue,
    pub fully_qualified_error_id: Option<String>,
    pub category: ErrorCategoryInfo,
    pub error_details: Option<ErrorDetails>,
    pub script_stack_trace: Option<String>,
    pub invocation_info: Option<InvocationInfo>,
    pub pipeline_iteration_info: Vec<i32>,
    pub target_object: PsValue,
    /// The record's own `<ToString>`.
    pub to_string: Option<String>,
}

/// `ErrorCategoryInfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCategoryInfo {
    /// The `ErrorCategory` number (see [`ERROR_CATEGORIES`]).
    pub category: i32,
    pub activity: Option<String>,
    pub reason: Option<String>,
    pub target_name: Option<String>,
    pub target_type: Option<String>,
    /// PowerShell's one-line form, `ObjectNotFound: (fake:String) [], CommandNotFoundException`.
    pub message: Option<String>,
}

impl ErrorCategoryInfo {
    /// The category's name; `NotSpecified` for a number PowerShell does not define.
    pub fn category_name(&self) -> &'static str {
        usize::try_from(self.category)
            .ok()
            .and_then(|i| ERROR_CATEGORIES.get(i))
            .copied()
            .unwrap_or("NotSpecified")
    }
}

/// `ErrorDetails`: a message that replaces the exception's, and a recommended action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorDetails {
    pub message: Option<String>,
    pub recommended_action: Option<String>,
}

/// Where a record came from (MS-PSRP 2.2.3.15.1 InvocationInfo), as much as was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvocationInfo {
    /// The command's name (`CommandInfo_Name`, or the text of `MyCommand`).
    pub command_name: Option<String>,
    pub invocation_name: Option<String>,
    pub script_name: Option<String>,
    pub script_line_number: Option<i32>,
    pub offset_in_line: Option<i32>,
    pub line: Option<String>,
    /// `At line:1 char:1` and the marked line, as PowerShell shows under an error.
    pub position_message: Option<String>,
    pub history_id: Option<i64>,
    pub pipeline_length: Option<i32>,
    pub pipeline_position: Option<i32>,
}

impl InvocationInfo {
    /// From the flattened `InvocationInfo_*` and `CommandInfo_*` properties of a record.
    fn from_flattened(obj: &PsObject) -> InvocationInfo {
        let i32_of = |name: &str| int(obj, name).and_then(|v| i32::try_from(v).ok());
        InvocationInfo {
            command_name: text(obj, "CommandInfo_Name").filter(|s| !s.is_empty()),
            invocation_name: text(obj, "InvocationInfo_InvocationName"),
            script_name: text(obj, "InvocationInfo_ScriptName"),
            script_line_number: i32_of("InvocationInfo_ScriptLineNumber"),
            offset_in_line: i32_of("InvocationInfo_OffsetInLine"),
            line: text(obj, "InvocationInfo_Line"),
            position_message: text(obj, "InvocationInfo_PositionMessage"),
            history_id: int(obj, "InvocationInfo_HistoryId"),
            pipeline_length: i32_of("InvocationInfo_PipelineLength"),
            pipeline_position: i32_of("InvocationInfo_PipelinePosition"),
        }
    }

    /// From a (deserialized) `InvocationInfo` object.
    fn from_object(obj: &PsObject) -> InvocationInfo {
        let i32_of = |name: &str| int(obj, name).and_then(|v| i32::try_from(v).ok());
        let command_name = match obj.get("MyCommand") {
            Some(PsValue::Object(cmd)) => text(cmd, "Name").or_else(|| cmd.to_string.clone()),
            Some(PsValue::Str(s)) => Some(s.clone()),
            _ => None,
        };
        InvocationInfo {
            command_name: command_name.filter(|s| !s.is_empty()),
            invocation_name: text(obj, "InvocationName"),
            script_name: text(obj, "ScriptName"),
            script_line_number: i32_of("ScriptLineNumber"),
            offset_in_line: i32_of("OffsetInLine"),
            line: text(obj, "Line"),
            position_message: text(obj, "PositionMessage"),
            history_id: int(obj, "HistoryId"),
            pipeline_length: i32_of("PipelineLength"),
            pipeline_position: i32_of("PipelinePosition"),
        }
    }
}

impl ErrorRecord {
    /// Reads an error record from the object PowerShell sent (see the module documentation).
    pub fn from_value(value: &PsValue) -> Result<ErrorRecord, ClixmlError> {
        object_of(value, "an ErrorRecord object").map(ErrorRecord::from_object)
    }

    pub fn from_object(obj: &PsObject) -> ErrorRecord {
        let exception = obj.get("Exception").cloned().unwrap_or_default();
        let (exception_message, exception_type_names) = match &exception {
            PsValue::Object(e) => {
                let message = text(e, "Message").or_else(|| {
                    // `Type: message` is the exception's ToString; keep the message part.
                    e.to_string
                        .as_ref()
                        .map(|s| match (s.split_once(": "), e.type_names.first()) {
                            (Some((ty, rest)), Some(first)) if first.ends_with(ty) => rest.to_owned(),
                            _ => s.clone(),
                        })
                });
                (message, e.type_names.clone())
            }
            PsValue::Nil => (None, Vec::new()),
            other => (Some(render::inline_text(other)), Vec::new()),
        };

        let category_object = obj.get("CategoryInfo").and_then(PsValue::as_object);
        let category = ErrorCategoryInfo {
            category: int(obj, "ErrorCategory_Category")
                .or_else(|| category_object.and_then(|c| category_number(c.get("Category")?)))
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or(0),
            activity: text(obj, "ErrorCategory_Activity")
                .or_else(|| category_object.and_then(|c| text(c, "Activity"))),
            reason: text(obj, "ErrorCategory_Reason")
                .or_else(|| category_object.and_then(|c| text(c, "Reason"))),
            target_name: text(obj, "ErrorCategory_TargetName")
                .or_else(|| category_object.and_then(|c| text(c, "TargetName"))),
            target_type: text(obj, "ErrorCategory_TargetType")
                .or_else(|| category_object.and_then(|c| text(c, "TargetType"))),
            message: text(obj, "ErrorCategory_Message")
                .or_else(|| category_object.and_then(|c| c.to_string.clone())),
        };

        let details_object = obj.get("ErrorDetails").and_then(PsValue::as_object);
        let details = ErrorDetails {
            message: text(obj, "ErrorDetails_Message")
                .or_else(|| details_object.and_then(|d| text(d, "Message"))),
            recommended_action: text(obj, "ErrorDetails_RecommendedAction")
                .or_else(|| details_object.and_then(|d| text(d, "RecommendedAction"))),
        };
        let error_details =
            (details.message.is_some() || details.recommended_action.is_some()).then_some(details);

        let invocation_info = if flag(obj, "SerializeExtendedInfo") {
            Some(InvocationInfo::from_flattened(obj))
        } else {
            obj.get("InvocationInfo")
                .and_then(PsValue::as_object)
                .map(InvocationInfo::from_object)
        };

        ErrorRecord {
            exception_message,
            exception_type_names,
            exception,
            fully_qualified_error_id: text(obj, "FullyQualifiedErrorId"),
            category,
            error_details,
            script_stack_trace: text(obj, "ErrorDetails_ScriptStackTrace")
                .or_else(|| text(obj, "ScriptStackTrace")),
            invocation_info,
            pipeline_iteration_info: ints(obj.get("PipelineIterationInfo")),
            target_object: obj.get("TargetObject").cloned().unwrap_or_default(),
            to_string: obj.to_string.clone(),
        }
    }

    /// What PowerShell shows first for the error: `ErrorDetails.Message` when set, otherwise the
    /// exception's message; failing both, the record's ToString, then its error id.
    pub fn message(&self) -> &str {
        self.error_details
            .as_ref()
            .and_then(|d| d.message.as_deref())
            .filter(|m| !m.is_empty())
            .or(self.exception_message.as_deref())
            .or(self.to_string.as_deref())
            .or(self.fully_qualified_error_id.as_deref())
            .unwrap_or("")
    }
}

/// `ErrorCategory` as a number, an enum object or (CategoryInfo of output objects) its name.
fn category_number(value: &PsValue) -> Option<i64> {
    value.as_i64().or_else(|| {
        let name = match value {
            PsValue::Str(s) => s.as_str(),
            PsValue::Object(o) => o.to_string.as_deref()?,
            _ => return None,
        };
        ERROR_CATEGORIES
            .iter()
            .position(|c| *c == name)
            .and_then(|i| i64::try_from(i).ok())
    })
}

/// The message, as [`ErrorRecord::message`].
impl fmt::Display for ErrorRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Which stream an [`InformationalRecord`] is from, by its type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InformationalKind {
    Warning,
    Verbose,
    Debug,
}

/// A warning, verbose or debug record (MS-PSRP 2.2.3.16).
#[derive(Debug, Clone, PartialEq)]
pub struct InformationalRecord {
    /// From the type names; `None` when they name none of the three (the message type says).
    pub kind: Option<InformationalKind>,
    pub message: String,
    /// Present when the sender added it (RemoteStreamOptions).
    pub invocation_info: Option<InvocationInfo>,
    pub pipeline_iteration_info: Vec<i32>,
}

impl InformationalRecord {
    pub fn from_value(value: &PsValue) -> Result<InformationalRecord, ClixmlError> {
        match value {
            // A bare string is what a peer that writes the message alone sends; take it.
            PsValue::Str(s) => Ok(InformationalRecord {
                kind: None,
                message: s.clone(),
                invocation_info: None,
                pipeline_iteration_info: Vec::new(),
            }),
            other => object_of(other, "an InformationalRecord object").map(InformationalRecord::from_object),
        }
    }

    pub fn from_object(obj: &PsObject) -> InformationalRecord {
        let kind = if obj.is("System.Management.Automation.WarningRecord") {
            Some(InformationalKind::Warning)
        } else if obj.is("System.Management.Automation.VerboseRecord") {
            Some(InformationalKind::Verbose)
        } else if obj.is("System.Management.Automation.DebugRecord") {
            Some(InformationalKind::Debug)
        } else {
            None
        };
        let message = text(obj, "InformationalRecord_Message")
            .or_else(|| text(obj, "Message"))
            .or_else(|| obj.to_string.clone())
            .unwrap_or_default();
        let invocation_info = if flag(obj, "InformationalRecord_SerializeInvocationInfo") {
            Some(InvocationInfo::from_flattened(obj))
        } else {
            obj.get("InvocationInfo")
                .and_then(PsValue::as_object)
                .map(InvocationInfo::from_object)
        };
        InformationalRecord {
            kind,
            message,
            invocation_info,
            pipeline_iteration_info: ints(
                obj.get("InformationalRecord_PipelineIterationInfo")
                    .or_else(|| obj.get("PipelineIterationInfo")),
            ),
        }
    }
}

impl fmt::Display for InformationalRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// An `InformationRecord` (MS-PSRP 2.2.2.26): `Write-Information` and `Write-Host`.
#[derive(Debug, Clone, PartialEq)]
pub struct InformationRecord {
    /// What was written: a string, or any object (`Write-Host` sends a `HostInformationMessage`).
    pub message_data: PsValue,
    pub source: Option<String>,
    pub time_generated: Option<PsDateTime>,
    pub tags: Vec<String>,
    pub user: Option<String>,
    pub computer: Option<String>,
    pub process_id: Option<u32>,
    pub native_thread_id: Option<u32>,
    pub managed_thread_id: Option<u32>,
}

impl InformationRecord {
    pub fn from_value(value: &PsValue) -> Result<InformationRecord, ClixmlError> {
        object_of(value, "an InformationRecord object").map(InformationRecord::from_object)
    }

    pub fn from_object(obj: &PsObject) -> InformationRecord {
        let u32_of = |name: &str| int(obj, name).and_then(|v| u32::try_from(v).ok());
        InformationRecord {
            message_data: obj.get("MessageData").cloned().unwrap_or_default(),
            source: text(obj, "Source"),
            time_generated: match obj.get("TimeGenerated") {
                Some(PsValue::DateTime(dt)) => Some(dt.clone()),
                _ => None,
            },
            tags: obj
                .get("Tags")
                .and_then(PsValue::as_list)
                .map(|items| items.iter().map(render::inline_text).collect())
                .unwrap_or_default(),
            user: text(obj, "User"),
            computer: text(obj, "Computer"),
            process_id: u32_of("ProcessId"),
            native_thread_id: u32_of("NativeThreadId"),
            managed_thread_id: u32_of("ManagedThreadId"),
        }
    }

    /// The message as PowerShell's host shows it: a string as is; an object by its ToString (a
    /// `HostInformationMessage`'s is its text), otherwise as [`render::to_text`] shows it.
    pub fn message(&self) -> String {
        match &self.message_data {
            PsValue::Str(s) => s.clone(),
            PsValue::Object(o) => match (&o.to_string, o.get("Message")) {
                (Some(s), _) => s.clone(),
                (None, Some(m)) => render::to_text(m),
                (None, None) => render::to_text(&self.message_data),
            },
            other => render::to_text(other),
        }
    }
}

impl fmt::Display for InformationRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// `ProgressRecordType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ProgressRecordType {
    #[default]
    Processing,
    Completed,
}

/// A `ProgressRecord` (MS-PSRP 2.2.2.25): `Write-Progress`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressRecord {
    pub activity: String,
    pub activity_id: i32,
    pub status_description: String,
    pub current_operation: Option<String>,
    /// -1 when there is no parent.
    pub parent_activity_id: i32,
    /// -1 when unknown.
    pub percent_complete: i32,
    /// -1 when unknown.
    pub seconds_remaining: i32,
    pub record_type: ProgressRecordType,
}

impl ProgressRecord {
    pub fn from_value(value: &PsValue) -> Result<ProgressRecord, ClixmlError> {
        object_of(value, "a ProgressRecord object").map(ProgressRecord::from_object)
    }

    /// From the PROGRESS_RECORD message's object, a deserialized `ProgressRecord` (whose type is
    /// `RecordType`), or the `<PR>` element's object.
    pub fn from_object(obj: &PsObject) -> ProgressRecord {
        let i32_or = |name: &str, default: i32| {
            int(obj, name)
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or(default)
        };
        let record_type = match obj.get("Type").or_else(|| obj.get("RecordType")) {
            Some(v) if v.as_i64() == Some(1) => ProgressRecordType::Completed,
            Some(PsValue::Str(s)) if s == "Completed" => ProgressRecordType::Completed,
            Some(PsValue::Object(o)) if o.to_string.as_deref() == Some("Completed") => {
                ProgressRecordType::Completed
            }
            _ => ProgressRecordType::Processing,
        };
        ProgressRecord {
            activity: text(obj, "Activity").unwrap_or_default(),
            activity_id: i32_or("ActivityId", 0),
            status_description: text(obj, "StatusDescription").unwrap_or_default(),
            current_operation: text(obj, "CurrentOperation"),
            parent_activity_id: i32_or("ParentActivityId", -1),
            percent_complete: i32_or("PercentComplete", -1),
            seconds_remaining: i32_or("SecondsRemaining", -1),
            record_type,
        }
    }
}

/// `Activity: StatusDescription`, then ` (n%)` when the percentage is known.
impl fmt::Display for ProgressRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.activity)?;
        let status = self.status_description.trim();
        if !status.is_empty() {
            write!(f, ": {status}")?;
        }
        if self.percent_complete >= 0 {
            write!(f, " ({}%)", self.percent_complete)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clixml::parse;
    use crate::clixml::tests_vectors as v;

    #[test]
    fn error_record_from_write_error() {
        let e = ErrorRecord::from_value(&parse(v::ERROR_RECORD_WRITE_ERROR).unwrap()).unwrap();
        assert_eq!(e.to_string(), "error stream");
        assert_eq!(e.exception_message.as_deref(), Some("error stream"));
        assert_eq!(
            e.exception_type_names[0],
            "Microsoft.PowerShell.Commands.WriteErrorException"
        );
        assert_eq!(
            e.fully_qualified_error_id.as_deref(),
            Some("Microsoft.PowerShell.Commands.WriteErrorException")
        );
        assert_eq!(e.category.category_name(), "NotSpecified");
        assert_eq!(e.category.activity.as_deref(), Some("Write-Error"));
        assert_eq!(e.category.reason.as_deref(), Some("WriteErrorException"));
        assert_eq!(
            e.category.message.as_deref(),
            Some("NotSpecified: (:) [Write-Error], WriteErrorException")
        );
        assert_eq!(
            e.script_stack_trace.as_deref(),
            Some("at <ScriptBlock>, <No file>: line 5")
        );
        let inv = e.invocation_info.as_ref().unwrap();
        assert_eq!(inv.history_id, Some(1));
        assert_eq!(inv.command_name, None);
        assert_eq!(e.pipeline_iteration_info, [0, 0]);
        assert_eq!(e.error_details, None);
        assert!(e.target_object.is_nil());
    }

    #[test]
    fn error_record_of_a_failed_pipeline() {
        let state = parse(v::PIPELINE_STATE_FAILED).unwrap();
        assert_eq!(state.get("PipelineState"), Some(&PsValue::I32(5)));
        let e = ErrorRecord::from_value(state.get("ExceptionAsErrorRecord").unwrap()).unwrap();
        let message = "Transport failure, hash mismatch\r\nActual: 32d10c7b8cf96570ca04ce37f2a19d84240d3a89\r\n\
                       Expected: c3499c2729730a7f807efb8676a92dcb6f8a3f8f";
        assert_eq!(e.to_string(), message);
        assert_eq!(e.category.category, 14);
        assert_eq!(e.category.category_name(), "OperationStopped");
        assert_eq!(e.category.target_type.as_deref(), Some("String"));
        assert_eq!(e.target_object, PsValue::from(message));
        let inv = e.invocation_info.as_ref().unwrap();
        assert_eq!(inv.script_line_number, Some(80));
        assert_eq!(inv.offset_in_line, Some(1));
        assert!(
            inv.position_message
                .as_deref()
                .unwrap()
                .starts_with("At line:80 char:1\r\n+ throw")
        );
        assert_eq!(
            e.exception_type_names[0],
            "System.Management.Automation.RuntimeException"
        );
    }

    #[test]
    fn error_details_win() {
        // psrpcore tests/types/test_complex.py::test_error_record_with_error_details (MIT).
        let e = ErrorRecord::from_value(&parse(v::PSRPCORE_ERROR_WITH_DETAILS).unwrap()).unwrap();
        assert_eq!(e.to_string(), "Error Detail Message");
        assert_eq!(e.exception_message.as_deref(), Some("Exception"));
        assert_eq!(e.category.category_name(), "CloseError");
        assert_eq!(
            e.category.message.as_deref(),
            Some("CloseError (:) [Closing a file], File is locked")
        );
        assert_eq!(e.target_object, PsValue::from("C:\\temp\\file.txt"));
        assert_eq!(e.script_stack_trace.as_deref(), Some("At <1>MyScript.ps1"));
        assert_eq!(e.invocation_info, None);
    }

    #[test]
    fn error_record_fallbacks() {
        let mut obj = PsObject::new();
        obj.to_string = Some("only tostring".into());
        assert_eq!(ErrorRecord::from_object(&obj).to_string(), "only tostring");
        obj.extended.insert("Exception", "cut by depth");
        assert_eq!(ErrorRecord::from_object(&obj).to_string(), "cut by depth");
        let mut ex = PsObject::new().with_type_names(["System.InvalidOperationException"]);
        ex.to_string = Some("System.InvalidOperationException: boom".into());
        obj.extended.insert("Exception", ex);
        obj.extended.insert("ErrorDetails_Message", "");
        assert_eq!(ErrorRecord::from_object(&obj).to_string(), "boom");
        assert!(ErrorRecord::from_value(&PsValue::I32(1)).is_err());
        let cat = ErrorCategoryInfo {
            category: 99,
            ..Default::default()
        };
        assert_eq!(cat.category_name(), "NotSpecified");
    }

    #[test]
    fn informational_records_read_their_own_message_property() {
        let w = InformationalRecord::from_value(&parse(v::WARNING_RECORD).unwrap()).unwrap();
        assert_eq!(w.kind, Some(InformationalKind::Warning));
        assert!(
            w.message
                .starts_with("Failed to disable MaximumAllowedMemory input size")
        );
        let inv = w.invocation_info.as_ref().unwrap();
        assert_eq!(inv.pipeline_length, Some(1));
        assert_eq!(w.pipeline_iteration_info, [0, 0]);

        let d = InformationalRecord::from_value(&parse(v::DEBUG_RECORD).unwrap()).unwrap();
        assert_eq!(d.kind, Some(InformationalKind::Debug));
        assert_eq!(d.to_string(), "debug stream");

        // The message is in InformationalRecord_Message; a Message property that disagrees loses.
        let mut obj = PsObject::new().with_type_names(["System.Management.Automation.VerboseRecord"]);
        obj.extended.insert("Message", "wrong");
        obj.extended.insert("InformationalRecord_Message", "right");
        obj.extended
            .insert("InformationalRecord_SerializeInvocationInfo", false);
        let r = InformationalRecord::from_object(&obj);
        assert_eq!(
            (r.kind, r.message.as_str(), r.invocation_info),
            (Some(InformationalKind::Verbose), "right", None)
        );
        assert_eq!(
            InformationalRecord::from_value(&PsValue::from("plain"))
                .unwrap()
                .message,
            "plain"
        );
    }

    #[test]
    fn information_record() {
        let i = InformationRecord::from_value(&parse(v::INFORMATION_RECORD).unwrap()).unwrap();
        assert_eq!(i.to_string(), "information stream");
        assert_eq!(i.source.as_deref(), Some("Write-Information"));
        assert_eq!(
            i.time_generated.as_ref().map(PsDateTime::as_str),
            Some("2018-06-13T23:46:28.00516+00:00")
        );
        assert!(i.tags.is_empty());
        assert_eq!(i.user.as_deref(), Some("WIN-NNMU24VVKJ0\\vagrant"));
        assert_eq!(i.computer.as_deref(), Some("WIN-NNMU24VVKJ0"));
        assert_eq!(
            (i.process_id, i.native_thread_id, i.managed_thread_id),
            (Some(2636), Some(2840), Some(7))
        );

        let mut host =
            PsObject::new().with_type_names(["System.Management.Automation.HostInformationMessage"]);
        host.adapted.insert("Message", "from write-host");
        let mut rec = PsObject::new();
        rec.extended.insert("MessageData", host);
        assert_eq!(InformationRecord::from_object(&rec).message(), "from write-host");
    }

    #[test]
    fn progress_records() {
        let p = ProgressRecord::from_value(&parse(v::PROGRESS_RECORD).unwrap()).unwrap();
        assert_eq!(
            p,
            ProgressRecord {
                activity: "Preparing modules for first use.".into(),
                activity_id: 0,
                status_description: " ".into(),
                current_operation: None,
                parent_activity_id: -1,
                percent_complete: -1,
                seconds_remaining: -1,
                record_type: ProgressRecordType::Completed,
            }
        );
        assert_eq!(p.to_string(), "Preparing modules for first use.");
        let mut obj = PsObject::new();
        obj.extended.insert("Activity", "Copy");
        obj.extended.insert("StatusDescription", "3 of 4");
        obj.extended.insert("PercentComplete", 75);
        let p = ProgressRecord::from_object(&obj);
        assert_eq!(p.record_type, ProgressRecordType::Processing);
        assert_eq!(p.to_string(), "Copy: 3 of 4 (75%)");
    }
}

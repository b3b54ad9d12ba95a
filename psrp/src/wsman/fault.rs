//! SOAP faults (`s:Fault`) with Windows' `f:WSManFault` detail, as typed errors.
//!
//! A fault names its cause three ways: the SOAP subcode (`w:TimedOut`, `w:QuotaLimit`, DMTF
//! DSP0226 section 14), the `Code` of the `f:WSManFault` detail (a Windows error number, MS-WSMV
//! 2.2.4.43) and free text. The variants here are the causes the controller treats differently
//! (condition reasons); everything else keeps the remote code and text in [`Fault::Other`].

use thiserror::Error;

use super::namespaces::{SOAP, WSMAN, WSMAN_FAULT};
use super::xml::Element;

/// `ERROR_WSMAN_OPERATION_TIMEDOUT`: nothing happened within `wsman:OperationTimeout`. For a
/// Receive this is the normal "no output yet" answer (MS-WSMV 3.1.4.14).
pub const CODE_OPERATION_TIMEOUT: u32 = 2_150_858_793;
/// `ERROR_WSMAN_UNEXPECTED_SELECTORS`, with the `w:InvalidSelectors` subcode: the shell (or the
/// command) named by the request does not exist (any more).
pub const CODE_INVALID_SELECTORS: u32 = 2_150_858_843;
/// `ERROR_WINRS_IDLETIMEOUT_OUTOFBOUNDS`: an `rsp:IdleTimeOut` outside the plug-in's range
/// (MS-WSMV 2.2.4.23: at least 60000 ms, at most `MaxIdleTimeoutms`).
pub const CODE_IDLE_TIMEOUT_OUT_OF_BOUNDS: u32 = 2_150_859_250;
/// `ERROR_ACCESS_DENIED`.
pub const CODE_ACCESS_DENIED: u32 = 5;
/// The quota errors of `wsmerror.h`: `ERROR_WSMAN_QUOTA_MAX_SHELLS` (MaxShellsPerUser),
/// `_MAX_OPERATIONS`, `_USER`, `_SYSTEM`, `_MAX_SHELLUSERS`, and the per-plug-in quotas
/// (`_MAX_SHELLS_PPQ`, `_MAX_USERS_PPQ`, `_MAX_PLUGINSHELLS_PPQ`, `_MAX_PLUGINOPERATIONS_PPQ`,
/// `_MAX_OPERATIONS_USER_PPQ`, `_MAX_COMMANDS_PER_SHELL_PPQ`, `_MIN_REQUIREMENT_NOT_AVAILABLE_PPQ`).
pub const QUOTA_CODES: [u32; 12] = [
    2_150_859_173,
    2_150_859_174,
    2_150_859_175,
    2_150_859_176,
    2_150_859_179,
    2_150_859_236,
    2_150_859_237,
    2_150_859_238,
    2_150_859_239,
    2_150_859_240,
    2_150_859_241,
    2_150_859_242,
];

/// What a fault says, kept whole: the controller shows the remote text, it does not hide it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FaultDetail {
    /// `s:Code/s:Value` without its prefix: `Sender` or `Receiver`.
    pub code: String,
    /// `s:Code/s:Subcode/s:Value` without its prefix (`TimedOut`, `QuotaLimit`, `AccessDenied`,
    /// `InvalidSelectors`, ...). The value is a QName whose prefix is bound in the fault's own
    /// scope; the local part is what identifies it.
    pub subcode: Option<String>,
    /// `s:Reason/s:Text`.
    pub reason: String,
    /// `f:WSManFault/@Code`: the Windows error number.
    pub wsman_code: Option<u32>,
    /// `f:WSManFault/@Machine`.
    pub machine: Option<String>,
    /// The text of `f:WSManFault/f:Message` (provider faults included), else the reason.
    pub message: String,
    /// `w:FaultDetail`, a URI refining the subcode (e.g. `.../faultDetail/UnexpectedSelectors`).
    pub fault_detail: Option<String>,
}

impl std::fmt::Display for FaultDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.wsman_code {
            Some(code) => write!(f, "{} (code {code})", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

/// A SOAP fault, by what the controller does about it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Fault {
    /// `w:TimedOut` / 2150858793. Normal for a Receive ("nothing yet": ask again); for other
    /// operations the server did not finish in time.
    #[error("WS-Management operation timed out: {0}")]
    OperationTimeout(FaultDetail),
    /// `w:QuotaLimit` or a quota error code: too many shells or operations for this user.
    #[error("WS-Management quota exceeded: {0}")]
    QuotaLimit(FaultDetail),
    /// `w:AccessDenied` / 5.
    #[error("access denied: {0}")]
    AccessDenied(FaultDetail),
    /// `w:InvalidSelectors` / 2150858843: the shell, or the command, does not exist on the server.
    #[error("shell or command not found: {0}")]
    ShellNotFound(FaultDetail),
    /// 2150859250: the idle timeout was refused (a Disconnect with less than 60 s, or more than
    /// the endpoint's maximum).
    #[error("idle timeout refused: {0}")]
    InvalidIdleTimeout(FaultDetail),
    /// Any other fault, with its code and the remote text.
    #[error("WS-Management fault: {0}")]
    Other(FaultDetail),
}

impl Fault {
    pub fn detail(&self) -> &FaultDetail {
        match self {
            Fault::OperationTimeout(d)
            | Fault::QuotaLimit(d)
            | Fault::AccessDenied(d)
            | Fault::ShellNotFound(d)
            | Fault::InvalidIdleTimeout(d)
            | Fault::Other(d) => d,
        }
    }

    /// The Windows error number, when the fault carried one.
    pub fn code(&self) -> Option<u32> {
        self.detail().wsman_code
    }

    /// The remote text.
    pub fn message(&self) -> &str {
        &self.detail().message
    }

    /// A short, stable name for conditions, events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Fault::OperationTimeout(_) => "OperationTimeout",
            Fault::QuotaLimit(_) => "QuotaExceeded",
            Fault::AccessDenied(_) => "AccessDenied",
            Fault::ShellNotFound(_) => "ShellNotFound",
            Fault::InvalidIdleTimeout(_) => "InvalidIdleTimeout",
            Fault::Other(_) => "RemoteFault",
        }
    }

    /// Sorts a fault's detail into its variant.
    pub fn classify(detail: FaultDetail) -> Fault {
        let sub = detail.subcode.as_deref().unwrap_or("");
        let code = detail.wsman_code;
        if sub == "TimedOut" || code == Some(CODE_OPERATION_TIMEOUT) {
            Fault::OperationTimeout(detail)
        } else if code == Some(CODE_IDLE_TIMEOUT_OUT_OF_BOUNDS) {
            Fault::InvalidIdleTimeout(detail)
        } else if sub == "QuotaLimit" || code.is_some_and(|c| QUOTA_CODES.contains(&c)) {
            Fault::QuotaLimit(detail)
        } else if sub == "AccessDenied" || code == Some(CODE_ACCESS_DENIED) {
            Fault::AccessDenied(detail)
        } else if sub == "InvalidSelectors" || code == Some(CODE_INVALID_SELECTORS) {
            Fault::ShellNotFound(detail)
        } else {
            Fault::Other(detail)
        }
    }

    /// Reads an `s:Fault` element.
    pub(crate) fn from_element(fault: &Element) -> Fault {
        let local = |qname: &str| qname.rsplit(':').next().unwrap_or(qname).trim().to_string();
        let code_el = fault.child(SOAP, "Code");
        let code = code_el
            .and_then(|c| c.child_text(SOAP, "Value"))
            .map(local)
            .unwrap_or_default();
        let subcode = code_el
            .and_then(|c| c.child(SOAP, "Subcode"))
            .and_then(|s| s.child_text(SOAP, "Value"))
            .map(local);
        let reason = fault
            .child(SOAP, "Reason")
            .and_then(|r| r.child_text(SOAP, "Text"))
            .unwrap_or("")
            .to_string();
        let detail = fault.child(SOAP, "Detail");
        let wsman_fault = detail.and_then(|d| d.descendant(WSMAN_FAULT, "WSManFault"));
        let wsman_code = wsman_fault
            .and_then(|f| f.attr("Code"))
            .and_then(|c| c.trim().parse().ok());
        let machine = wsman_fault.and_then(|f| f.attr("Machine")).map(str::to_string);
        let message = wsman_fault
            .and_then(|f| f.child(WSMAN_FAULT, "Message"))
            .map(Element::deep_text)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| reason.trim().to_string());
        let fault_detail = detail
            .and_then(|d| d.child_text(WSMAN, "FaultDetail"))
            .map(str::to_string);
        Fault::classify(FaultDetail {
            code,
            subcode,
            reason,
            wsman_code,
            machine,
            message,
            fault_detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(subcode: Option<&str>, code: Option<u32>) -> FaultDetail {
        FaultDetail {
            subcode: subcode.map(str::to_string),
            wsman_code: code,
            ..FaultDetail::default()
        }
    }

    #[test]
    fn classification() {
        assert!(matches!(
            Fault::classify(detail(Some("TimedOut"), None)),
            Fault::OperationTimeout(_)
        ));
        assert!(matches!(
            Fault::classify(detail(None, Some(2_150_858_793))),
            Fault::OperationTimeout(_)
        ));
        assert!(matches!(
            Fault::classify(detail(Some("QuotaLimit"), None)),
            Fault::QuotaLimit(_)
        ));
        assert!(matches!(
            Fault::classify(detail(Some("InternalError"), Some(2_150_859_173))),
            Fault::QuotaLimit(_)
        ));
        assert!(matches!(
            Fault::classify(detail(Some("AccessDenied"), None)),
            Fault::AccessDenied(_)
        ));
        assert!(matches!(
            Fault::classify(detail(None, Some(5))),
            Fault::AccessDenied(_)
        ));
        assert!(matches!(
            Fault::classify(detail(Some("InvalidSelectors"), None)),
            Fault::ShellNotFound(_)
        ));
        assert!(matches!(
            Fault::classify(detail(Some("InvalidParameter"), Some(2_150_859_250))),
            Fault::InvalidIdleTimeout(_)
        ));
        let other = Fault::classify(detail(Some("InternalError"), Some(2_147_942_402)));
        assert_eq!(other.code(), Some(2_147_942_402));
        assert_eq!(other.reason(), "RemoteFault");
    }
}

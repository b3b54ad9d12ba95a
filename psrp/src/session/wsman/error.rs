//! [`WsmanFailure`]: the WS-Management half of [`SessionError`](crate::session::SessionError), with
//! the stable reason names conditions, events and metric labels use.

use std::time::Duration;

use thiserror::Error;

use crate::{
    transport::wsman::WsmanHttpError,
    wsman::{Fault, WsmanError},
};

/// `ERROR_WSMAN_SHELL_DISCONNECTED`: the request was for a shell that is disconnected (a Receive
/// pending when the shell was disconnected gets it too).
pub const CODE_SHELL_DISCONNECTED: u32 = 2_150_859_204;
/// `ERROR_OPERATION_ABORTED`: the shell was deleted under a pending Receive.
pub const CODE_OPERATION_ABORTED: u32 = 995;

/// Why a WS-Management exchange failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum WsmanFailure {
    /// The HTTP transport: unreachable, TLS, authentication, a broken connection, a timeout.
    #[error(transparent)]
    Http(WsmanHttpError),
    /// The server answered with a SOAP fault, or with an envelope that is not what was asked.
    #[error(transparent)]
    Soap(WsmanError),
    /// A Disconnect with an idle timeout under WS-Management's minimum (MS-WSMV 2.2.4.23: 60 s),
    /// refused here before it is sent, as Windows would refuse it.
    #[error("an idle timeout of {0:?} is below the 60 s WS-Management allows for a disconnected shell")]
    IdleTimeoutTooShort(Duration),
}

impl WsmanFailure {
    /// A stable CamelCase name. Shared with the SSH transport where the cause is the same
    /// (`AuthFailed`, `ProtocolError`, `OperationTimeout`); the operator maps these to condition
    /// reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            WsmanFailure::Http(e) => match e {
                WsmanHttpError::Unreachable { .. } => "HostUnreachable",
                WsmanHttpError::Timeout { .. } => "OperationTimeout",
                other => other.reason(),
            },
            WsmanFailure::Soap(WsmanError::Fault(fault)) => match fault.code() {
                Some(CODE_SHELL_DISCONNECTED) => "ShellDisconnected",
                Some(CODE_OPERATION_ABORTED) => "OperationAborted",
                _ => fault.reason(),
            },
            WsmanFailure::Soap(_) => "ProtocolError",
            WsmanFailure::IdleTimeoutTooShort(_) => "InvalidIdleTimeout",
        }
    }

    /// True when the same configuration cannot succeed on a retry: credentials, TLS, a refused
    /// configuration, access to the shell, a shell that does not exist. A quota is not: shells
    /// end (idle timeouts, other clients), and a retry opens.
    pub fn is_permanent(&self) -> bool {
        match self {
            WsmanFailure::Http(e) => e.is_permanent(),
            WsmanFailure::Soap(WsmanError::Fault(fault)) => matches!(
                **fault,
                Fault::AccessDenied(_) | Fault::ShellNotFound(_) | Fault::InvalidIdleTimeout(_)
            ),
            WsmanFailure::Soap(_) => false,
            WsmanFailure::IdleTimeoutTooShort(_) => true,
        }
    }

    /// The fault, when the server sent one.
    pub fn fault(&self) -> Option<&Fault> {
        match self {
            WsmanFailure::Soap(e) => e.fault(),
            _ => None,
        }
    }

    /// The fault's Windows error number.
    pub(crate) fn fault_code(&self) -> Option<u32> {
        self.fault().and_then(Fault::code)
    }

    /// A Receive's "nothing within the OperationTimeout": ask again.
    pub(crate) fn is_receive_timeout(&self) -> bool {
        matches!(self, WsmanFailure::Soap(e) if e.is_operation_timeout())
    }

    /// The request may not have reached the server, or its answer was lost on the way: what a
    /// robust connection's retransmission is for.
    pub(crate) fn is_connection_loss(&self) -> bool {
        matches!(
            self,
            WsmanFailure::Http(WsmanHttpError::ConnectionLost { .. } | WsmanHttpError::Timeout { .. })
        )
    }
}

impl From<WsmanHttpError> for WsmanFailure {
    fn from(error: WsmanHttpError) -> Self {
        WsmanFailure::Http(error)
    }
}

impl From<WsmanError> for WsmanFailure {
    fn from(error: WsmanError) -> Self {
        WsmanFailure::Soap(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsman::FaultDetail;

    fn fault(subcode: &str, code: u32) -> WsmanFailure {
        WsmanFailure::Soap(WsmanError::from(Fault::classify(FaultDetail {
            subcode: Some(subcode.into()),
            wsman_code: Some(code),
            ..FaultDetail::default()
        })))
    }

    #[test]
    fn reasons_and_permanence() {
        let cases = [
            (
                WsmanFailure::Http(WsmanHttpError::Unreachable {
                    addr: "h:5985".into(),
                    reason: "refused".into(),
                }),
                "HostUnreachable",
                false,
            ),
            (
                WsmanFailure::Http(WsmanHttpError::AuthFailed {
                    user: "u".into(),
                    scheme: "NTLM",
                    reason: "401".into(),
                }),
                "AuthFailed",
                true,
            ),
            (
                WsmanFailure::Http(WsmanHttpError::Tls {
                    addr: "h:5986".into(),
                    failure: crate::transport::wsman::TlsFailure::UntrustedCa,
                    reason: "x".into(),
                }),
                "TlsFailed",
                true,
            ),
            (
                WsmanFailure::Http(WsmanHttpError::Timeout {
                    after: Duration::from_secs(1),
                }),
                "OperationTimeout",
                false,
            ),
            (fault("QuotaLimit", 2_150_859_173), "QuotaExceeded", false),
            (fault("AccessDenied", 5), "AccessDenied", true),
            (fault("InvalidSelectors", 2_150_858_843), "ShellNotFound", true),
            (
                fault("InvalidParameter", 2_150_859_250),
                "InvalidIdleTimeout",
                true,
            ),
            (fault("TimedOut", 2_150_858_793), "OperationTimeout", false),
            (
                fault("InternalError", CODE_SHELL_DISCONNECTED),
                "ShellDisconnected",
                false,
            ),
            (
                fault("InternalError", CODE_OPERATION_ABORTED),
                "OperationAborted",
                false,
            ),
            (
                WsmanFailure::IdleTimeoutTooShort(Duration::from_secs(10)),
                "InvalidIdleTimeout",
                true,
            ),
            (
                WsmanFailure::Soap(WsmanError::Missing("s:Body")),
                "ProtocolError",
                false,
            ),
        ];
        for (failure, reason, permanent) in cases {
            assert_eq!(failure.reason(), reason, "{failure:?}");
            assert_eq!(failure.is_permanent(), permanent, "{failure:?}");
        }
    }
}

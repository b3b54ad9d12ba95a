//! Condition reasons: one vocabulary for status conditions, events and metric labels.
//!
//! The names are the ones DESIGN.md's table "Conditions and what GitOps tools see" uses, so a person
//! can search for the reason they see in `kubectl describe` and find it in the README's
//! troubleshooting table. The remoting client's own, finer reason (`psrp`'s `SessionError::reason`)
//! goes into the condition message.

use std::fmt;

use psrp::session::SessionError;

/// Why a PSSession or PSJob is where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    // PSSession
    /// The first reconcile: nothing is known yet.
    Pending,
    Opening,
    Opened,
    /// The network, sshd or the remote PowerShell did not answer; retried.
    HostUnreachable,
    /// WS-Management: the user has as many shells on the host as it allows (MaxShellsPerUser);
    /// retried, since one may be closed.
    QuotaExceeded,
    /// The server broke the protocol; retried.
    ProtocolError,
    SecretNotFound,
    /// The Secret exists but lacks a key or has the wrong type.
    SecretInvalid,
    AuthFailed,
    HostKeyRejected,
    /// The spec asks for something this operator or the server does not offer.
    Unsupported,
    /// Retries used up: PowerShell's final runspace state.
    Broken,
    IdleClosed,
    Disconnected,
    /// A new runspace replaced one whose state (variables, modules) is gone.
    StateLost,
    Closing,
    /// The object could not be read as a PSSession or PSJob (DeserializeGuard).
    InvalidObject,
    // PSJob
    Queued,
    SessionNotFound,
    Running,
    Completed,
    /// The script ended Failed (a terminating error).
    ScriptFailed,
    Stopped,
    DeadlineExceeded,
    SessionLost,
    InvalidParameters,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Pending => "Pending",
            Reason::Opening => "Opening",
            Reason::Opened => "Opened",
            Reason::HostUnreachable => "HostUnreachable",
            Reason::QuotaExceeded => "QuotaExceeded",
            Reason::ProtocolError => "ProtocolError",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretInvalid => "SecretInvalid",
            Reason::AuthFailed => "AuthFailed",
            Reason::HostKeyRejected => "HostKeyRejected",
            Reason::Unsupported => "Unsupported",
            Reason::Broken => "Broken",
            Reason::IdleClosed => "IdleClosed",
            Reason::Disconnected => "Disconnected",
            Reason::StateLost => "StateLost",
            Reason::Closing => "Closing",
            Reason::InvalidObject => "InvalidObject",
            Reason::Queued => "Queued",
            Reason::SessionNotFound => "SessionNotFound",
            Reason::Running => "Running",
            Reason::Completed => "Completed",
            Reason::ScriptFailed => "ScriptFailed",
            Reason::Stopped => "Stopped",
            Reason::DeadlineExceeded => "DeadlineExceeded",
            Reason::SessionLost => "SessionLost",
            Reason::InvalidParameters => "InvalidParameters",
        }
    }

    /// The reason a failed open or a lost connection shows.
    pub fn of_session_error(error: &SessionError) -> Reason {
        match error.reason() {
            "HostKeyUnknown" | "HostKeyChanged" | "HostKeyRevoked" | "KnownHostsInvalid" => {
                Reason::HostKeyRejected
            }
            // WS-Management: a user the host refuses the shell to fails as wrong credentials do.
            "AuthFailed" | "AccessDenied" => Reason::AuthFailed,
            "KeyInvalid" => Reason::SecretInvalid,
            // WS-Management: what the spec asks (TLS trust, Basic over HTTP, a scheme the server
            // lacks, an idle timeout out of range) cannot work as it is.
            "SubsystemRefused" | "TlsFailed" | "UnencryptedRefused" | "AuthUnsupported" | "InvalidConfig"
            | "InvalidIdleTimeout" => Reason::Unsupported,
            "QuotaExceeded" => Reason::QuotaExceeded,
            "ProtocolError" | "FramingError" => Reason::ProtocolError,
            _ => Reason::HostUnreachable,
        }
    }

    /// A failure that the same configuration cannot overcome: the session is Broken (Stalled) at
    /// once instead of retrying quickly.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            Reason::AuthFailed
                | Reason::HostKeyRejected
                | Reason::Unsupported
                | Reason::SecretInvalid
                | Reason::InvalidObject
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use psrp::transport::ssh::SshError;

    #[test]
    fn ssh_failures_map_to_the_design_reasons() {
        let unknown = SessionError::Transport(SshError::HostKeyUnknown {
            host: "h".into(),
            fingerprint: "f".into(),
        });
        assert_eq!(Reason::of_session_error(&unknown), Reason::HostKeyRejected);
        let auth = SessionError::Transport(SshError::AuthFailed {
            user: "u".into(),
            methods_tried: vec![],
            methods_allowed: vec![],
        });
        assert_eq!(Reason::of_session_error(&auth), Reason::AuthFailed);
        assert!(Reason::AuthFailed.is_permanent());
        assert_eq!(
            Reason::of_session_error(&SessionError::Transport(SshError::KeepaliveTimeout)),
            Reason::HostUnreachable
        );
        assert_eq!(
            Reason::of_session_error(&SessionError::ConnectionClosed),
            Reason::HostUnreachable
        );
        assert!(!Reason::HostUnreachable.is_permanent());
    }

    #[test]
    fn wsman_failures_map_to_the_design_reasons() {
        use psrp::{session::WsmanFailure, transport::wsman::WsmanHttpError};
        let http = |e| SessionError::Wsman(WsmanFailure::Http(e));
        let auth = http(WsmanHttpError::AuthFailed {
            user: "u".into(),
            scheme: "NTLM",
            reason: "401".into(),
        });
        assert_eq!(Reason::of_session_error(&auth), Reason::AuthFailed);
        let unreachable = http(WsmanHttpError::Unreachable {
            addr: "h:5985".into(),
            reason: "refused".into(),
        });
        assert_eq!(Reason::of_session_error(&unreachable), Reason::HostUnreachable);
        let basic = http(WsmanHttpError::UnencryptedRefused { scheme: "Basic" });
        assert_eq!(Reason::of_session_error(&basic), Reason::Unsupported);
        // A quota is retried, as DESIGN.md's table has it.
        let quota = SessionError::Wsman(WsmanFailure::Soap(psrp::wsman::WsmanError::from(
            psrp::wsman::Fault::QuotaLimit(psrp::wsman::FaultDetail::default()),
        )));
        assert_eq!(quota.reason(), "QuotaExceeded");
        assert!(!Reason::of_session_error(&quota).is_permanent());
    }
}

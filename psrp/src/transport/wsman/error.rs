//! The transport's error type.

use std::time::Duration;

use bytes::Bytes;

/// Why a TLS handshake failed, in the terms a user fixes it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server's chain does not lead to a trusted CA (the CA Secret, or the system roots).
    UntrustedCa,
    /// The certificate is not valid for the name connected to.
    NameMismatch,
    /// The certificate is expired or not yet valid.
    Expired,
    /// The server asked for a client certificate and did not accept ours (or we had none).
    ClientCertRejected,
    /// Anything else: protocol versions, cipher suites, a malformed certificate, a reset mid-handshake.
    Handshake,
}

impl TlsFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::UntrustedCa => "untrusted CA",
            TlsFailure::NameMismatch => "name mismatch",
            TlsFailure::Expired => "certificate expired or not yet valid",
            TlsFailure::ClientCertRejected => "client certificate rejected",
            TlsFailure::Handshake => "handshake failure",
        }
    }
}

/// Why a POST to `/wsman` failed. Each variant maps to one condition reason ([`Self::reason`]);
/// messages name hosts, users and schemes, never a password or key.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WsmanHttpError {
    /// The configuration cannot work (a Certificate without HTTPS, a PEM that does not parse).
    #[error("invalid WS-Management configuration: {reason}")]
    InvalidConfig { reason: String },
    /// DNS failure, connection refused, no route, or no TCP connection within the connect timeout.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The TLS handshake failed.
    #[error("TLS with {addr} failed ({}): {reason}", failure.as_str())]
    Tls {
        addr: String,
        failure: TlsFailure,
        reason: String,
    },
    /// The server answered 401 after a complete authentication exchange: wrong user or password,
    /// an account not allowed to log on, a certificate not mapped to a user.
    #[error("authentication of {user} with {scheme} failed: {reason}")]
    AuthFailed {
        user: String,
        scheme: &'static str,
        reason: String,
    },
    /// The server offers no scheme we can use for the configured one.
    #[error("the server does not offer {scheme} authentication; it offers {offered:?}")]
    AuthUnsupported {
        scheme: &'static str,
        offered: Vec<String>,
    },
    /// Basic authentication over plain HTTP without the explicit allowance: the password would go in
    /// clear text, so nothing is sent.
    #[error(
        "{scheme} authentication over plain HTTP sends the password in clear text; use HTTPS, \
         or allow unencrypted traffic explicitly"
    )]
    UnencryptedRefused { scheme: &'static str },
    /// An HTTP status that carries no SOAP envelope (a SOAP fault comes back as a response).
    #[error("HTTP status {status} from the server{}", body_excerpt(body))]
    HttpStatus { status: u16, body: Bytes },
    /// The response body is larger than the configured bound.
    #[error("the response body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// No complete response within the caller's bound; the connection is dropped.
    #[error("no response within {after:?}")]
    Timeout { after: Duration },
    /// The connection broke mid-request (reset, closed by the server without an answer).
    #[error("the connection to {addr} broke: {reason}")]
    ConnectionLost { addr: String, reason: String },
    /// Malformed data from the server: bad HTTP, encrypted framing that does not parse, a signature
    /// that does not verify.
    #[error("WS-Management HTTP protocol error: {reason}")]
    Protocol { reason: String },
}

fn body_excerpt(body: &Bytes) -> String {
    if body.is_empty() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    format!(": {}", text.trim())
}

impl WsmanHttpError {
    /// A stable CamelCase name for the variant: what condition reasons, events and metric labels use.
    pub fn reason(&self) -> &'static str {
        match self {
            WsmanHttpError::InvalidConfig { .. } => "InvalidConfig",
            WsmanHttpError::Unreachable { .. } => "Unreachable",
            WsmanHttpError::Tls { .. } => "TlsFailed",
            WsmanHttpError::AuthFailed { .. } => "AuthFailed",
            WsmanHttpError::AuthUnsupported { .. } => "AuthUnsupported",
            WsmanHttpError::UnencryptedRefused { .. } => "UnencryptedRefused",
            WsmanHttpError::HttpStatus { .. } => "HttpStatus",
            WsmanHttpError::BodyTooLarge { .. } => "BodyTooLarge",
            WsmanHttpError::Timeout { .. } => "Timeout",
            WsmanHttpError::ConnectionLost { .. } => "ConnectionLost",
            WsmanHttpError::Protocol { .. } => "ProtocolError",
        }
    }

    /// True when retrying with the same configuration cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            WsmanHttpError::InvalidConfig { .. }
                | WsmanHttpError::Tls { .. }
                | WsmanHttpError::AuthFailed { .. }
                | WsmanHttpError::AuthUnsupported { .. }
                | WsmanHttpError::UnencryptedRefused { .. }
        )
    }

    pub(crate) fn protocol(reason: impl Into<String>) -> Self {
        WsmanHttpError::Protocol {
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct() {
        let all = [
            WsmanHttpError::InvalidConfig {
                reason: String::new(),
            },
            WsmanHttpError::Unreachable {
                addr: String::new(),
                reason: String::new(),
            },
            WsmanHttpError::Tls {
                addr: String::new(),
                failure: TlsFailure::Handshake,
                reason: String::new(),
            },
            WsmanHttpError::AuthFailed {
                user: String::new(),
                scheme: "Basic",
                reason: String::new(),
            },
            WsmanHttpError::AuthUnsupported {
                scheme: "Basic",
                offered: vec![],
            },
            WsmanHttpError::UnencryptedRefused { scheme: "Basic" },
            WsmanHttpError::HttpStatus {
                status: 404,
                body: Bytes::new(),
            },
            WsmanHttpError::BodyTooLarge { limit: 1 },
            WsmanHttpError::Timeout {
                after: Duration::ZERO,
            },
            WsmanHttpError::ConnectionLost {
                addr: String::new(),
                reason: String::new(),
            },
            WsmanHttpError::protocol(""),
        ];
        let mut reasons: Vec<_> = all.iter().map(|e| e.reason()).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len());
    }

    #[test]
    fn status_message_shows_a_bounded_body_excerpt() {
        let e = WsmanHttpError::HttpStatus {
            status: 503,
            body: Bytes::from(vec![b'x'; 1000]),
        };
        let text = e.to_string();
        assert!(text.starts_with("HTTP status 503 from the server: xxx"), "{text}");
        assert!(text.len() < 260, "{}", text.len());
    }
}

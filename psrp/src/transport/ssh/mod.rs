//! The SSH transport: the `powershell` subsystem of an SSH server, as a byte stream.
//!
//! [`open_subsystem`] connects (TCP with `TCP_NODELAY`), checks the server's host key against
//! `known_hosts` data, authenticates with a password or a private key, and starts the subsystem; the
//! [`SshSubsystem`] it returns is a tokio `AsyncRead + AsyncWrite` over that channel. It knows nothing
//! of PSRP: the out-of-process framing runs on top of it.
//!
//! Built on russh (pure Rust, the `ring` backend, maintained, and the only SSH client crate here with
//! async channels as streams); this module adds what a controller needs around it: in-memory
//! known_hosts checking ([`KnownHosts`]), one deadline over connect, handshake, authentication and
//! subsystem, typed errors that never carry a secret, keepalive with a kernel-side bound on stalled
//! writes (`TCP_USER_TIMEOUT`), the reason a connection ended, and no task left behind when a future
//! or a stream is dropped.

mod connect;
mod known_hosts;
mod stream;

use std::{fmt, io, sync::Arc, time::Duration};

use russh::keys::{HashAlg, PrivateKey};

pub use connect::open_subsystem;
pub use known_hosts::KnownHosts;
pub use stream::{SshStatus, SshSubsystem};

/// Where and how to open the subsystem.
#[derive(Debug, Clone)]
pub struct SshConfig {
    /// DNS name or IP address; also the name looked up in `known_hosts`.
    pub host: String,
    pub port: u16,
    pub username: String,
    pub auth: SshAuth,
    pub host_key_policy: HostKeyPolicy,
    /// One bound over TCP connect, key exchange, authentication and the subsystem request.
    pub connect_timeout: Duration,
    /// Sends a keepalive when nothing came from the server for this long; `None`: never.
    pub keepalive_interval: Option<Duration>,
    /// The connection ends with [`SshError::KeepaliveTimeout`] after this many unanswered
    /// keepalives, i.e. about `keepalive_interval * (keepalive_max + 1)` after the server fell
    /// silent; 0 keeps sending keepalives but never gives up.
    pub keepalive_max: usize,
    /// The subsystem to start: `powershell` for PowerShell 7's `pwsh -sshs`.
    pub subsystem: String,
}

impl SshConfig {
    /// Port 22, a 30 s connect timeout, a keepalive every 15 s with 3 allowed to go unanswered (a
    /// silent server is noticed within about a minute), and the `powershell` subsystem.
    pub fn new(
        host: impl Into<String>,
        username: impl Into<String>,
        auth: SshAuth,
        policy: HostKeyPolicy,
    ) -> Self {
        Self {
            host: host.into(),
            port: 22,
            username: username.into(),
            auth,
            host_key_policy: policy,
            connect_timeout: Duration::from_secs(30),
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            subsystem: "powershell".to_owned(),
        }
    }

    /// `host:port` (IPv6 addresses bracketed), for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// How to authenticate. `Debug` shows no secret.
#[derive(Clone)]
pub enum SshAuth {
    Password(String),
    PrivateKey(SshKey),
}

impl fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SshAuth::Password(_) => f.write_str("Password(<redacted>)"),
            SshAuth::PrivateKey(key) => f.debug_tuple("PrivateKey").field(key).finish(),
        }
    }
}

/// A decoded private key (ed25519, ECDSA or RSA), cheap to clone. Decode it once per Secret
/// version: an encrypted OpenSSH key costs a bcrypt KDF (tens of milliseconds of CPU) to open.
#[derive(Clone)]
pub struct SshKey {
    key: Arc<PrivateKey>,
}

impl SshKey {
    /// Decodes a private key as a `kubernetes.io/ssh-auth` Secret holds it: OpenSSH
    /// (`BEGIN OPENSSH PRIVATE KEY`, possibly encrypted), PKCS#1 RSA, PKCS#8 (possibly encrypted)
    /// or SEC1 EC PEM text. The passphrase is used here and not kept.
    pub fn decode(text: &str, passphrase: Option<&str>) -> Result<Self, SshError> {
        let key = russh::keys::decode_secret_key(text, passphrase).map_err(|e| key_error(&e, passphrase))?;
        Ok(Self { key: Arc::new(key) })
    }

    /// The public half as an `authorized_keys` line (`ssh-ed25519 AAAA...`).
    pub fn public_key_openssh(&self) -> String {
        self.key.public_key().to_openssh().unwrap_or_default()
    }

    /// `SHA256:...` of the public key.
    pub fn fingerprint(&self) -> String {
        self.key.public_key().fingerprint(HashAlg::Sha256).to_string()
    }

    pub(crate) fn inner(&self) -> &Arc<PrivateKey> {
        &self.key
    }
}

impl fmt::Debug for SshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SshKey({} {})",
            self.key.algorithm().as_str(),
            self.fingerprint()
        )
    }
}

/// A message for a key that does not decode, with no key material and no passphrase in it.
fn key_error(error: &russh::keys::Error, passphrase: Option<&str>) -> SshError {
    use russh::keys::Error as E;
    let reason = match error {
        E::KeyIsEncrypted => "the key is encrypted and no passphrase was given".to_owned(),
        E::UnsupportedKeyType { key_type_string, .. } => format!("unsupported key type {key_type_string}"),
        E::CouldNotReadKey => "not a private key in OpenSSH, PKCS#1, PKCS#8 or SEC1 PEM form".to_owned(),
        // Wrong passphrases show up as decryption or padding failures.
        E::SshKey(_) | E::Pad(_) | E::Unpad(_) | E::KeyIsCorrupt | E::Pkcs8(_) | E::Der(_)
            if passphrase.is_some() =>
        {
            "the key cannot be decrypted: wrong passphrase, or a corrupt key".to_owned()
        }
        other => format!("the key cannot be read: {other}"),
    };
    SshError::KeyInvalid { reason }
}

/// How the server's host key is checked.
#[derive(Debug, Clone)]
pub enum HostKeyPolicy {
    /// Accept only a key that `known_hosts` holds for the host (see [`KnownHosts`]).
    KnownHosts(KnownHosts),
    /// Accept any key: no protection against a man in the middle. Only on explicit request.
    AcceptAny,
}

impl HostKeyPolicy {
    /// Parses `known_hosts` text (a Secret's `known_hosts` key).
    pub fn known_hosts(text: &str) -> Self {
        HostKeyPolicy::KnownHosts(KnownHosts::parse(text))
    }
}

/// Why a connection could not be opened, or why it ended. Messages name hosts, users, methods and
/// key fingerprints, never a password, passphrase or key.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: Arc<io::Error> },
    /// Refused, unreachable, no route.
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: Arc<io::Error> },
    #[error(
        "no SSH session with {addr} within {timeout:?} (TCP connect, key exchange, authentication, subsystem)"
    )]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("the host key of {host} ({fingerprint}) is not in known_hosts")]
    HostKeyUnknown { host: String, fingerprint: String },
    #[error(
        "the host key of {host} ({fingerprint}) does not match known_hosts: the host key changed, \
         or someone is intercepting the connection"
    )]
    HostKeyChanged { host: String, fingerprint: String },
    #[error("the host key of {host} ({fingerprint}) is marked @revoked in known_hosts")]
    HostKeyRevoked { host: String, fingerprint: String },
    #[error("known_hosts line {line}, which names {host}, is invalid: {reason}")]
    KnownHostsInvalid {
        host: String,
        line: usize,
        reason: String,
    },
    #[error(
        "authentication of user {user} failed with {methods_tried:?}; the server accepts {methods_allowed:?}"
    )]
    AuthFailed {
        user: String,
        methods_tried: Vec<String>,
        methods_allowed: Vec<String>,
    },
    #[error("invalid private key: {reason}")]
    KeyInvalid { reason: String },
    #[error("the server refused the {subsystem} subsystem: {reason}")]
    SubsystemRefused { subsystem: String, reason: String },
    #[error("the SSH connection ended: {reason}")]
    Disconnected { reason: String },
    #[error("the server stopped answering: the connection is considered dead")]
    KeepaliveTimeout,
    #[error("SSH protocol error: {message}")]
    Protocol { message: String },
}

impl SshError {
    /// A stable CamelCase name for the variant: what condition reasons, events and metric labels use.
    pub fn reason(&self) -> &'static str {
        match self {
            SshError::Resolve { .. } => "ResolveFailed",
            SshError::Connect { .. } => "ConnectFailed",
            SshError::ConnectTimeout { .. } => "ConnectTimeout",
            SshError::HostKeyUnknown { .. } => "HostKeyUnknown",
            SshError::HostKeyChanged { .. } => "HostKeyChanged",
            SshError::HostKeyRevoked { .. } => "HostKeyRevoked",
            SshError::KnownHostsInvalid { .. } => "KnownHostsInvalid",
            SshError::AuthFailed { .. } => "AuthFailed",
            SshError::KeyInvalid { .. } => "KeyInvalid",
            SshError::SubsystemRefused { .. } => "SubsystemRefused",
            SshError::Disconnected { .. } => "Disconnected",
            SshError::KeepaliveTimeout => "KeepaliveTimeout",
            SshError::Protocol { .. } => "ProtocolError",
        }
    }

    /// True when retrying with the same configuration cannot help: host key, credentials, key,
    /// subsystem. Network and protocol failures are worth retrying.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SshError::HostKeyUnknown { .. }
                | SshError::HostKeyChanged { .. }
                | SshError::HostKeyRevoked { .. }
                | SshError::KnownHostsInvalid { .. }
                | SshError::AuthFailed { .. }
                | SshError::KeyInvalid { .. }
                | SshError::SubsystemRefused { .. }
        )
    }

    /// The `SshError` inside an `io::Error` that a [`SshSubsystem`] read or write returned.
    pub fn from_io(error: &io::Error) -> Option<&SshError> {
        error.get_ref()?.downcast_ref::<SshError>()
    }

    pub(crate) fn into_io(self) -> io::Error {
        let kind = match &self {
            SshError::KeepaliveTimeout => io::ErrorKind::TimedOut,
            SshError::Protocol { .. } => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::ConnectionAborted,
        };
        io::Error::new(kind, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let auth = SshAuth::Password("hunter2".to_owned());
        assert!(!format!("{auth:?}").contains("hunter2"));
        let config = SshConfig::new("h", "u", auth, HostKeyPolicy::AcceptAny);
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn key_errors_name_no_secret() {
        let garbage = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0\n-----END OPENSSH PRIVATE KEY-----\n";
        let e = SshKey::decode(garbage, Some("pass-phrase-xyz")).unwrap_err();
        assert_eq!(e.reason(), "KeyInvalid");
        assert!(!e.to_string().contains("pass-phrase-xyz"));
        let e = SshKey::decode("nonsense", None).unwrap_err();
        assert!(e.to_string().contains("not a private key"), "{e}");
    }

    #[test]
    fn io_round_trip() {
        let e = SshError::KeepaliveTimeout.into_io();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(matches!(SshError::from_io(&e), Some(SshError::KeepaliveTimeout)));
    }
}

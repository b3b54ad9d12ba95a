//! From a PSSession's spec and the Secrets it names to what the remoting client needs.
//!
//! Secret values live only in the returned [`SshConfig`] (whose `Debug` redacts them); errors name
//! Secrets and keys, never their contents.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use psrp::{
    session::{SessionOptions, WsmanSessionConfig},
    transport::{
        ssh::{HostKeyPolicy, SshAuth, SshConfig, SshKey},
        wsman::{ClientCertificate, Credentials, TlsOptions, WsmanAuth, WsmanConfig},
    },
    wsman::BufferMode,
};
use thiserror::Error;

use crate::{
    api::{Authentication, OutputBufferingMode, PSSessionSpec, Transport},
    reason::Reason,
};

/// New-PSSessionOption's OpenTimeout and OperationTimeout defaults.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

/// Why a session's configuration cannot be built.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum CredentialsError {
    #[error("Secret {name} does not exist in the session's namespace")]
    SecretNotFound { name: String },
    #[error("Secret {name} cannot be used: {problem}")]
    SecretInvalid { name: String, problem: String },
    #[error("{0}")]
    Unsupported(String),
}

impl CredentialsError {
    pub fn reason(&self) -> Reason {
        match self {
            CredentialsError::SecretNotFound { .. } => Reason::SecretNotFound,
            CredentialsError::SecretInvalid { .. } => Reason::SecretInvalid,
            CredentialsError::Unsupported(_) => Reason::Unsupported,
        }
    }

    fn invalid(secret: &Secret, problem: impl Into<String>) -> Self {
        CredentialsError::SecretInvalid {
            name: secret.metadata.name.clone().unwrap_or_default(),
            problem: problem.into(),
        }
    }
}

/// A Secret's key as UTF-8 text (trailing newlines kept: they matter to nobody here).
fn text<'a>(secret: &'a Secret, key: &str) -> Result<Option<&'a str>, CredentialsError> {
    match secret.data.as_ref().and_then(|d| d.get(key)) {
        None => Ok(None),
        Some(bytes) => std::str::from_utf8(&bytes.0)
            .map(Some)
            .map_err(|_| CredentialsError::invalid(secret, format!("key {key} is not UTF-8 text"))),
    }
}

fn required<'a>(secret: &'a Secret, key: &str, for_what: &str) -> Result<&'a str, CredentialsError> {
    match text(secret, key)? {
        Some(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(CredentialsError::invalid(
            secret,
            format!("{for_what} needs the key {key}"),
        )),
    }
}

/// The SSH connection of a session whose transport is SSH. Decoding an encrypted key is slow
/// (bcrypt): call it off the async workers.
pub fn ssh_config(
    spec: &PSSessionSpec,
    credentials: &Secret,
    known_hosts: Option<&Secret>,
) -> Result<SshConfig, CredentialsError> {
    if spec.transport != Transport::Ssh {
        return Err(CredentialsError::Unsupported(
            "an SSH configuration for a session whose transport is not SSH".into(),
        ));
    }
    let username = required(credentials, "username", "SSH authentication")?
        .trim()
        .to_owned();
    let auth = match spec.authentication.unwrap_or(Authentication::PublicKey) {
        Authentication::Password => SshAuth::Password(
            required(
                credentials,
                "password",
                "Password authentication (a kubernetes.io/basic-auth Secret)",
            )?
            .to_owned(),
        ),
        Authentication::PublicKey => {
            let key = required(
                credentials,
                "ssh-privatekey",
                "PublicKey authentication (a kubernetes.io/ssh-auth Secret)",
            )?;
            let passphrase = text(credentials, "passphrase")?.filter(|p| !p.is_empty());
            let key = SshKey::decode(key, passphrase)
                .map_err(|e| CredentialsError::invalid(credentials, format!("ssh-privatekey: {e}")))?;
            SshAuth::PrivateKey(key)
        }
        other => {
            return Err(CredentialsError::Unsupported(format!(
                "authentication {other:?} does not apply to the SSH transport"
            )));
        }
    };
    let policy = match (known_hosts, spec.skip_host_key_check.unwrap_or(false)) {
        (_, true) => HostKeyPolicy::AcceptAny,
        (Some(secret), false) => {
            HostKeyPolicy::known_hosts(required(secret, "known_hosts", "host key checking")?)
        }
        (None, false) => {
            return Err(CredentialsError::Unsupported(
                "an SSH session needs knownHostsSecretRef, unless skipHostKeyCheck: true".into(),
            ));
        }
    };
    let mut config = SshConfig::new(spec.computer_name.clone(), username, auth, policy);
    if let Some(port) = spec.port.and_then(|p| u16::try_from(p).ok()) {
        config.port = port;
    }
    config.connect_timeout = open_timeout(spec);
    Ok(config)
}

/// The WS-Management connection of a session whose transport is WSMan: where, how to
/// authenticate (a `kubernetes.io/basic-auth` Secret, or `kubernetes.io/tls` for Certificate) and
/// which CA to trust (`ca.crt` of `caSecretRef`).
pub fn wsman_config(
    spec: &PSSessionSpec,
    credentials: &Secret,
    ca: Option<&Secret>,
) -> Result<WsmanConfig, CredentialsError> {
    if spec.transport != Transport::WSMan {
        return Err(CredentialsError::Unsupported(
            "a WS-Management configuration for a session whose transport is not WSMan".into(),
        ));
    }
    let user_and_password = |what: &str| -> Result<Credentials, CredentialsError> {
        let username = required(credentials, "username", what)?.trim().to_owned();
        let password = required(credentials, "password", what)?;
        Ok(Credentials::new(username, password))
    };
    let auth = match spec.authentication.unwrap_or(Authentication::Negotiate) {
        Authentication::Basic => WsmanAuth::Basic(user_and_password(
            "Basic authentication (a kubernetes.io/basic-auth Secret)",
        )?),
        Authentication::Ntlm => WsmanAuth::Ntlm(user_and_password(
            "NTLM authentication (a kubernetes.io/basic-auth Secret)",
        )?),
        Authentication::Negotiate => WsmanAuth::Negotiate {
            credentials: user_and_password("Negotiate authentication (a kubernetes.io/basic-auth Secret)")?,
            kdc: None,
        },
        Authentication::Kerberos => WsmanAuth::Kerberos {
            credentials: user_and_password("Kerberos authentication (a kubernetes.io/basic-auth Secret)")?,
            kdc: None,
        },
        Authentication::Certificate => {
            let what = "Certificate authentication (a kubernetes.io/tls Secret)";
            let cert = required(credentials, "tls.crt", what)?;
            let key = required(credentials, "tls.key", what)?;
            let certificate = ClientCertificate::from_pem(cert.as_bytes(), key.as_bytes())
                .map_err(|e| CredentialsError::invalid(credentials, e.to_string()))?;
            WsmanAuth::Certificate(certificate)
        }
        other => {
            return Err(CredentialsError::Unsupported(format!(
                "authentication {other:?} does not apply to the WSMan transport"
            )));
        }
    };
    let mut config = WsmanConfig::new(spec.computer_name.clone(), auth);
    if spec.use_ssl.unwrap_or(false) {
        config = config.https();
    }
    if let Some(port) = spec.port.and_then(|p| u16::try_from(p).ok()) {
        config.port = port;
    }
    config.allow_unencrypted = spec.allow_unencrypted.unwrap_or(false);
    config.tls = TlsOptions {
        ca_pem: ca
            .map(|secret| required(secret, "ca.crt", "a CA bundle").map(|pem| pem.as_bytes().to_vec()))
            .transpose()?,
        skip_ca_check: spec.skip_ca_check.unwrap_or(false),
        skip_cn_check: spec.skip_cn_check.unwrap_or(false),
        ..TlsOptions::default()
    };
    config.connect_timeout = open_timeout(spec);
    Ok(config)
}

/// The whole WSMan target: [`wsman_config`] plus the endpoint, the idle timeout the server is
/// told (raised to its 60 s minimum by the client), the output buffering mode, and the
/// `wsmv:SessionId`, kept across opens and restarts (`session_id`, from status) because Reconnect
/// is only for the client session that disconnected.
pub fn wsman_session(
    spec: &PSSessionSpec,
    credentials: &Secret,
    ca: Option<&Secret>,
    session_id: Option<uuid::Uuid>,
) -> Result<WsmanSessionConfig, CredentialsError> {
    let mut session = WsmanSessionConfig::new(wsman_config(spec, credentials, ca)?);
    if let Some(name) = &spec.configuration_name {
        session.configuration_name = name.clone();
    }
    session.idle_timeout = spec.idle_timeout.map(Duration::from);
    session.buffer_mode = match spec.output_buffering_mode.unwrap_or_default() {
        OutputBufferingMode::Block => BufferMode::Block,
        OutputBufferingMode::Drop => BufferMode::Drop,
    };
    session.session_id = Some(session_id.unwrap_or_else(uuid::Uuid::new_v4));
    Ok(session)
}

pub fn open_timeout(spec: &PSSessionSpec) -> Duration {
    spec.open_timeout.map(Duration::from).unwrap_or(DEFAULT_TIMEOUT)
}

pub fn session_options(spec: &PSSessionSpec) -> SessionOptions {
    SessionOptions {
        open_timeout: open_timeout(spec),
        operation_timeout: spec
            .operation_timeout
            .map(Duration::from)
            .unwrap_or(DEFAULT_TIMEOUT),
        ..SessionOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(name: &str, pairs: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    fn ssh_spec(auth: &str) -> PSSessionSpec {
        serde_json::from_value(serde_json::json!({
            "computerName": "10.0.0.5", "transport": "SSH", "authentication": auth, "port": 2222,
            "credentialsSecretRef": {"name": "creds"}, "knownHostsSecretRef": {"name": "kh"},
            "openTimeout": "20s",
        }))
        .expect("spec parses")
    }

    fn wsman_spec(extra: serde_json::Value) -> PSSessionSpec {
        let mut spec = serde_json::json!({
            "computerName": "web01.corp.example.com", "transport": "WSMan",
            "credentialsSecretRef": {"name": "creds"},
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(spec).expect("spec parses")
    }

    #[test]
    fn wsman_defaults_to_negotiate_over_http_5985() {
        let creds = secret(
            "creds",
            &[("username", "CORP\\ops\n"), ("password", "s3cret-value")],
        );
        let config = wsman_config(&wsman_spec(serde_json::json!({})), &creds, None).expect("config");
        assert_eq!(config.auth.scheme(), "Negotiate");
        assert_eq!(config.auth.user(), "CORP\\ops");
        assert_eq!(
            (config.port, config.use_ssl, config.allow_unencrypted),
            (5985, false, false)
        );
        assert!(!format!("{config:?}").contains("s3cret-value"));
    }

    #[test]
    fn wsman_https_port_ca_and_skips_follow_the_spec() {
        let creds = secret("creds", &[("username", "ops"), ("password", "pw")]);
        let ca = secret(
            "ca",
            &[(
                "ca.crt",
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            )],
        );
        let spec = wsman_spec(serde_json::json!({
            "authentication": "Basic", "useSSL": true, "caSecretRef": {"name": "ca"},
            "skipCNCheck": true, "openTimeout": "15s",
        }));
        let config = wsman_config(&spec, &creds, Some(&ca)).expect("config");
        assert_eq!((config.port, config.use_ssl), (5986, true));
        assert_eq!(config.auth.scheme(), "Basic");
        assert!(config.tls.ca_pem.is_some() && config.tls.skip_cn_check && !config.tls.skip_ca_check);
        assert_eq!(config.connect_timeout, Duration::from_secs(15));

        let spec =
            wsman_spec(serde_json::json!({"authentication": "NTLM", "port": 8985, "allowUnencrypted": true}));
        let config = wsman_config(&spec, &creds, None).expect("config");
        assert_eq!((config.port, config.allow_unencrypted), (8985, true));
    }

    #[test]
    fn wsman_secrets_missing_keys_or_bad_pem_are_secret_invalid() {
        let creds = secret("creds", &[("username", "ops")]);
        let err = wsman_config(&wsman_spec(serde_json::json!({})), &creds, None).expect_err("no password");
        assert_eq!(err.reason(), Reason::SecretInvalid);
        assert!(err.to_string().contains("password"), "{err}");

        let tls = secret(
            "creds",
            &[("tls.crt", "not a certificate"), ("tls.key", "not a key-XYZ")],
        );
        let spec = wsman_spec(serde_json::json!({"authentication": "Certificate", "useSSL": true}));
        let err = wsman_config(&spec, &tls, None).expect_err("bad PEM");
        assert_eq!(err.reason(), Reason::SecretInvalid);
        assert!(!err.to_string().contains("not a key-XYZ"), "{err}");

        let creds = secret("creds", &[("username", "ops"), ("password", "pw")]);
        let spec = wsman_spec(serde_json::json!({"authentication": "Password"}));
        let err = wsman_config(&spec, &creds, None).expect_err("SSH auth on WSMan");
        assert_eq!(err.reason(), Reason::Unsupported);
    }

    #[test]
    fn password_secret_builds_a_config_without_showing_the_password() {
        let creds = secret("creds", &[("username", "ops\n"), ("password", "s3cret-value")]);
        let kh = secret("kh", &[("known_hosts", "[10.0.0.5]:2222 ssh-ed25519 AAAA\n")]);
        let config = ssh_config(&ssh_spec("Password"), &creds, Some(&kh)).expect("config");
        assert_eq!(config.username, "ops");
        assert_eq!(config.port, 2222);
        assert_eq!(config.connect_timeout, Duration::from_secs(20));
        assert!(!format!("{config:?}").contains("s3cret-value"));
    }

    #[test]
    fn missing_keys_and_bad_keys_name_the_secret_not_the_value() {
        let creds = secret("creds", &[("username", "ops")]);
        let kh = secret("kh", &[("known_hosts", "x")]);
        let err = ssh_config(&ssh_spec("Password"), &creds, Some(&kh)).expect_err("no password");
        assert_eq!(err.reason(), Reason::SecretInvalid);
        assert!(err.to_string().contains("password"), "{err}");

        let creds = secret(
            "creds",
            &[("username", "ops"), ("ssh-privatekey", "not-a-key-XYZ")],
        );
        let err = ssh_config(&ssh_spec("PublicKey"), &creds, Some(&kh)).expect_err("bad key");
        assert_eq!(err.reason(), Reason::SecretInvalid);
        assert!(!err.to_string().contains("not-a-key-XYZ"), "{err}");
    }

    #[test]
    fn each_transport_builds_only_its_own_configuration() {
        let spec: PSSessionSpec = serde_json::from_value(serde_json::json!({
            "computerName": "web01", "credentialsSecretRef": {"name": "creds"},
        }))
        .expect("spec parses");
        let creds = secret("creds", &[("username", "u"), ("password", "p")]);
        let err = ssh_config(&spec, &creds, None).expect_err("wsman");
        assert_eq!(err.reason(), Reason::Unsupported);
        let err = wsman_config(&ssh_spec("Password"), &creds, None).expect_err("ssh");
        assert_eq!(err.reason(), Reason::Unsupported);
        let session_id = uuid::Uuid::new_v4();
        let wsman = wsman_session(&spec, &creds, None, Some(session_id)).expect("wsman");
        assert_eq!(wsman.session_id, Some(session_id), "kept across opens");
        assert_eq!(wsman.configuration_name, "Microsoft.PowerShell");
    }
}

//! Credentials and the connection-level security context (NTLM through sspi; Negotiate/Kerberos
//! behind the `kerberos` feature): the HTTP authentication tokens and message sealing.

use std::fmt;

use sspi::{
    AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, DataRepresentation, EncryptionFlags,
    SecurityBuffer, SecurityBufferRef, SecurityStatus, Sspi, SspiImpl, Username,
};
use zeroize::Zeroizing;

use super::WsmanHttpError;

/// A password. `Debug` prints `<redacted>`; the bytes are wiped when the last copy is dropped.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Self(Zeroizing::new(password.into()))
    }

    pub(super) fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Password {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Password {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A user name (`user`, `DOMAIN\user` or `user@REALM`) and password: a `kubernetes.io/basic-auth`
/// Secret.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: Password,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<Password>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }
}

/// The HTTP scheme name NTLM tokens travel under. WinRM offers `Negotiate` (and `Kerberos`,
/// `Basic`); a raw NTLM token inside `Negotiate` is what Windows' SPNEGO acceptor takes, and what
/// pypsrp sends.
pub(super) const NEGOTIATE: &str = "Negotiate";

/// Mechanisms a connection can be authenticated with.
pub(super) enum Mechanism {
    Ntlm(Box<sspi::Ntlm>, Box<Option<sspi::AuthIdentityBuffers>>),
    #[cfg(feature = "kerberos")]
    Negotiate(Box<sspi::Negotiate>, Box<Option<sspi::CredentialsBuffers>>),
    #[cfg(feature = "kerberos")]
    Kerberos(Box<sspi::Kerberos>, Box<Option<sspi::CredentialsBuffers>>),
}

/// One connection's security context: built per connection, because NTLM authenticates a
/// connection, and used for sealing every message on it afterwards.
pub(super) struct SecurityContext {
    mechanism: Mechanism,
    target: String,
    complete: bool,
    /// SEC_CHANNEL_BINDINGS with the TLS channel's `tls-server-end-point` data (HTTPS only).
    channel_bindings: Option<Vec<u8>>,
    /// The session-encryption protocol named in the multipart framing.
    pub(super) protocol: &'static str,
}

fn sspi_error(user: &str, scheme: &'static str, error: sspi::Error) -> WsmanHttpError {
    // sspi's messages describe the failing step, never credential bytes.
    WsmanHttpError::AuthFailed {
        user: user.to_owned(),
        scheme,
        reason: error.to_string(),
    }
}

fn identity(credentials: &Credentials) -> Result<AuthIdentity, WsmanHttpError> {
    let username = Username::parse(&credentials.username).map_err(|e| WsmanHttpError::InvalidConfig {
        reason: format!("the user name {:?} is not valid: {e}", credentials.username),
    })?;
    Ok(AuthIdentity {
        username,
        password: credentials.password.expose().to_owned().into(),
    })
}

impl SecurityContext {
    /// An NTLM client context for `HTTP/<host>`.
    pub(super) fn ntlm(credentials: &Credentials, host: &str) -> Result<Self, WsmanHttpError> {
        let identity = identity(credentials)?;
        let mut ntlm = sspi::Ntlm::new();
        let handle = ntlm
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Outbound)
            .with_auth_data(&identity)
            .execute(&mut ntlm)
            .map_err(|e| sspi_error(&credentials.username, "NTLM", e))?
            .credentials_handle;
        Ok(Self {
            mechanism: Mechanism::Ntlm(Box::new(ntlm), Box::new(handle)),
            target: format!("HTTP/{host}"),
            complete: false,
            channel_bindings: None,
            protocol: super::encryption::PROTOCOL_SPNEGO,
        })
    }

    #[cfg(feature = "kerberos")]
    pub(super) fn negotiate(
        credentials: &Credentials,
        host: &str,
        kerberos_only: bool,
        kdc: Option<&str>,
    ) -> Result<Self, WsmanHttpError> {
        super::kerberos::context(credentials, host, kerberos_only, kdc)
            .map(|(mechanism, protocol)| Self::from_parts(mechanism, host, protocol))
    }

    #[cfg(feature = "kerberos")]
    pub(super) fn from_parts(mechanism: Mechanism, host: &str, protocol: &'static str) -> Self {
        Self {
            mechanism,
            target: format!("HTTP/{host}"),
            complete: false,
            channel_bindings: None,
            protocol,
        }
    }

    /// Binds the authentication to the TLS channel: `application_data` is
    /// `tls-server-end-point:<hash>`, laid out as Windows' SEC_CHANNEL_BINDINGS (no addresses).
    pub(super) fn bind_channel(&mut self, application_data: &[u8]) {
        let mut bindings = vec![0u8; 32];
        // The application data's length and offset are the last two fields of the header.
        bindings[24..28].copy_from_slice(&(application_data.len() as u32).to_le_bytes());
        bindings[28..32].copy_from_slice(&32u32.to_le_bytes());
        bindings.extend_from_slice(application_data);
        self.channel_bindings = Some(bindings);
    }

    pub(super) fn is_complete(&self) -> bool {
        self.complete
    }

    /// One step of the exchange: the server's token in (none for the first), ours out (possibly
    /// empty once complete).
    pub(super) async fn step(&mut self, input: Option<&[u8]>) -> Result<Vec<u8>, sspi::Error> {
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        // The channel binding goes with every leg: Kerberos builds its AP-REQ on the first, NTLM
        // its AUTHENTICATE on the second.
        let mut buffers = Vec::new();
        if let Some(token) = input {
            buffers.push(SecurityBuffer::new(token.to_vec(), BufferType::Token));
        }
        if let Some(bindings) = &self.channel_bindings {
            buffers.push(SecurityBuffer::new(bindings.clone(), BufferType::ChannelBindings));
        }
        let mut input = (!buffers.is_empty()).then_some(buffers);
        let flags = ClientRequestFlags::CONFIDENTIALITY
            | ClientRequestFlags::INTEGRITY
            | ClientRequestFlags::MUTUAL_AUTH
            | ClientRequestFlags::ALLOCATE_MEMORY;
        let status = match &mut self.mechanism {
            Mechanism::Ntlm(ntlm, handle) => {
                let mut builder = ntlm
                    .initialize_security_context()
                    .with_credentials_handle(handle.as_mut())
                    .with_context_requirements(flags)
                    .with_target_data_representation(DataRepresentation::Native)
                    .with_target_name(&self.target)
                    .with_output(&mut output);
                if let Some(input) = input.as_mut() {
                    builder = builder.with_input(input);
                }
                let result = ntlm
                    .initialize_security_context_impl(&mut builder)?
                    .resolve_to_result()?;
                if matches!(
                    result.status,
                    SecurityStatus::CompleteAndContinue | SecurityStatus::CompleteNeeded
                ) {
                    ntlm.complete_auth_token(&mut output)?;
                }
                result.status
            }
            #[cfg(feature = "kerberos")]
            Mechanism::Negotiate(negotiate, handle) => {
                super::kerberos::step(
                    negotiate.as_mut(),
                    handle.as_mut(),
                    &self.target,
                    flags,
                    input,
                    &mut output,
                )
                .await?
            }
            #[cfg(feature = "kerberos")]
            Mechanism::Kerberos(kerberos, handle) => {
                super::kerberos::step(
                    kerberos.as_mut(),
                    handle.as_mut(),
                    &self.target,
                    flags,
                    input,
                    &mut output,
                )
                .await?
            }
        };
        self.complete = !matches!(
            status,
            SecurityStatus::ContinueNeeded | SecurityStatus::CompleteAndContinue
        );
        Ok(std::mem::take(&mut output[0].buffer))
    }

    /// Seals a message: `(signature or GSS wrap header, sealed bytes)`.
    pub(super) fn wrap(&mut self, plaintext: &[u8]) -> Result<(Vec<u8>, Vec<u8>), sspi::Error> {
        match &mut self.mechanism {
            Mechanism::Ntlm(ntlm, _) => wrap(ntlm.as_mut(), plaintext),
            #[cfg(feature = "kerberos")]
            Mechanism::Negotiate(negotiate, _) => wrap(negotiate.as_mut(), plaintext),
            #[cfg(feature = "kerberos")]
            Mechanism::Kerberos(kerberos, _) => wrap(kerberos.as_mut(), plaintext),
        }
    }

    /// Unseals a message and checks its signature.
    pub(super) fn unwrap(&mut self, signature: &[u8], sealed: &[u8]) -> Result<Vec<u8>, sspi::Error> {
        match &mut self.mechanism {
            Mechanism::Ntlm(ntlm, _) => unwrap(ntlm.as_mut(), signature, sealed),
            #[cfg(feature = "kerberos")]
            Mechanism::Negotiate(negotiate, _) => unwrap(negotiate.as_mut(), signature, sealed),
            #[cfg(feature = "kerberos")]
            Mechanism::Kerberos(kerberos, _) => unwrap(kerberos.as_mut(), signature, sealed),
        }
    }
}

fn wrap<S: Sspi>(sspi: &mut S, plaintext: &[u8]) -> Result<(Vec<u8>, Vec<u8>), sspi::Error> {
    let trailer = sspi.query_context_sizes()?.security_trailer as usize;
    let mut token = vec![0u8; trailer];
    let mut data = plaintext.to_vec();
    let (token_len, data_len) = {
        let mut buffers = [
            SecurityBufferRef::token_buf(&mut token),
            SecurityBufferRef::data_buf(&mut data),
        ];
        sspi.encrypt_message(EncryptionFlags::empty(), &mut buffers)?;
        (buffers[0].data().len(), buffers[1].data().len())
    };
    token.truncate(token_len);
    data.truncate(data_len);
    Ok((token, data))
}

fn unwrap<S: Sspi>(sspi: &mut S, signature: &[u8], sealed: &[u8]) -> Result<Vec<u8>, sspi::Error> {
    let mut token = signature.to_vec();
    let mut data = sealed.to_vec();
    let mut buffers = [
        SecurityBufferRef::token_buf(&mut token),
        SecurityBufferRef::data_buf(&mut data),
    ];
    sspi.decrypt_message(&mut buffers)?;
    Ok(buffers[1].data().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_debug_is_redacted() {
        let credentials = Credentials::new("DOM\\user", "hunter2-secret");
        let debug = format!("{credentials:?}");
        assert!(debug.contains("DOM\\\\user"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    /// sspi's own NTLM acceptor against our initiator: the exchange completes and sealed messages
    /// go both ways through `wrap`/`unwrap`. (The third-party check, pyspnego, is in
    /// tests/wsman_http.rs.)
    #[tokio::test]
    async fn ntlm_handshake_and_sealing_against_sspi_acceptor() {
        let credentials = Credentials::new("alice", "Secr3t!");
        let mut client = SecurityContext::ntlm(&credentials, "host").unwrap();

        let mut server = sspi::Ntlm::new();
        let identity = identity(&credentials).unwrap();
        let mut server_handle = server
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Inbound)
            .with_auth_data(&identity)
            .execute(&mut server)
            .unwrap()
            .credentials_handle;

        let mut token = client.step(None).await.unwrap();
        for _ in 0..3 {
            let mut input = vec![SecurityBuffer::new(token.clone(), BufferType::Token)];
            let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
            let builder = server
                .accept_security_context()
                .with_credentials_handle(&mut server_handle)
                .with_context_requirements(sspi::ServerRequestFlags::ALLOCATE_MEMORY)
                .with_target_data_representation(DataRepresentation::Native)
                .with_input(&mut input)
                .with_output(&mut output);
            let result = server
                .accept_security_context_impl(builder)
                .unwrap()
                .resolve_to_result()
                .unwrap();
            if matches!(
                result.status,
                SecurityStatus::CompleteAndContinue | SecurityStatus::CompleteNeeded
            ) {
                server.complete_auth_token(&mut output).unwrap();
                break;
            }
            token = client.step(Some(&output[0].buffer)).await.unwrap();
        }
        assert!(client.is_complete());

        for message in [&b"<s:Envelope>one</s:Envelope>"[..], b"two", b""] {
            let (signature, sealed) = client.wrap(message).unwrap();
            assert_eq!(signature.len(), 16);
            assert_eq!(sealed.len(), message.len());
            if !message.is_empty() {
                assert_ne!(sealed, message);
            }
            let mut sig = signature.clone();
            let mut data = sealed.clone();
            let mut buffers = [
                SecurityBufferRef::token_buf(&mut sig),
                SecurityBufferRef::data_buf(&mut data),
            ];
            server.decrypt_message(&mut buffers).unwrap();
            assert_eq!(buffers[1].data(), message);

            let mut sig = vec![0u8; 16];
            let mut data = message.to_vec();
            let mut buffers = [
                SecurityBufferRef::token_buf(&mut sig),
                SecurityBufferRef::data_buf(&mut data),
            ];
            server
                .encrypt_message(EncryptionFlags::empty(), &mut buffers)
                .unwrap();
            assert_eq!(client.unwrap(&sig, &data).unwrap(), message);
        }

        // A tampered message does not verify.
        let (signature, mut sealed) = client.wrap(b"tamper me").unwrap();
        sealed[0] ^= 1;
        let mut sig = signature;
        let mut buffers = [
            SecurityBufferRef::token_buf(&mut sig),
            SecurityBufferRef::data_buf(&mut sealed),
        ];
        assert!(server.decrypt_message(&mut buffers).is_err());
    }
}

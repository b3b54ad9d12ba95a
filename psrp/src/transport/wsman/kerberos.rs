//! Negotiate and Kerberos (the `kerberos` feature): sspi's Kerberos client (pure Rust), with its KDC
//! traffic carried here by tokio instead of sspi's blocking reqwest client.
//!
//! The KDC is `kdc` from the configuration (`tcp://kdc.example.com:88`), else what sspi finds: the
//! `SSPI_KDC_URL_<REALM>` or `SSPI_KDC_URL` environment variables, then the realm's `kdc` in
//! `/etc/krb5.conf` (or `KRB5_CONFIG`). DNS SRV discovery needs sspi's `dns_resolver` feature,
//! which this crate leaves off to keep the build lean.

use std::time::Duration;

use sspi::{
    AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, DataRepresentation, Error, ErrorKind,
    NetworkProtocol, NetworkRequest, SecurityBuffer, SecurityStatus, Sspi, SspiImpl,
    generator::GeneratorState,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    WsmanHttpError,
    auth::{Credentials, Mechanism},
    encryption::{PROTOCOL_KERBEROS, PROTOCOL_SPNEGO},
};

const KDC_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger than any ticket a KDC sends (Windows' MaxTokenSize is 48 000 bytes).
const MAX_KDC_REPLY: usize = 1 << 20;
/// KDC round trips within one authentication step (AS and TGS exchanges, referrals).
const MAX_KDC_ROUNDS: usize = 16;

/// A Negotiate client (Kerberos preferred, NTLM allowed unless `kerberos_only`) and the
/// encryption protocol that goes with it.
pub(super) fn context(
    credentials: &Credentials,
    host: &str,
    kerberos_only: bool,
    kdc: Option<&str>,
) -> Result<(Mechanism, &'static str), WsmanHttpError> {
    let username =
        sspi::Username::parse(&credentials.username).map_err(|e| WsmanHttpError::InvalidConfig {
            reason: format!("the user name {:?} is not valid: {e}", credentials.username),
        })?;
    let identity = AuthIdentity {
        username,
        password: credentials.password.expose().to_owned().into(),
    };
    let computer = std::env::var("HOSTNAME").unwrap_or_else(|_| "pssession-operator".to_owned());
    let kerberos = match kdc {
        Some(url) => sspi::KerberosConfig::new_with_kdc_url(url, computer.clone()),
        None => sspi::KerberosConfig {
            kdc_resolution: sspi::KdcResolution::KdcUrl(None),
            client_computer_name: computer.clone(),
        },
    };
    let packages = if kerberos_only {
        "kerberos,!ntlm"
    } else {
        "kerberos,ntlm"
    };
    let config = sspi::NegotiateConfig::new(Box::new(kerberos), Some(packages.to_owned()), computer);
    let failed = |e: Error| WsmanHttpError::AuthFailed {
        user: credentials.username.clone(),
        scheme: if kerberos_only { "Kerberos" } else { "Negotiate" },
        reason: format!("{e} (target HTTP/{host})"),
    };
    let mut negotiate = sspi::Negotiate::new_client(config).map_err(failed)?;
    let handle = negotiate
        .acquire_credentials_handle()
        .with_credential_use(CredentialUse::Outbound)
        .with_auth_data(&sspi::Credentials::AuthIdentity(identity))
        .execute(&mut negotiate)
        .map_err(failed)?
        .credentials_handle;
    let protocol = if kerberos_only {
        PROTOCOL_KERBEROS
    } else {
        PROTOCOL_SPNEGO
    };
    Ok((
        Mechanism::Negotiate(Box::new(negotiate), Box::new(handle)),
        protocol,
    ))
}

/// One step of the exchange, answering sspi's KDC requests on the way.
pub(super) async fn step(
    negotiate: &mut sspi::Negotiate,
    handle: &mut Option<sspi::CredentialsBuffers>,
    target: &str,
    flags: ClientRequestFlags,
    input: Option<Vec<SecurityBuffer>>,
    output: &mut [SecurityBuffer],
) -> Result<SecurityStatus, Error> {
    // sspi's Kerberos wants an input buffer even on the first leg.
    let mut input = input.unwrap_or_default();
    if !input
        .iter()
        .any(|b| b.buffer_type.buffer_type == BufferType::Token)
    {
        input.insert(0, SecurityBuffer::new(Vec::new(), BufferType::Token));
    }
    let status = {
        let mut builder = negotiate
            .initialize_security_context()
            .with_credentials_handle(handle)
            .with_context_requirements(flags)
            .with_target_data_representation(DataRepresentation::Native)
            .with_target_name(target)
            .with_output(output)
            .with_input(&mut input);
        let mut generator = negotiate.initialize_security_context_impl(&mut builder)?;
        let mut state = generator.start();
        let mut rounds = 0;
        loop {
            match state {
                GeneratorState::Completed(result) => break result?.status,
                GeneratorState::Suspended(request) => {
                    rounds += 1;
                    if rounds > MAX_KDC_ROUNDS {
                        return Err(Error::new(
                            ErrorKind::NoAuthenticatingAuthority,
                            "too many KDC round trips",
                        ));
                    }
                    let reply = match tokio::time::timeout(KDC_TIMEOUT, send(&request)).await {
                        Ok(reply) => reply,
                        Err(_) => Err(Error::new(
                            ErrorKind::NoAuthenticatingAuthority,
                            format!("no answer from the KDC {} within {KDC_TIMEOUT:?}", request.url),
                        )),
                    };
                    state = generator.resume(reply);
                }
            }
        }
    };
    if matches!(
        status,
        SecurityStatus::CompleteAndContinue | SecurityStatus::CompleteNeeded
    ) {
        negotiate.complete_auth_token(output)?;
    }
    Ok(status)
}

fn kdc_error(request: &NetworkRequest, what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::NoAuthenticatingAuthority,
        format!("KDC {}: {what}", request.url),
    )
}

async fn send(request: &NetworkRequest) -> Result<Vec<u8>, Error> {
    let host = request.url.host_str().unwrap_or_default().to_owned();
    let port = request.url.port().unwrap_or(88);
    match request.protocol {
        // The request already carries RFC 4120 7.2.2's 4-byte length prefix; so must the reply.
        NetworkProtocol::Tcp => {
            let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| kdc_error(request, e))?;
            stream
                .write_all(&request.data)
                .await
                .map_err(|e| kdc_error(request, e))?;
            let len = stream.read_u32().await.map_err(|e| kdc_error(request, e))? as usize;
            if len > MAX_KDC_REPLY {
                return Err(kdc_error(request, format!("a {len}-byte reply")));
            }
            let mut reply = vec![0u8; 4 + len];
            reply[..4].copy_from_slice(&(len as u32).to_be_bytes());
            stream
                .read_exact(&mut reply[4..])
                .await
                .map_err(|e| kdc_error(request, e))?;
            Ok(reply)
        }
        NetworkProtocol::Udp => {
            let socket = tokio::net::UdpSocket::bind(("0.0.0.0", 0))
                .await
                .map_err(|e| kdc_error(request, e))?;
            socket
                .send_to(&request.data, (host.as_str(), port))
                .await
                .map_err(|e| kdc_error(request, e))?;
            let mut reply = vec![0u8; 0xbb80];
            let n = socket.recv(&mut reply).await.map_err(|e| kdc_error(request, e))?;
            reply.truncate(n);
            Ok(reply)
        }
        NetworkProtocol::Http | NetworkProtocol::Https => Err(kdc_error(
            request,
            "KDC proxies (KKDCP over HTTP) are not supported; name the KDC as tcp://host:88",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A KDC that does not exist fails the first step with a reason naming it, and no panic.
    #[tokio::test]
    async fn unreachable_kdc_fails_the_first_step() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let credentials = Credentials::new("alice@EXAMPLE.TEST", "pw");
        let kdc = format!("tcp://127.0.0.1:{port}");
        let (mechanism, protocol) = context(&credentials, "web01.example.test", true, Some(&kdc)).unwrap();
        assert_eq!(protocol, PROTOCOL_KERBEROS);
        let mut security =
            super::super::auth::SecurityContext::from_parts(mechanism, "web01.example.test", protocol);
        let error = security.step(None).await.unwrap_err();
        assert!(error.to_string().contains("KDC"), "{error}");
    }
}

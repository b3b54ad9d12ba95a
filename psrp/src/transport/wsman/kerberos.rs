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
    encryption::PROTOCOL_SPNEGO,
};

const KDC_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger than any ticket a KDC sends (Windows' MaxTokenSize is 48 000 bytes).
const MAX_KDC_REPLY: usize = 1 << 20;
/// KDC round trips within one authentication step (AS and TGS exchanges, referrals).
const MAX_KDC_ROUNDS: usize = 16;

/// A Negotiate client (SPNEGO: Kerberos preferred, NTLM allowed) or, with `kerberos_only`, a
/// plain Kerberos one, whose raw GSS tokens go under the `Negotiate` HTTP scheme as pypsrp sends
/// them (Windows' Negotiate package takes a bare Kerberos token). Both seal with the SPNEGO
/// protocol name, as pypsrp does when the server answered `Negotiate`.
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
    let identity = sspi::Credentials::AuthIdentity(AuthIdentity {
        username,
        password: credentials.password.expose().to_owned().into(),
    });
    let computer = std::env::var("HOSTNAME").unwrap_or_else(|_| "pssession-operator".to_owned());
    let kerberos = match kdc {
        Some(url) => sspi::KerberosConfig::new_with_kdc_url(url, computer.clone()),
        None => sspi::KerberosConfig {
            kdc_resolution: sspi::KdcResolution::KdcUrl(None),
            client_computer_name: computer.clone(),
        },
    };
    let failed = |e: Error| WsmanHttpError::AuthFailed {
        user: credentials.username.clone(),
        scheme: if kerberos_only { "Kerberos" } else { "Negotiate" },
        reason: format!("{e} (target HTTP/{host})"),
    };
    let mechanism = if kerberos_only {
        let mut kerberos = sspi::Kerberos::new_client_from_config(kerberos).map_err(failed)?;
        let handle = kerberos
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Outbound)
            .with_auth_data(&identity)
            .execute(&mut kerberos)
            .map_err(failed)?
            .credentials_handle;
        Mechanism::Kerberos(Box::new(kerberos), Box::new(handle))
    } else {
        let config =
            sspi::NegotiateConfig::new(Box::new(kerberos), Some("kerberos,ntlm".to_owned()), computer);
        let mut negotiate = sspi::Negotiate::new_client(config).map_err(failed)?;
        let handle = negotiate
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Outbound)
            .with_auth_data(&identity)
            .execute(&mut negotiate)
            .map_err(failed)?
            .credentials_handle;
        Mechanism::Negotiate(Box::new(negotiate), Box::new(handle))
    };
    Ok((mechanism, PROTOCOL_SPNEGO))
}

/// One step of the exchange, answering sspi's KDC requests on the way.
pub(super) async fn step<S>(
    sspi: &mut S,
    handle: &mut Option<sspi::CredentialsBuffers>,
    target: &str,
    flags: ClientRequestFlags,
    input: Option<Vec<SecurityBuffer>>,
    output: &mut [SecurityBuffer],
) -> Result<SecurityStatus, Error>
where
    S: Sspi + SspiImpl<CredentialsHandle = Option<sspi::CredentialsBuffers>> + Send,
{
    // sspi's Kerberos wants a token buffer even on the first leg.
    let mut input = input.unwrap_or_default();
    if !input
        .iter()
        .any(|b| b.buffer_type.buffer_type == BufferType::Token)
    {
        input.insert(0, SecurityBuffer::new(Vec::new(), BufferType::Token));
    }
    let status = {
        let mut builder = sspi
            .initialize_security_context()
            .with_credentials_handle(handle)
            .with_context_requirements(flags)
            .with_target_data_representation(DataRepresentation::Native)
            .with_target_name(target)
            .with_output(output)
            .with_input(&mut input);
        let mut generator = sspi.initialize_security_context_impl(&mut builder)?;
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
        sspi.complete_auth_token(output)?;
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
    use super::super::auth::SecurityContext;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A KDC that does not exist fails the first step with a reason naming it, and no panic.
    #[tokio::test]
    async fn unreachable_kdc_fails_the_first_step() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let credentials = Credentials::new("alice@EXAMPLE.TEST", "pw");
        let kdc = format!("tcp://127.0.0.1:{port}");
        let (mechanism, protocol) = context(&credentials, "web01.example.test", true, Some(&kdc)).unwrap();
        assert_eq!(protocol, PROTOCOL_SPNEGO);
        let mut security =
            super::super::auth::SecurityContext::from_parts(mechanism, "web01.example.test", protocol);
        let error = security.step(None).await.unwrap_err();
        assert!(error.to_string().contains("KDC"), "{error}");
    }

    /// The Kerberos path against MIT Kerberos: a real KDC (krb5kdc) issues the tickets over our
    /// tokio KDC transport, and MIT's GSS acceptor (the `gss-server` sample) accepts our context
    /// and unwraps a message we sealed; it logs the plaintext, which must be ours. Both modes:
    /// plain Kerberos and SPNEGO. Skipped when MIT Kerberos is not installed (`./test` installs
    /// krb5-kdc, krb5-admin-server and krb5-gss-samples).
    #[tokio::test]
    async fn kerberos_with_mit_kdc_and_gss_acceptor() {
        let tools = ["krb5kdc", "kdb5_util", "kadmin.local", "gss-server"];
        let find = |tool: &str| {
            ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .map(|dir| std::path::Path::new(dir).join(tool))
                .find(|path| path.exists())
        };
        let Some(paths) = tools.iter().map(|t| find(t)).collect::<Option<Vec<_>>>() else {
            eprintln!("SKIP: MIT Kerberos ({}) is not installed", tools.join(", "));
            return;
        };
        let (krb5kdc, kdb5_util, kadmin, gss_server) = (&paths[0], &paths[1], &paths[2], &paths[3]);

        let dir = std::env::temp_dir().join(format!("psrp-krb5-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        struct Cleanup(std::path::PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _cleanup = Cleanup(dir.clone());
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (kdc_port, gss_port) = (free_port(), free_port());
        let d = dir.display();
        std::fs::write(
            dir.join("krb5.conf"),
            format!(
                "[libdefaults]\n default_realm = PSRP.TEST\n dns_lookup_kdc = false\n rdns = false\n\
                 [realms]\n PSRP.TEST = {{\n  kdc = 127.0.0.1:{kdc_port}\n }}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("kdc.conf"),
            format!(
                "[kdcdefaults]\n kdc_listen = 127.0.0.1:{kdc_port}\n kdc_tcp_listen = 127.0.0.1:{kdc_port}\n\
                 [realms]\n PSRP.TEST = {{\n  database_name = {d}/principal\n  key_stash_file = {d}/stash\n\
                 acl_file = {d}/kadm5.acl\n\
                 supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n }}\n\
                 [logging]\n kdc = FILE:{d}/kdc.log\n"
            ),
        )
        .unwrap();
        let env = [
            ("KRB5_CONFIG", dir.join("krb5.conf")),
            ("KRB5_KDC_PROFILE", dir.join("kdc.conf")),
            ("KRB5_KTNAME", dir.join("http.keytab")),
        ];
        let run = |program: &std::path::Path, args: &[&str]| {
            let out = std::process::Command::new(program)
                .args(args)
                .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{program:?} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(
            kdb5_util,
            &["create", "-s", "-r", "PSRP.TEST", "-P", "master-pw-for-tests"],
        );
        run(
            kadmin,
            &["-q", "addprinc +requires_preauth -pw Alice-pw-1 alice@PSRP.TEST"],
        );
        run(
            kadmin,
            &["-q", "addprinc -randkey HTTP/web01.psrp.test@PSRP.TEST"],
        );
        let keytab = format!("ktadd -k {d}/http.keytab HTTP/web01.psrp.test@PSRP.TEST");
        run(kadmin, &["-q", &keytab]);

        let spawn = |program: &std::path::Path, args: &[&str]| {
            tokio::process::Command::new(program)
                .args(args)
                .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        };
        let wait_for = |port: u16| async move {
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("nothing listens on port {port}");
        };
        let _kdc = spawn(krb5kdc, &["-n"]);
        wait_for(kdc_port).await;
        let kdc_url = format!("tcp://127.0.0.1:{kdc_port}");

        for kerberos_only in [true, false] {
            let gss_port_text = gss_port.to_string();
            let mut server = spawn(
                gss_server,
                &["-port", &gss_port_text, "-once", "HTTP@web01.psrp.test"],
            );
            // gss-server takes a connection to probe as its one (-once) connection, so wait by
            // retrying the real connection instead.
            let mut stream = None;
            for _ in 0..100 {
                if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", gss_port)).await {
                    stream = Some(s);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut stream = stream.expect("gss-server listens");

            // `REALM\user`: sspi sends `user@REALM` as an enterprise name, as Windows does, which
            // Active Directory resolves and MIT's KDC does not.
            let credentials = Credentials::new("PSRP.TEST\\alice", "Alice-pw-1");
            let (mechanism, protocol) =
                context(&credentials, "web01.psrp.test", kerberos_only, Some(&kdc_url)).unwrap();
            let mut security = SecurityContext::from_parts(mechanism, "web01.psrp.test", protocol);

            // gss-sample framing: a flags byte, a big-endian u32 length, the token.
            const NOOP: u8 = 1;
            const CONTEXT: u8 = 2;
            const DATA: u8 = 4;
            const MIC: u8 = 8;
            const CONTEXT_NEXT: u8 = 16;
            const WRAPPED: u8 = 32;
            const ENCRYPTED: u8 = 64;
            const SEND_MIC: u8 = 128;
            async fn send_token(s: &mut tokio::net::TcpStream, flags: u8, token: &[u8]) {
                s.write_u8(flags).await.unwrap();
                s.write_u32(token.len() as u32).await.unwrap();
                s.write_all(token).await.unwrap();
            }
            async fn recv_token(s: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
                let flags = s.read_u8().await.unwrap();
                let len = s.read_u32().await.unwrap() as usize;
                let mut token = vec![0; len];
                s.read_exact(&mut token).await.unwrap();
                (flags, token)
            }

            send_token(&mut stream, NOOP | CONTEXT_NEXT, &[]).await;
            let mut input: Option<Vec<u8>> = None;
            for _ in 0..4 {
                let out = security.step(input.as_deref()).await.unwrap();
                if !out.is_empty() {
                    send_token(&mut stream, CONTEXT, &out).await;
                }
                if security.is_complete() {
                    break;
                }
                let (flags, token) = recv_token(&mut stream).await;
                assert_eq!(flags, CONTEXT);
                input = Some(token);
            }
            assert!(security.is_complete(), "kerberos_only={kerberos_only}");

            let message = format!("<s:Envelope>sealed for MIT, kerberos_only={kerberos_only}</s:Envelope>");
            let (header, sealed) = security.wrap(message.as_bytes()).unwrap();
            assert_ne!(sealed, message.as_bytes());
            send_token(
                &mut stream,
                DATA | WRAPPED | ENCRYPTED | SEND_MIC,
                &[header, sealed].concat(),
            )
            .await;
            let (flags, mic) = recv_token(&mut stream).await;
            assert_eq!(flags, MIC, "gss-server could not unwrap the message");
            assert!(!mic.is_empty());
            send_token(&mut stream, NOOP, &[]).await;

            let mut log = String::new();
            let mut stdout = server.stdout.take().unwrap();
            tokio::time::timeout(Duration::from_secs(10), stdout.read_to_string(&mut log))
                .await
                .unwrap()
                .unwrap();
            assert!(log.contains("Accepted connection: \"alice@PSRP.TEST\""), "{log}");
            assert!(log.contains(&format!("Received message: \"{message}\"")), "{log}");
            let _ = server.wait().await;
        }
    }
}

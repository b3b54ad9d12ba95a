//! The WS-Management HTTP transport against real counterparts on loopback: a Python endpoint
//! (tests/wsman_auth/wsman_test_server.py) whose NTLM acceptor is pyspnego and whose
//! multipart/encrypted framing is pypsrp's, so both directions of sealing are checked by code that
//! is not ours; Python's ssl for HTTPS, with certificates made here by rcgen.
//!
//! The Python venv is the project's (e2e/python-env.sh); the tests that need it say so and pass
//! only when it cannot be made at all.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use bytes::Bytes;
use psrp::transport::wsman::{
    ClientCertificate, Credentials, TlsFailure, TlsOptions, WsmanAuth, WsmanConfig, WsmanHttpError,
    WsmanTransport,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

const USER: &str = "wsman-user";
const PASSWORD: &str = "Pa$$w0rd-for-tests";
const TIMEOUT: Duration = Duration::from_secs(20);

fn python() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/python-env.sh");
    let out = std::process::Command::new("bash").arg(&script).output();
    match out {
        Ok(out) if out.status.success() => {
            let venv = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            let python = venv.join("bin/python");
            python.exists().then_some(python)
        }
        Ok(out) => {
            eprintln!(
                "SKIP: the Python venv cannot be made ({}): {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("SKIP: cannot run {}: {e}", script.display());
            None
        }
    }
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "psrp-wsman-http-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, data: impl AsRef<[u8]>) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, data).unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Server {
    port: u16,
    _child: Child,
    _scratch: Scratch,
}

async fn server(args: &[&str], scratch: Scratch) -> Option<Server> {
    let python = python()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wsman_auth/wsman_test_server.py");
    let ntlm_users = scratch.write("ntlm_users", format!(":{USER}:{PASSWORD}\n"));
    let mut child = Command::new(python)
        .arg(script)
        .args(args)
        .env("NTLM_USER_FILE", ntlm_users)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the test server");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .expect("the test server announces its port")
        .unwrap()
        .expect("the test server exited before listening");
    let port = line.strip_prefix("PORT ").unwrap().parse().unwrap();
    Some(Server {
        port,
        _child: child,
        _scratch: scratch,
    })
}

fn config(port: u16, auth: WsmanAuth) -> WsmanConfig {
    let mut config = WsmanConfig::new("127.0.0.1", auth);
    config.port = port;
    config.connect_timeout = Duration::from_secs(5);
    config
}

fn ntlm(password: &str) -> WsmanAuth {
    WsmanAuth::Ntlm(Credentials::new(USER, password))
}

fn basic(password: &str) -> WsmanAuth {
    WsmanAuth::Basic(Credentials::new(USER, password))
}

/// The attribute `name="..."` of the echo's head.
fn echo_attr(body: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let needle = format!("{name}=\"");
    let at = text
        .find(&needle)
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        + needle.len();
    text[at..at + text[at..].find('"').unwrap()].to_owned()
}

fn sha256_hex(data: &[u8]) -> String {
    use std::fmt::Write;
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn envelope(text: &str) -> Bytes {
    Bytes::from(format!(
        "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body>{text}</s:Body></s:Envelope>"
    ))
}

#[tokio::test]
async fn ntlm_sealed_round_trips_checked_by_pyspnego_and_pypsrp() {
    let Some(server) = server(&["--auth", "ntlm"], Scratch::new()).await else {
        return;
    };
    let transport = WsmanTransport::new(config(server.port, ntlm(PASSWORD))).unwrap();

    // Several messages on one connection: the sequence numbers advance on both sides, and a body
    // larger than a few KiB with every byte value goes through intact.
    let mut binary = String::new();
    for i in 0..20_000u32 {
        binary.push(char::from_u32(0x20 + (i % 0x5e)).unwrap());
        if i % 1000 == 0 {
            binary.push_str("é€😀");
        }
    }
    let messages = [
        envelope("first"),
        envelope("second"),
        envelope(&binary),
        envelope(""),
    ];
    let mut connections = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let response = transport.post(message.clone(), TIMEOUT).await.unwrap();
        assert_eq!(response.status, 200);
        // The server decrypted our message (its digest) and we decrypted its answer (the echo).
        assert_eq!(echo_attr(&response.body, "sha256"), sha256_hex(message));
        assert!(response.body.ends_with(&[&message[..], b"</echo>"].concat()));
        // Request numbers count the authentication legs too: 2 legs, then the messages.
        assert_eq!(echo_attr(&response.body, "request"), (i + 3).to_string());
        connections.push(echo_attr(&response.body, "conn"));
    }
    connections.dedup();
    assert_eq!(connections.len(), 1, "one kept-alive connection: {connections:?}");
    assert_eq!(transport.idle_connections(), 1);

    // A SOAP fault with status 500 comes back sealed, and is a response, not an error.
    let response = transport.post(envelope("FAULT"), TIMEOUT).await.unwrap();
    assert_eq!(response.status, 500);
    assert!(response.body.starts_with(b"<s:Envelope") && response.body.windows(7).any(|w| w == b"s:Fault"));
}

#[tokio::test]
async fn ntlm_concurrent_requests_use_separately_authenticated_connections() {
    let Some(server) = server(&["--auth", "ntlm"], Scratch::new()).await else {
        return;
    };
    let transport = WsmanTransport::new(config(server.port, ntlm(PASSWORD))).unwrap();
    // A long-poll (the server holds it 5 s) while three short requests go out one after another:
    // they are answered while the long-poll is still outstanding.
    let long_poll = {
        let transport = transport.clone();
        tokio::spawn(async move { transport.post(envelope("Receive SLEEP=5000"), TIMEOUT).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut short_conns = Vec::new();
    for i in 0..3 {
        let response = transport
            .post(envelope(&format!("Send {i}")), TIMEOUT)
            .await
            .unwrap();
        short_conns.push(echo_attr(&response.body, "conn"));
    }
    assert!(
        !long_poll.is_finished(),
        "the short requests waited for the long-poll"
    );
    let long = long_poll.await.unwrap().unwrap();
    let long_conn = echo_attr(&long.body, "conn");
    short_conns.dedup();
    assert_eq!(short_conns.len(), 1, "{short_conns:?}");
    assert_ne!(short_conns[0], long_conn);
    assert_eq!(transport.idle_connections(), 2);
}

#[tokio::test]
async fn the_pool_bounds_connections_and_queues_requests() {
    let Some(server) = server(&["--auth", "ntlm"], Scratch::new()).await else {
        return;
    };
    let mut bounded = config(server.port, ntlm(PASSWORD));
    bounded.max_connections = 2;
    let transport = WsmanTransport::new(bounded).unwrap();
    let started = tokio::time::Instant::now();
    let posts: Vec<_> = (0..6)
        .map(|i| {
            let transport = transport.clone();
            tokio::spawn(async move { transport.post(envelope(&format!("SLEEP=300 {i}")), TIMEOUT).await })
        })
        .collect();
    let mut conns = Vec::new();
    for post in posts {
        let response = post.await.unwrap().unwrap();
        conns.push(echo_attr(&response.body, "conn"));
    }
    conns.sort();
    conns.dedup();
    assert_eq!(conns.len(), 2, "{conns:?}");
    // Six 300 ms requests over two connections: three rounds at least.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(transport.idle_connections(), 2);
}

#[tokio::test]
async fn ntlm_reauthenticates_when_the_server_drops_a_connections_authentication() {
    let Some(server) = server(&["--auth", "ntlm", "--expire-after", "2"], Scratch::new()).await else {
        return;
    };
    let transport = WsmanTransport::new(config(server.port, ntlm(PASSWORD))).unwrap();
    let mut conns = Vec::new();
    for i in 0..5 {
        let message = envelope(&format!("m{i}"));
        let response = transport.post(message.clone(), TIMEOUT).await.unwrap();
        assert_eq!(echo_attr(&response.body, "sha256"), sha256_hex(&message));
        conns.push(echo_attr(&response.body, "conn"));
    }
    // Two messages per connection, then a 401 and a new connection.
    assert_eq!(conns[0], conns[1]);
    assert_ne!(conns[1], conns[2]);
    assert_eq!(conns[2], conns[3]);
    assert_ne!(conns[3], conns[4]);
    assert_eq!(transport.idle_connections(), 1);
}

#[tokio::test]
async fn ntlm_wrong_password_is_auth_failed() {
    let Some(server) = server(&["--auth", "ntlm"], Scratch::new()).await else {
        return;
    };
    let transport = WsmanTransport::new(config(server.port, ntlm("not-the-password"))).unwrap();
    let e = transport.post(envelope("x"), TIMEOUT).await.unwrap_err();
    assert!(
        matches!(&e, WsmanHttpError::AuthFailed { user, scheme: "NTLM", .. } if user == USER),
        "{e:?}"
    );
    assert!(!e.to_string().contains("not-the-password"));
}

#[tokio::test]
async fn ntlm_against_a_basic_only_server_is_auth_unsupported() {
    let Some(server) = server(
        &["--auth", "basic", "--user", USER, "--password", PASSWORD],
        Scratch::new(),
    )
    .await
    else {
        return;
    };
    let transport = WsmanTransport::new(config(server.port, ntlm(PASSWORD))).unwrap();
    let e = transport.post(envelope("x"), TIMEOUT).await.unwrap_err();
    assert!(
        matches!(&e, WsmanHttpError::AuthUnsupported { scheme: "NTLM", offered } if offered == &["Basic"]),
        "{e:?}"
    );
}

#[tokio::test]
async fn basic_over_http_only_with_the_explicit_allowance() {
    let Some(server) = server(
        &["--auth", "basic", "--user", USER, "--password", PASSWORD],
        Scratch::new(),
    )
    .await
    else {
        return;
    };
    let refused = WsmanTransport::new(config(server.port, basic(PASSWORD))).unwrap_err();
    assert!(
        matches!(refused, WsmanHttpError::UnencryptedRefused { scheme: "Basic" }),
        "{refused:?}"
    );

    let mut allowed = config(server.port, basic(PASSWORD));
    allowed.allow_unencrypted = true;
    let transport = WsmanTransport::new(allowed.clone()).unwrap();
    let response = transport.post(envelope("plain"), TIMEOUT).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        echo_attr(&response.body, "sha256"),
        sha256_hex(&envelope("plain"))
    );

    allowed.auth = basic("wrong");
    let e = WsmanTransport::new(allowed)
        .unwrap()
        .post(envelope("x"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(e, WsmanHttpError::AuthFailed { scheme: "Basic", .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn bounded_body_and_request_timeout() {
    let Some(server) = server(&["--auth", "ntlm"], Scratch::new()).await else {
        return;
    };
    let mut small = config(server.port, ntlm(PASSWORD));
    small.max_body_bytes = 64 * 1024;
    let transport = WsmanTransport::new(small).unwrap();
    let response = transport.post(envelope("BIG=60000"), TIMEOUT).await.unwrap();
    assert_eq!(response.body.len(), 60_000);
    let e = transport.post(envelope("BIG=200000"), TIMEOUT).await.unwrap_err();
    assert!(
        matches!(e, WsmanHttpError::BodyTooLarge { limit: 65536 }),
        "{e:?}"
    );

    let e = transport
        .post(envelope("SLEEP=3000"), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(e, WsmanHttpError::Timeout { .. }), "{e:?}");
    // The timed-out connection is not reused; the next request works on a fresh one.
    let response = transport.post(envelope("after"), TIMEOUT).await.unwrap();
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn closed_port_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let transport = WsmanTransport::new(config(port, ntlm(PASSWORD))).unwrap();
    let e = transport.post(envelope("x"), TIMEOUT).await.unwrap_err();
    assert!(matches!(e, WsmanHttpError::Unreachable { .. }), "{e:?}");
    assert!(!e.is_permanent());

    let mut unresolvable = config(port, ntlm(PASSWORD));
    unresolvable.host = "no-such-host.invalid".to_owned();
    let e = WsmanTransport::new(unresolvable)
        .unwrap()
        .post(envelope("x"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(e, WsmanHttpError::Unreachable { .. }), "{e:?}");
}

/// A CA, a server certificate for `names` signed by it, and a client certificate.
struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki(names: &[&str]) -> Pki {
    pki_with(names, &rcgen::PKCS_ECDSA_P256_SHA256)
}

/// As [`pki`], the server's key (and so the CA's signature over it) of `algorithm`.
fn pki_with(names: &[&str], algorithm: &'static rcgen::SignatureAlgorithm) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "psrp test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate_for(algorithm).unwrap()).unwrap();

    let server_key = KeyPair::generate_for(algorithm).unwrap();
    let server_params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, USER);
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    }
}

async fn https_server(pki: &Pki, extra: &[&str]) -> Option<Server> {
    let scratch = Scratch::new();
    let cert = scratch.write("server.crt", &pki.server_cert);
    let key = scratch.write("server.key", &pki.server_key);
    let ca = scratch.write("ca.crt", &pki.ca_pem);
    let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
    args.extend_from_slice(extra);
    let args: Vec<&str> = args
        .into_iter()
        .map(|a| if a == "CLIENT_CA" { ca.as_str() } else { a })
        .collect();
    server(&args, scratch).await
}

fn https(port: u16, auth: WsmanAuth, tls: TlsOptions) -> WsmanConfig {
    let mut config = config(port, auth).https();
    config.port = port;
    config.tls = tls;
    config
}

fn trusting(pki: &Pki) -> TlsOptions {
    TlsOptions {
        ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        ..TlsOptions::default()
    }
}

#[tokio::test]
async fn basic_over_https_with_a_ca_from_pem() {
    let pki = pki(&["localhost", "127.0.0.1"]);
    let Some(server) = https_server(&pki, &["--auth", "basic", "--user", USER, "--password", PASSWORD]).await
    else {
        return;
    };
    let transport = WsmanTransport::new(https(server.port, basic(PASSWORD), trusting(&pki))).unwrap();
    let response = transport.post(envelope("over TLS"), TIMEOUT).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        echo_attr(&response.body, "sha256"),
        sha256_hex(&envelope("over TLS"))
    );

    // By name as well as by IP address.
    let mut by_name = https(server.port, basic(PASSWORD), trusting(&pki));
    by_name.host = "localhost".to_owned();
    let response = WsmanTransport::new(by_name)
        .unwrap()
        .post(envelope("n"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response.status, 200);

    let e = WsmanTransport::new(https(server.port, basic("wrong"), trusting(&pki)))
        .unwrap()
        .post(envelope("x"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(e, WsmanHttpError::AuthFailed { .. }), "{e:?}");
}

#[tokio::test]
async fn untrusted_ca_fails_and_skip_ca_check_accepts() {
    let pki = pki(&["127.0.0.1"]);
    let other = self::pki(&["127.0.0.1"]);
    let Some(server) = https_server(&pki, &["--auth", "basic", "--user", USER, "--password", PASSWORD]).await
    else {
        return;
    };
    // Another CA, and the system roots: neither issued the server's certificate.
    for tls in [trusting(&other), TlsOptions::default()] {
        let e = WsmanTransport::new(https(server.port, basic(PASSWORD), tls))
            .unwrap()
            .post(envelope("x"), TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                WsmanHttpError::Tls {
                    failure: TlsFailure::UntrustedCa,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.is_permanent());
    }
    let skip = TlsOptions {
        skip_ca_check: true,
        ..TlsOptions::default()
    };
    let response = WsmanTransport::new(https(server.port, basic(PASSWORD), skip.clone()))
        .unwrap()
        .post(envelope("skip"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response.status, 200);

    // SkipCACheck alone still checks the name.
    let mut by_name = https(server.port, basic(PASSWORD), skip);
    by_name.host = "localhost".to_owned();
    let e = WsmanTransport::new(by_name)
        .unwrap()
        .post(envelope("x"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            WsmanHttpError::Tls {
                failure: TlsFailure::NameMismatch,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn name_mismatch_fails_and_skip_cn_check_accepts() {
    let pki = pki(&["other.example"]);
    let Some(server) = https_server(&pki, &["--auth", "basic", "--user", USER, "--password", PASSWORD]).await
    else {
        return;
    };
    let e = WsmanTransport::new(https(server.port, basic(PASSWORD), trusting(&pki)))
        .unwrap()
        .post(envelope("x"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            WsmanHttpError::Tls {
                failure: TlsFailure::NameMismatch,
                ..
            }
        ),
        "{e:?}"
    );
    let skip_cn = TlsOptions {
        skip_cn_check: true,
        ..trusting(&pki)
    };
    let response = WsmanTransport::new(https(server.port, basic(PASSWORD), skip_cn))
        .unwrap()
        .post(envelope("skip cn"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response.status, 200);

    // SkipCNCheck alone still checks the chain.
    let stranger = self::pki(&["other.example"]);
    let skip_cn_untrusted = TlsOptions {
        skip_cn_check: true,
        ..trusting(&stranger)
    };
    let e = WsmanTransport::new(https(server.port, basic(PASSWORD), skip_cn_untrusted))
        .unwrap()
        .post(envelope("x"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            WsmanHttpError::Tls {
                failure: TlsFailure::UntrustedCa,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn certificate_authentication() {
    let pki = pki(&["127.0.0.1"]);
    let Some(server) = https_server(&pki, &["--auth", "cert", "--client-ca", "CLIENT_CA"]).await else {
        return;
    };
    let cert = ClientCertificate::from_pem(pki.client_cert.as_bytes(), pki.client_key.as_bytes()).unwrap();
    let transport =
        WsmanTransport::new(https(server.port, WsmanAuth::Certificate(cert), trusting(&pki))).unwrap();
    let response = transport.post(envelope("cert"), TIMEOUT).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(echo_attr(&response.body, "sha256"), sha256_hex(&envelope("cert")));

    // Without a client certificate the server refuses the TLS session.
    let e = WsmanTransport::new(https(server.port, basic(PASSWORD), trusting(&pki)))
        .unwrap()
        .post(envelope("x"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            WsmanHttpError::Tls {
                failure: TlsFailure::ClientCertRejected,
                ..
            } | WsmanHttpError::ConnectionLost { .. }
        ),
        "{e:?}"
    );

    // Certificate authentication over plain HTTP is a configuration error.
    let cert = ClientCertificate::from_pem(pki.client_cert.as_bytes(), pki.client_key.as_bytes()).unwrap();
    let e = WsmanTransport::new(config(server.port, WsmanAuth::Certificate(cert))).unwrap_err();
    assert_eq!(e.reason(), "InvalidConfig");
}

#[tokio::test]
async fn ntlm_over_https_carries_the_tls_channel_binding() {
    // RSA with SHA-384 would change the hash; rcgen's default (ECDSA P-256, SHA-256) and a P-384
    // certificate (SHA-384) both go through pypsrp's hash selection on the server side.
    for algorithm in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384] {
        let pki = pki_with(&["127.0.0.1"], algorithm);
        let Some(server) = https_server(&pki, &["--auth", "ntlm", "--cbt", "right"]).await else {
            return;
        };
        let transport = WsmanTransport::new(https(server.port, ntlm(PASSWORD), trusting(&pki))).unwrap();
        for text in ["one", "two"] {
            let response = transport.post(envelope(text), TIMEOUT).await.unwrap();
            assert_eq!(response.status, 200);
            assert_eq!(echo_attr(&response.body, "sha256"), sha256_hex(&envelope(text)));
        }
    }
    // A server that expects another binding (a TLS-terminating man in the middle) refuses.
    let pki = pki(&["127.0.0.1"]);
    let Some(server) = https_server(&pki, &["--auth", "ntlm", "--cbt", "wrong"]).await else {
        return;
    };
    let e = WsmanTransport::new(https(server.port, ntlm(PASSWORD), trusting(&pki)))
        .unwrap()
        .post(envelope("x"), TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(e, WsmanHttpError::AuthFailed { .. }), "{e:?}");
}

/// A loopback server that answers every connection's first request with `reply` (raw bytes),
/// then closes; `None` closes without answering.
async fn canned(reply: Option<Vec<u8>>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                // Read the request head and its body (Content-Length), bounded.
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while request.len() < 1 << 20 {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                if let Some(reply) = reply {
                    let _ = socket.write_all(&reply).await;
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    port
}

async fn post_to_canned(
    reply: Option<Vec<u8>>,
) -> Result<psrp::transport::wsman::WsmanResponse, WsmanHttpError> {
    let port = canned(reply).await;
    let mut config = config(port, basic(PASSWORD));
    config.allow_unencrypted = true;
    config.max_body_bytes = 1000;
    WsmanTransport::new(config)
        .unwrap()
        .post(envelope("x"), TIMEOUT)
        .await
}

#[tokio::test]
async fn unexpected_responses_are_typed_errors() {
    let fault: &[u8] =
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/soap+xml;charset=UTF-8\r\n\
        Content-Length: 13\r\n\r\n<s:Envelope/>";
    let response = post_to_canned(Some(fault.to_vec())).await.unwrap();
    assert_eq!(
        (response.status, &response.body[..]),
        (500, &b"<s:Envelope/>"[..])
    );

    let e = post_to_canned(Some(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope".to_vec(),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&e, WsmanHttpError::HttpStatus { status: 404, body } if &body[..] == b"nope"),
        "{e:?}"
    );

    let e = post_to_canned(Some(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()))
        .await
        .unwrap_err();
    assert!(matches!(e, WsmanHttpError::Protocol { .. }), "{e:?}");

    let e = post_to_canned(None).await.unwrap_err();
    assert!(matches!(e, WsmanHttpError::ConnectionLost { .. }), "{e:?}");

    // Announced too large: refused before reading; streamed too large: cut at the bound.
    let e = post_to_canned(Some(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n".to_vec()))
        .await
        .unwrap_err();
    assert!(matches!(e, WsmanHttpError::BodyTooLarge { limit: 1000 }), "{e:?}");
    let chunked = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n{}\r\n1\r\ny\r\n0\r\n\r\n",
        "x".repeat(1000)
    );
    let e = post_to_canned(Some(chunked.into_bytes())).await.unwrap_err();
    assert!(matches!(e, WsmanHttpError::BodyTooLarge { limit: 1000 }), "{e:?}");

    // An encrypted body on a connection that has no security context is not guessed at.
    let encrypted: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: multipart/encrypted;\
        protocol=\"application/HTTP-SPNEGO-session-encrypted\";boundary=\"Encrypted Boundary\"\r\n\
        Content-Length: 2\r\n\r\nxx";
    let e = post_to_canned(Some(encrypted.to_vec())).await.unwrap_err();
    assert!(matches!(e, WsmanHttpError::Protocol { .. }), "{e:?}");
}

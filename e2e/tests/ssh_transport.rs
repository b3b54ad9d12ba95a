//! The SSH transport against real sshd on namespace hosts: authentication, host key checks, the
//! `powershell` subsystem moving bytes both ways, faults (refused, black-holed, link down, sshd killed,
//! subsystem gone), clean close, and cancellation without leaked tasks.
//!
//! Bytes flow both ways without a PSRP core: the peer answers the out-of-process `<Close>` of the
//! runspace pool (empty GUID) with `<CloseAck>` even before any session exists.

use std::{
    io,
    net::SocketAddr,
    os::fd::RawFd,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use e2e::{
    hosts::{Host, TargetHosts},
    tasks::{alive_tasks, assert_tasks_settle},
};
use psrp::transport::ssh::{
    HostKeyPolicy, SshAuth, SshConfig, SshError, SshKey, SshSubsystem, open_subsystem,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::timeout,
};

const CLOSE: &[u8] = b"<Close PSGuid='00000000-0000-0000-0000-000000000000' />\n";
const CLOSE_ACK: &str = "<CloseAck PSGuid='00000000-0000-0000-0000-000000000000'";
/// Bound for any single step that should be quick.
const STEP: Duration = Duration::from_secs(10);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn known_hosts(hosts: &TargetHosts) -> HostKeyPolicy {
    hosts.host_key_policy().expect("known_hosts")
}

fn key_auth(hosts: &TargetHosts) -> SshAuth {
    hosts.key_auth().expect("the key user's key")
}

fn config(host: &Host, user: &str, auth: SshAuth, policy: HostKeyPolicy) -> SshConfig {
    let mut config = SshConfig::new(host.address.clone(), user, auth, policy);
    config.port = host.port;
    config.connect_timeout = STEP;
    config
}

fn key_config(hosts: &TargetHosts, host: &Host) -> SshConfig {
    let mut config = hosts.key_config(host).expect("the key user's config");
    config.connect_timeout = STEP;
    config
}

async fn open(config: &SshConfig) -> Result<SshSubsystem, SshError> {
    timeout(
        config.connect_timeout + Duration::from_secs(5),
        open_subsystem(config),
    )
    .await
    .expect("open_subsystem keeps its own deadline")
}

/// Reads up to and including the next newline.
async fn read_line(stream: &mut SshSubsystem) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("EOF after {line:?}"),
            ));
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
    }
}

/// One `<Close>` / `<CloseAck>` exchange with the peer through the subsystem.
async fn round_trip(stream: &mut SshSubsystem) {
    timeout(STEP, stream.write_all(CLOSE))
        .await
        .expect("write in time")
        .expect("write");
    let line = timeout(STEP, read_line(stream))
        .await
        .expect("CloseAck in time")
        .expect("read");
    assert!(line.starts_with(CLOSE_ACK), "unexpected answer {line:?}");
}

/// The error a failed open reports (panics on success).
async fn open_err(config: &SshConfig) -> SshError {
    match open(config).await {
        Ok(stream) => panic!("open to {} should fail, got {stream:?}", config.address()),
        Err(e) => e,
    }
}

/// getsockopt on the socket of this process bound to `local`, found through /proc/self/fd.
fn socket_option(local: SocketAddr, level: libc::c_int, name: libc::c_int) -> Option<libc::c_int> {
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("socket:") {
            continue;
        }
        // SAFETY: plain getsockname/getsockopt on an fd of this process, into owned buffers.
        unsafe {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::getsockname(fd, (&raw mut addr).cast(), &mut len) != 0
                || addr.sin_family != libc::AF_INET as libc::sa_family_t
            {
                continue;
            }
            let found = SocketAddr::from((
                u32::from_be(addr.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(addr.sin_port),
            ));
            if found != local {
                continue;
            }
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if libc::getsockopt(fd, level, name, (&raw mut value).cast(), &mut len) == 0 {
                return Some(value);
            }
        }
    }
    None
}

/// Waits (bounded) until `path` contains `needle`: sshd writes its log after the fact.
async fn wait_for_log(path: &Path, needle: &str) {
    let deadline = Instant::now() + STEP;
    while !read(path).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{} never said {needle:?}:\n{}",
            path.display(),
            read(path)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ssh_keygen(dir: &Path, name: &str, args: &[&str]) -> (String, String) {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-C", name, "-f"])
        .arg(&path)
        .args(args)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen {args:?}");
    (read(&path), read(&path.with_extension("pub")))
}

fn authorize(hosts: &TargetHosts, user: &str, public_key: &str) {
    use std::io::Write;
    let path = hosts.state.state_dir.join("authorized_keys").join(user);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .expect("authorized_keys");
    writeln!(file, "{}", public_key.trim()).expect("append to authorized_keys");
}

#[tokio::test]
async fn key_auth_moves_bytes_and_closes_cleanly() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let h0 = hosts.host(0).clone();
    let config = key_config(&hosts, &h0);
    let baseline = alive_tasks();

    let mut stream = open(&config).await.expect("key auth opens the subsystem");
    assert_eq!(stream.peer_addr(), h0.ssh_addr().unwrap());
    // TCP_NODELAY, read back from the kernel on the very socket this process holds.
    let nodelay = socket_option(stream.local_addr(), libc::IPPROTO_TCP, libc::TCP_NODELAY);
    assert_eq!(
        nodelay.map(|v| v != 0),
        Some(true),
        "TCP_NODELAY on {}",
        stream.local_addr()
    );
    // The keepalive budget bounds stalled writes too: 15 s x (3 + 1).
    let user_timeout = socket_option(stream.local_addr(), libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT);
    assert_eq!(user_timeout, Some(60_000));
    for _ in 0..3 {
        round_trip(&mut stream).await;
    }
    let status = stream.status();
    assert!(!status.is_ended());
    timeout(STEP, stream.close())
        .await
        .expect("close in time")
        .expect("clean close");
    assert!(status.is_ended());
    assert!(status.error().is_none(), "a close by this client is not an error");
    assert_tasks_settle(baseline, "after close").await;

    // The server's side of it: sshd saw a client disconnect, not a broken connection.
    let log = hosts.state.state_dir.join("h0/sshd.log");
    wait_for_log(&log, "Received disconnect from").await;

    // A subsystem the server does not have.
    let mut other = config.clone();
    other.subsystem = "no-such-subsystem".to_owned();
    let e = open_err(&other).await;
    assert!(matches!(e, SshError::SubsystemRefused { .. }), "{e:?}");
    assert!(e.is_permanent());
}

#[tokio::test]
async fn passphrase_key_and_password_auth() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let h0 = hosts.host(0).clone();
    let users = hosts.state.users.clone();
    let pem = read(&users.passphrase_key.private_key);
    let passphrase = users.passphrase_key.passphrase.clone().expect("a passphrase");

    // Without its passphrase, or with a wrong one, the key does not decode; no secret in messages.
    let e = SshKey::decode(&pem, None).unwrap_err();
    assert!(matches!(e, SshError::KeyInvalid { .. }), "{e:?}");
    let e = SshKey::decode(&pem, Some("not-the-passphrase")).unwrap_err();
    assert!(matches!(e, SshError::KeyInvalid { .. }), "{e:?}");
    assert!(
        !e.to_string().contains("not-the-passphrase") && !format!("{e:?}").contains("not-the-passphrase")
    );

    let key = SshKey::decode(&pem, Some(&passphrase)).expect("the passphrase opens the key");
    assert!(!format!("{key:?}").contains(&passphrase));
    let public: Vec<_> = users
        .passphrase_key
        .public_key
        .split_whitespace()
        .take(2)
        .collect();
    assert!(key.public_key_openssh().starts_with(&public.join(" ")));
    let config = config(
        &h0,
        &users.passphrase_key.name,
        SshAuth::PrivateKey(key),
        known_hosts(&hosts),
    );
    let mut stream = open(&config).await.expect("passphrase key opens");
    round_trip(&mut stream).await;
    stream.close().await.expect("close");

    let auth = SshAuth::Password(users.password.password.clone());
    let config = self::config(&h0, &users.password.name, auth, known_hosts(&hosts));
    assert!(!format!("{config:?}").contains(&users.password.password));
    let mut stream = open(&config).await.expect("password auth opens");
    round_trip(&mut stream).await;
    stream.close().await.expect("close");
}

#[tokio::test]
async fn rsa_and_ecdsa_keys_in_openssh_and_pem_forms() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let h0 = hosts.host(0).clone();
    let user = hosts.state.users.key.name.clone();
    let dir = hosts.state.state_dir.join("client-keys");
    std::fs::create_dir_all(&dir).expect("key dir");
    let cases: [(&str, &[&str], Option<&str>); 6] = [
        ("rsa_openssh", &["-t", "rsa", "-b", "2048", "-N", ""], None),
        (
            "rsa_pkcs1_pem",
            &["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", ""],
            None,
        ),
        (
            "rsa_pkcs8_pem",
            &["-t", "rsa", "-b", "2048", "-m", "PKCS8", "-N", ""],
            None,
        ),
        ("ecdsa_p256", &["-t", "ecdsa", "-b", "256", "-N", ""], None),
        (
            "ecdsa_p384_encrypted",
            &["-t", "ecdsa", "-b", "384", "-N", "s3cret-phrase"],
            Some("s3cret-phrase"),
        ),
        ("ed25519_openssh", &["-t", "ed25519", "-N", ""], None),
    ];
    for (name, args, passphrase) in cases {
        let (private, public) = ssh_keygen(&dir, name, args);
        authorize(&hosts, &user, &public);
        let key = SshKey::decode(&private, passphrase).unwrap_or_else(|e| panic!("{name}: {e}"));
        let config = config(&h0, &user, SshAuth::PrivateKey(key), known_hosts(&hosts));
        let started = Instant::now();
        let mut stream = open(&config).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let opened = started.elapsed();
        round_trip(&mut stream).await;
        stream.close().await.expect("close");
        eprintln!("{name}: opened in {opened:?}");
    }
    // sshd accepted the RSA keys (OpenSSH 8.8+ refuses SHA-1 `ssh-rsa` signatures by default).
    wait_for_log(
        &hosts.state.state_dir.join("h0/sshd.log"),
        "Accepted publickey for",
    )
    .await;
    let log = read(&hosts.state.state_dir.join("h0/sshd.log"));
    assert_eq!(
        log.matches("Accepted publickey for").count(),
        6,
        "sshd.log:\n{log}"
    );
    assert_eq!(log.matches(": RSA SHA256:").count(), 3, "sshd.log:\n{log}");
}

#[tokio::test]
async fn wrong_credentials_are_auth_failed() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let h0 = hosts.host(0).clone();
    let users = hosts.state.users.clone();

    let secret = "definitely-wrong-password";
    let wrong = config(
        &h0,
        &users.password.name,
        SshAuth::Password(secret.into()),
        known_hosts(&hosts),
    );
    let started = Instant::now();
    let e = open_err(&wrong).await;
    let SshError::AuthFailed {
        user,
        methods_tried,
        methods_allowed,
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(user, &users.password.name);
    assert_eq!(methods_tried, &["password"]);
    assert!(
        methods_allowed.iter().any(|m| m == "publickey"),
        "{methods_allowed:?}"
    );
    assert!(e.is_permanent() && e.reason() == "AuthFailed");
    assert!(!e.to_string().contains(secret) && !format!("{e:?}").contains(secret));
    eprintln!("wrong password refused in {:?}: {e}", started.elapsed());

    // A key that is not in the user's authorized_keys (the key user's key, for the password user).
    let unauthorized = config(&h0, &users.password.name, key_auth(&hosts), known_hosts(&hosts));
    let e = open_err(&unauthorized).await;
    assert!(
        matches!(&e, SshError::AuthFailed { methods_tried, .. } if methods_tried == &["publickey"]),
        "{e:?}"
    );

    // A user that does not exist looks the same as a wrong password, as sshd intends.
    let nobody = config(&h0, "psso-no-such-user", key_auth(&hosts), known_hosts(&hosts));
    assert!(matches!(open_err(&nobody).await, SshError::AuthFailed { .. }));
}

#[tokio::test]
async fn host_keys_are_checked_against_known_hosts() {
    let hosts = TargetHosts::up(2).await.expect("hosts");
    let (h0, h1) = (hosts.host(0).clone(), hosts.host(1).clone());
    let user = hosts.state.users.key.name.clone();
    let with = |policy: HostKeyPolicy| config(&h0, &user, key_auth(&hosts), policy);
    let h0_key = h0.host_keys[0].split_once(' ').unwrap().1.to_owned();
    let h1_key = h1.host_keys[0].split_once(' ').unwrap().1.to_owned();

    // Nothing known: refused.
    let e = open_err(&with(HostKeyPolicy::known_hosts(""))).await;
    let SshError::HostKeyUnknown { host, fingerprint } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(host, &h0.address);
    assert!(fingerprint.starts_with("ssh-ed25519 SHA256:"), "{fingerprint}");
    assert!(e.is_permanent());

    // Only the other host's line: still unknown.
    let e = open_err(&with(HostKeyPolicy::known_hosts(&h1.host_keys.join("\n")))).await;
    assert!(matches!(e, SshError::HostKeyUnknown { .. }), "{e:?}");

    // A line for this address with another key: changed (a man in the middle looks like this).
    let changed = format!("{} {h1_key}\n", h0.address);
    let e = open_err(&with(HostKeyPolicy::known_hosts(&changed))).await;
    assert!(
        matches!(&e, SshError::HostKeyChanged { host, .. } if host == &h0.address),
        "{e:?}"
    );

    // The right key, but revoked.
    let revoked = format!("{}\n@revoked * {h0_key}\n", h0.host_keys[0]);
    let e = open_err(&with(HostKeyPolicy::known_hosts(&revoked))).await;
    assert!(matches!(e, SshError::HostKeyRevoked { .. }), "{e:?}");

    // A broken line for this host, and no good one: said so, not "unknown".
    let broken = format!("{} ssh-ed25519 AAAAbroken\n", h0.address);
    let e = open_err(&with(HostKeyPolicy::known_hosts(&broken))).await;
    assert!(matches!(e, SshError::KnownHostsInvalid { line: 1, .. }), "{e:?}");

    // Hashed entries, as `ssh-keygen -H` writes them, with comments and a wildcard line around.
    let dir = hosts.state.state_dir.join("hashed");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("known_hosts");
    std::fs::write(&file, format!("{}\n{}\n", h0.host_keys[0], h1.host_keys[0])).unwrap();
    let status = Command::new("ssh-keygen")
        .arg("-q")
        .arg("-H")
        .arg("-f")
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    let hashed = read(&file);
    assert!(
        hashed.contains("|1|") && !hashed.contains(&h0.address),
        "{hashed}"
    );
    let text = format!("# managed\n10.255.*,!10.255.0.1 {h1_key}\n{hashed}");
    let mut stream = open(&with(HostKeyPolicy::known_hosts(&text)))
        .await
        .expect("hashed entry matches");
    round_trip(&mut stream).await;
    stream.close().await.unwrap();

    // The explicit opt-out accepts an unknown key.
    let mut stream = open(&with(HostKeyPolicy::AcceptAny))
        .await
        .expect("AcceptAny opens");
    round_trip(&mut stream).await;
    stream.close().await.unwrap();
}

#[tokio::test]
async fn non_standard_port_uses_bracketed_known_hosts_names() {
    let mut hosts = TargetHosts::up(1).await.expect("hosts");
    let relay = hosts.relay_start("h0", 1).await.expect("relay");
    let h0 = hosts.host(0).clone();
    let mut config = key_config(&hosts, &h0);
    config.host = relay.address.clone();
    config.port = relay.port;

    // The plain h0 known_hosts does not name [127.0.0.1]:port.
    let e = open_err(&config).await;
    assert!(
        matches!(&e, SshError::HostKeyUnknown { host, .. } if host == &format!("[{}]:{}", relay.address, relay.port))
    );
    // Nor does a plain entry for the relay's address without the port.
    let plain = format!(
        "{} {}\n",
        relay.address,
        h0.host_keys[0].split_once(' ').unwrap().1
    );
    config.host_key_policy = HostKeyPolicy::known_hosts(&plain);
    assert!(matches!(open_err(&config).await, SshError::HostKeyUnknown { .. }));

    config.host_key_policy = HostKeyPolicy::known_hosts(&read(&relay.known_hosts));
    let mut stream = open(&config).await.expect("opens through the relay");
    round_trip(&mut stream).await;
    stream.close().await.unwrap();
}

#[tokio::test]
async fn stopped_sshd_is_refused_at_once_and_black_hole_times_out_in_bound() {
    let hosts = TargetHosts::up(2).await.expect("hosts");
    let (h0, h1) = (hosts.host(0).clone(), hosts.host(1).clone());

    hosts.sshd_stop(&h0.name).await.expect("sshd-stop");
    let started = Instant::now();
    let e = open_err(&key_config(&hosts, &h0)).await;
    let SshError::Connect { source, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused in {:?}",
        started.elapsed()
    );
    assert!(!e.is_permanent());

    hosts.blackhole(&h1.name).await.expect("blackhole");
    let mut config = key_config(&hosts, &h1);
    config.connect_timeout = Duration::from_secs(2);
    let baseline = alive_tasks();
    let started = Instant::now();
    let e = open_err(&config).await;
    let elapsed = started.elapsed();
    assert!(matches!(e, SshError::ConnectTimeout { .. }), "{e:?}");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_millis(2500),
        "{elapsed:?}"
    );
    assert_tasks_settle(baseline, "after a timed-out open").await;
}

/// Opens with a fast keepalive (1 s, 2 unanswered allowed: dead within ~3 s of silence).
async fn open_with_fast_keepalive(hosts: &TargetHosts, host: &Host) -> SshSubsystem {
    let mut config = key_config(hosts, host);
    config.keepalive_interval = Some(Duration::from_secs(1));
    config.keepalive_max = 2;
    let mut stream = open(&config).await.expect("open");
    round_trip(&mut stream).await;
    stream
}

#[tokio::test]
async fn dead_peer_is_detected_by_keepalive() {
    let hosts = TargetHosts::up(2).await.expect("hosts");
    let (h0, h1) = (hosts.host(0).clone(), hosts.host(1).clone());

    // Link down while idle: the reader learns the connection is dead.
    let mut idle = open_with_fast_keepalive(&hosts, &h0).await;
    let status = idle.status();
    hosts.link_down(&h0.name).await.expect("link-down");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let e = timeout(Duration::from_secs(15), idle.read(&mut buf))
        .await
        .expect("the read ends, no hang")
        .expect_err("a dead link is an error, not EOF");
    let elapsed = started.elapsed();
    assert!(
        matches!(SshError::from_io(&e), Some(SshError::KeepaliveTimeout)),
        "{e:?}"
    );
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(elapsed < Duration::from_secs(6), "detected after {elapsed:?}");
    assert!(matches!(status.error(), Some(SshError::KeepaliveTimeout)));
    eprintln!("link down detected after {elapsed:?}");
    // Writes fail too, and close reports why the connection had ended.
    let e = idle.write_all(CLOSE).await.expect_err("write after death");
    assert!(SshError::from_io(&e).is_some(), "{e:?}");
    assert!(matches!(idle.close().await, Err(SshError::KeepaliveTimeout)));

    // Black hole while a writer is pushing more than the windows and socket buffers hold.
    let stream = open_with_fast_keepalive(&hosts, &h1).await;
    let status = stream.status();
    let (mut reader, mut writer) = tokio::io::split(stream);
    hosts.blackhole(&h1.name).await.expect("blackhole");
    let started = Instant::now();
    let write = async {
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..(64 * 1024 * 1024 / chunk.len()) {
            writer.write_all(&chunk).await?;
        }
        io::Result::Ok(())
    };
    let read = async {
        let mut sink = vec![0u8; 8192];
        loop {
            if reader.read(&mut sink).await? == 0 {
                return io::Result::Ok(());
            }
        }
    };
    let (written, read) = timeout(Duration::from_secs(20), async { tokio::join!(write, read) })
        .await
        .expect("reader and writer both end, no hang");
    let elapsed = started.elapsed();
    assert!(
        written.is_err(),
        "64 MiB cannot go into a black hole: {written:?}"
    );
    assert!(read.is_err(), "{read:?}");
    let error = status.error().expect("the connection failed");
    assert!(matches!(error, SshError::KeepaliveTimeout), "{error:?}");
    eprintln!("black hole under write load detected after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
}

#[tokio::test]
async fn killed_sshd_session_and_restarted_peer_end_the_stream() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let h0 = hosts.host(0).clone();

    // sshd-restart replaces only the listener: an established session goes on.
    let mut stream = open(&key_config(&hosts, &h0)).await.expect("open");
    hosts.sshd_restart(&h0.name).await.expect("sshd-restart");
    round_trip(&mut stream).await;

    // Killing the session's own sshd processes (a crash, an OOM kill) ends it at once.
    let listener = read(&hosts.state.state_dir.join("h0/sshd.pid")).trim().to_owned();
    let pids = Command::new("ip")
        .args(["netns", "pids", &h0.netns])
        .output()
        .expect("ip netns pids");
    let mut killed = 0;
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "sshd" && pid != listener {
            let pid: libc::pid_t = pid.parse().unwrap();
            // SAFETY: kill(2) on a pid of the test's own host namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed += 1;
        }
    }
    assert!(killed > 0, "no session sshd found in {}", h0.netns);
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let e = timeout(STEP, stream.read(&mut buf))
        .await
        .expect("no hang")
        .expect_err("an error, not EOF");
    assert!(
        matches!(SshError::from_io(&e), Some(SshError::Disconnected { .. })),
        "{e:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    eprintln!("killed sshd: {e}");
    drop(stream);

    // The subsystem going away (the peer restarts) is a clean end of file on a live connection.
    let mut stream = open(&key_config(&hosts, &h0)).await.expect("open after the kill");
    round_trip(&mut stream).await;
    hosts.peer_restart(&h0.name).await.expect("peer-restart");
    let n = timeout(STEP, stream.read(&mut buf))
        .await
        .expect("no hang")
        .expect("EOF, not an error");
    assert_eq!(n, 0);
    assert!(stream.error().is_none());
    stream.close().await.expect("close after the subsystem ended");
}

#[tokio::test]
async fn dropping_futures_and_streams_leaks_nothing() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let h0 = hosts.host(0).clone();
    let config = key_config(&hosts, &h0);
    let baseline = alive_tasks();

    // Abandon opens at many points: during TCP connect, key exchange, authentication, subsystem.
    for micros in [0, 200, 500, 1_000, 2_000, 3_000, 5_000, 8_000, 12_000, 20_000] {
        let _ = timeout(Duration::from_micros(micros), open_subsystem(&config)).await;
    }
    assert_tasks_settle(baseline, "after abandoned opens").await;

    // Drop an open stream without closing it; also one with a read pending in another task.
    let stream = open(&config).await.expect("open");
    drop(stream);
    let mut stream = open(&config).await.expect("open");
    let status = stream.status();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        let _ = stream.read(&mut buf).await;
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    reader.abort();
    let _ = reader.await;
    assert!(status.is_ended() && status.error().is_none(), "{status:?}");
    assert_tasks_settle(baseline, "after dropped streams").await;

    // And the server saw every one of those connections go.
    let deadline = Instant::now() + STEP;
    loop {
        let pids = Command::new("ip")
            .args(["netns", "pids", &h0.netns])
            .output()
            .expect("ip netns pids");
        let sshd = String::from_utf8_lossy(&pids.stdout)
            .split_whitespace()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .unwrap_or_default()
                    .trim()
                    == "sshd"
            })
            .count();
        if sshd == 1 {
            break; // the listener only
        }
        assert!(
            Instant::now() < deadline,
            "{sshd} sshd processes left on {}",
            h0.netns
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CPU time of this thread: a `#[tokio::test]` runtime runs its tasks (russh's too) on it.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
        usage
    };
    let micros = |t: libc::timeval| Duration::from_micros(t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64);
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    format!(
        "min {:?}, p50 {:?}, p90 {:?}, max {:?}",
        at(0.0),
        at(0.5),
        at(0.9),
        at(1.0)
    )
}

/// Not a timed test: prints what an open costs (connect, key exchange, key auth, subsystem), in
/// wall time and in this client's CPU time, and what a round trip through the subsystem takes.
#[tokio::test]
async fn open_time_with_key_auth() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let h0 = hosts.host(0).clone();
    let config = key_config(&hosts, &h0);
    let (mut wall, mut cpu, mut first, mut trips) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..21 {
        let (started, cpu_before) = (Instant::now(), thread_cpu());
        let mut stream = open(&config).await.expect("open");
        let (elapsed, cpu_used) = (started.elapsed(), thread_cpu() - cpu_before);
        for trip in 0..5 {
            let started = Instant::now();
            round_trip(&mut stream).await;
            // The first one also waits for the server to start the subsystem's process.
            if trip == 0 { &mut first } else { &mut trips }.push(started.elapsed());
        }
        stream.close().await.expect("close");
        if run > 0 {
            // The first open warms caches.
            wall.push(elapsed);
            cpu.push(cpu_used);
        }
    }
    let p50 = {
        let mut w = wall.clone();
        w.sort();
        w[w.len() / 2]
    };
    eprintln!(
        "open (TCP + kex + publickey + subsystem), {} runs: {}",
        wall.len(),
        summary(wall)
    );
    eprintln!("client CPU per open: {}", summary(cpu));
    eprintln!("first <Close>/<CloseAck> round trip: {}", summary(first));
    eprintln!("later <Close>/<CloseAck> round trips: {}", summary(trips));
    assert!(p50 < Duration::from_secs(1), "p50 {p50:?}");
}

//! The target-host harness from Rust, as the remoting client's and controllers' tests will use it:
//! hosts come up, sshd and the peer's WS-Management listener answer, and a black-holed host hangs
//! (rather than refusing) until released.

use std::time::Duration;

use e2e::hosts::TargetHosts;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// Reads the SSH server's identification line.
async fn ssh_banner(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut buf = vec![0u8; 256];
    let n = stream.read(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Posts to /wsman without credentials and returns the whole HTTP reply.
async fn wsman_unauthenticated(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"POST /wsman HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

#[tokio::test]
async fn hosts_come_up_and_faults_bite() {
    let mut hosts = TargetHosts::up(2).await.expect("hosts come up");
    assert_eq!(hosts.state.hosts.len(), 2);
    let h0 = hosts.host(0).clone();
    let h1 = hosts.host(1).clone();
    assert_ne!(h0.address, h1.address);
    assert!(
        std::fs::read_to_string(&hosts.state.known_hosts)
            .expect("known_hosts")
            .contains(&h0.address)
    );
    assert!(h0.peer_socket.exists(), "the host's PSRP peer listens");

    let banner = timeout(Duration::from_secs(10), ssh_banner(h0.ssh_addr().expect("addr")))
        .await
        .expect("banner in time")
        .expect("sshd answers");
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner}");

    // The same peer process serves WS-Management on the host's address; without credentials it asks
    // for them (401 with a Negotiate challenge), as a Windows host does.
    let url = h0.wsman_url().expect("wsman url");
    assert!(url.ends_with(":5985/wsman"), "{url}");
    let reply = timeout(
        Duration::from_secs(10),
        wsman_unauthenticated(h0.wsman_addr().expect("wsman addr")),
    )
    .await
    .expect("wsman reply in time")
    .expect("wsman answers");
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert!(reply.contains("WWW-Authenticate: Negotiate"), "{reply}");

    // A delaying relay in front of the WSMan listener adds its delay to each direction.
    let relay = hosts.relay_start_wsman(&h0.name, 150).await.expect("wsman relay");
    let relayed: std::net::SocketAddr = format!("{}:{}", relay.address, relay.port)
        .parse()
        .expect("relay addr");
    let started = std::time::Instant::now();
    let reply = timeout(Duration::from_secs(10), wsman_unauthenticated(relayed))
        .await
        .expect("relayed wsman reply in time")
        .expect("relayed wsman answers");
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert!(
        started.elapsed() >= Duration::from_millis(280),
        "{:?}",
        started.elapsed()
    );
    hosts.wsman_relay_stop(&h0.name).await.expect("wsman relay stop");

    hosts.blackhole(&h0.name).await.expect("blackhole");
    let hung = timeout(
        Duration::from_secs(2),
        TcpStream::connect(h0.ssh_addr().expect("addr")),
    )
    .await;
    assert!(
        hung.is_err(),
        "a black-holed host must hang, not answer: {hung:?}"
    );
    // The other host is untouched.
    timeout(Duration::from_secs(10), ssh_banner(h1.ssh_addr().expect("addr")))
        .await
        .expect("h1 in time")
        .expect("h1 answers");
    hosts.unblackhole(&h0.name).await.expect("unblackhole");
    timeout(Duration::from_secs(10), ssh_banner(h0.ssh_addr().expect("addr")))
        .await
        .expect("banner in time after unblackhole")
        .expect("sshd answers again");

    hosts.sshd_stop(&h0.name).await.expect("sshd-stop");
    let refused = timeout(
        Duration::from_secs(5),
        TcpStream::connect(h0.ssh_addr().expect("addr")),
    )
    .await
    .expect("a stopped sshd refuses at once");
    assert!(refused.is_err(), "connect to a stopped sshd must be refused");
    hosts.sshd_start(&h0.name).await.expect("sshd-start");
    timeout(Duration::from_secs(10), ssh_banner(h0.ssh_addr().expect("addr")))
        .await
        .expect("banner in time after restart")
        .expect("sshd answers after start");
}

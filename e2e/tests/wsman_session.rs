//! The async session facade over WS-Management (`Session::open_wsman`, `connect_wsman`,
//! `list_shells`, `delete_shell`) against the PSRP peer's WSMan listener on loopback (a process
//! per test, ephemeral port): NTLM with message encryption and Basic, every stream, state across
//! pipelines, stop, disconnect and reconnect, a new client taking over a running job and receiving
//! every line once and in order, a vanished client, enumeration, persist-before-acknowledge, and
//! the typed errors (quota, wrong password, unreachable port, short idle timeout). Every wait is
//! bounded.

use std::{future::Future, time::Duration};

use e2e::wsman_peer::{PASSWORD, USER, WsmanPeer};
use psrp::{
    clixml::PsValue,
    session::{
        PipelineEvent, PipelineHandle, PipelineOutcome, Session, SessionError, SessionOptions,
        WsmanSessionConfig, delete_shell, list_shells,
    },
    state::{Availability, PipelineState, RunspacePoolState},
    transport::wsman::{Credentials, WsmanAuth, WsmanConfig},
    wsman::{BufferMode, ShellState},
};
use tokio::time::timeout;
use uuid::Uuid;

/// Bound for any single step that should be quick.
const STEP: Duration = Duration::from_secs(20);

fn transport(peer: &WsmanPeer, auth: WsmanAuth) -> WsmanConfig {
    let mut config = WsmanConfig::new("127.0.0.1", auth);
    config.port = peer.port;
    config.connect_timeout = Duration::from_secs(5);
    config
}

fn ntlm(peer: &WsmanPeer) -> WsmanSessionConfig {
    let mut config =
        WsmanSessionConfig::new(transport(peer, WsmanAuth::Ntlm(Credentials::new(USER, PASSWORD))));
    // Short long polls keep the tests quick to notice what they wait for.
    config.receive_timeout = Duration::from_secs(5);
    config
}

fn basic(peer: &WsmanPeer) -> WsmanSessionConfig {
    let mut t = transport(peer, WsmanAuth::Basic(Credentials::new(USER, PASSWORD)));
    t.allow_unencrypted = true;
    let mut config = WsmanSessionConfig::new(t);
    config.receive_timeout = Duration::from_secs(5);
    config
}

fn options() -> SessionOptions {
    SessionOptions {
        open_timeout: STEP,
        operation_timeout: Duration::from_secs(10),
        ..SessionOptions::default()
    }
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {STEP:?}"))
}

async fn open(config: &WsmanSessionConfig) -> Session {
    bounded("open_wsman", Session::open_wsman(config, options()))
        .await
        .expect("the session opens")
}

async fn open_err(config: &WsmanSessionConfig) -> SessionError {
    match bounded("open_wsman", Session::open_wsman(config, options())).await {
        Ok(session) => panic!("open should fail, got {session:?}"),
        Err(e) => e,
    }
}

async fn start(session: &Session, script: &str) -> PipelineHandle {
    bounded(
        "invoke",
        session.run_script(script, Vec::<(String, PsValue)>::new()),
    )
    .await
    .expect("the pipeline starts")
}

async fn run(session: &Session, script: &str) -> PipelineOutcome {
    let handle = start(session, script).await;
    bounded(script, handle.collect())
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

fn texts(values: &[PsValue]) -> Vec<String> {
    values.iter().map(psrp::clixml::to_text).collect()
}

fn numbers(values: &[PsValue]) -> Vec<i64> {
    values
        .iter()
        .map(|v| match v {
            PsValue::I32(n) => i64::from(*n),
            PsValue::I64(n) => *n,
            other => panic!("not a number: {other:?}"),
        })
        .collect()
}

/// Takes events (bounded) until `count` numbers were output or the pipeline ended.
async fn take_numbers(handle: &mut PipelineHandle, count: usize) -> Vec<i64> {
    let mut seen = Vec::new();
    while seen.len() < count {
        match bounded("next event", handle.next_event()).await {
            Some(PipelineEvent::Output(v)) => seen.extend(numbers(&[v])),
            Some(event) if event.is_last() => panic!("ended early: {event:?}"),
            Some(_) => {}
            None => panic!("no more events after {seen:?}"),
        }
    }
    seen
}

/// After a disconnect: the numbers the handle still holds (what the pending Receive brought), up
/// to its `State { Disconnected }`, each batch acknowledged as a persisting caller does.
async fn drain_until_disconnected(handle: &mut PipelineHandle) -> Vec<i64> {
    let mut seen = Vec::new();
    loop {
        let batch = bounded("batch", handle.next_batch()).await.expect("events");
        let mut disconnected = false;
        for event in &batch.events {
            match event {
                PipelineEvent::Output(v) => seen.extend(numbers(std::slice::from_ref(v))),
                PipelineEvent::State {
                    state: PipelineState::Disconnected,
                    ..
                } => disconnected = true,
                event if event.is_last() => panic!("ended instead: {event:?}"),
                _ => {}
            }
        }
        batch.acknowledge();
        if disconnected {
            return seen;
        }
    }
}

#[tokio::test]
async fn ntlm_with_encryption_runs_every_stream_and_keeps_state() {
    let peer = WsmanPeer::start(&[]).expect("peer");
    let config = ntlm(&peer);
    let session = open(&config).await;
    let status = session.status().borrow().clone();
    assert_eq!(status.state, RunspacePoolState::Opened);
    assert_eq!(status.availability, Availability::Available);
    assert_eq!(
        status.shell_id,
        Some(session.instance_id()),
        "ShellId = RunspacePoolId"
    );
    assert!(status.wsman_session_id.is_some());
    assert_eq!(session.shell_id(), status.shell_id);
    assert_eq!(session.protocol_version().as_deref(), Some("2.3"));

    let outcome = run(
        &session,
        "Write-Output 'out'; Write-Error 'err'; Write-Warning 'warn'; Write-Verbose 'verb'; \
         Write-Debug 'dbg'; Write-Information 'info'; Write-Progress -Activity 'act' -PercentComplete 50",
    )
    .await;
    assert_eq!(outcome.state, PipelineState::Completed);
    assert_eq!(texts(&outcome.output), ["out"]);
    assert_eq!(outcome.errors.len(), 1);
    assert_eq!(outcome.errors[0].message(), "err");
    assert_eq!(outcome.warnings[0].message, "warn");
    assert_eq!(outcome.verbose[0].message, "verb");
    assert_eq!(outcome.debug[0].message, "dbg");
    assert_eq!(outcome.information[0].message(), "info");
    assert_eq!(outcome.progress[0].activity, "act");
    assert!(outcome.had_errors());

    // Session state across pipelines.
    run(&session, "$kept = 'from the first pipeline'").await;
    assert_eq!(
        texts(&run(&session, "$kept").await.output),
        ["from the first pipeline"]
    );

    // A terminating error fails the pipeline, not the session.
    let failed = run(&session, "throw 'boom'").await;
    assert_eq!(failed.state, PipelineState::Failed);
    assert_eq!(
        failed.error.as_ref().map(|e| e.message().to_owned()).as_deref(),
        Some("boom")
    );

    // Output larger than one envelope arrives whole, over several Receives.
    let big = run(&session, "1..3 | ForEach-Object { 'x' * 200000 }").await;
    assert_eq!(big.output.len(), 3);
    assert!(texts(&big.output).iter().all(|t| t.len() == 200_000));

    bounded("close", session.close()).await.expect("close");
    let shells = bounded("list", list_shells(&config, STEP)).await.expect("list");
    assert!(shells.is_empty(), "close deletes the shell: {shells:?}");
}

#[tokio::test]
async fn basic_over_http_only_when_allowed_and_pipelines_queue() {
    let peer = WsmanPeer::start(&["--wsman-allow-unencrypted"]).expect("peer");
    let config = basic(&peer);
    let session = open(&config).await;
    // Three invokes at once run one after the other, in order.
    let (a, b, c) = tokio::join!(
        async { run(&session, "Start-Sleep -Milliseconds 200; 'a'").await },
        async { run(&session, "'b'").await },
        async { run(&session, "'c'").await },
    );
    assert_eq!(
        [texts(&a.output), texts(&b.output), texts(&c.output)].concat(),
        ["a", "b", "c"]
    );
    bounded("close", session.close()).await.expect("close");

    // Without the allowance, Basic over HTTP sends nothing.
    let mut refused = basic(&peer);
    refused.transport.allow_unencrypted = false;
    let error = open_err(&refused).await;
    assert_eq!(error.reason(), "UnencryptedRefused", "{error}");
    assert!(error.is_permanent());
}

#[tokio::test]
async fn stop_ends_a_running_pipeline_and_the_session_goes_on() {
    let peer = WsmanPeer::start(&[]).expect("peer");
    let session = open(&ntlm(&peer)).await;
    let mut handle = start(
        &session,
        "1..100000 | ForEach-Object { Start-Sleep -Milliseconds 50; $_ }",
    )
    .await;
    assert_eq!(take_numbers(&mut handle, 2).await, [1, 2]);
    assert_eq!(session.status().borrow().availability, Availability::Busy);
    bounded("stop", handle.stop()).await.expect("stop");
    let outcome = bounded("collect", handle.collect()).await.expect("ends");
    assert_eq!(outcome.state, PipelineState::Stopped);
    assert_eq!(texts(&run(&session, "'after'").await.output), ["after"]);
    // Dropping a running pipeline's handle stops it too; the next pipeline runs.
    let dropped = start(&session, "Start-Sleep -Seconds 60").await;
    drop(dropped);
    assert_eq!(texts(&run(&session, "'next'").await.output), ["next"]);
    bounded("close", session.close()).await.expect("close");
}

#[tokio::test]
async fn disconnect_and_reconnect_keep_the_running_job() {
    let peer = WsmanPeer::start(&[]).expect("peer");
    let session = open(&ntlm(&peer)).await;
    run(&session, "$state = 'kept'").await;

    let error = bounded(
        "short",
        session.disconnect(Duration::from_secs(10), BufferMode::Block),
    )
    .await
    .expect_err("under 60 s is refused");
    assert_eq!(error.reason(), "InvalidIdleTimeout");

    let mut handle = start(
        &session,
        "1..40 | ForEach-Object { Start-Sleep -Milliseconds 100; $_ }",
    )
    .await;
    let mut seen = take_numbers(&mut handle, 3).await;
    bounded(
        "disconnect",
        session.disconnect(Duration::from_secs(120), BufferMode::Block),
    )
    .await
    .expect("disconnect");
    assert_eq!(session.status().borrow().state, RunspacePoolState::Disconnected);
    // The job runs on on the server while nobody receives.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let shells = bounded("list", list_shells(&ntlm(&peer), STEP))
        .await
        .expect("list");
    assert!(
        shells
            .iter()
            .any(|s| Some(s.shell_id) == session.shell_id() && s.state == Some(ShellState::Disconnected)),
        "{shells:?}"
    );
    bounded("reconnect", session.reconnect())
        .await
        .expect("reconnect");
    assert_eq!(session.status().borrow().state, RunspacePoolState::Opened);
    let mut ended = None;
    while ended.is_none() {
        match bounded("event", handle.next_event()).await {
            Some(PipelineEvent::Output(v)) => seen.extend(numbers(&[v])),
            Some(PipelineEvent::State { state, .. }) if state.is_final() => ended = Some(state),
            Some(PipelineEvent::Lost(e)) => panic!("lost: {e}"),
            Some(_) => {}
            None => panic!("no final state"),
        }
    }
    assert_eq!(ended, Some(PipelineState::Completed));
    assert_eq!(seen, (1..=40).collect::<Vec<_>>(), "every number once, in order");
    assert_eq!(texts(&run(&session, "$state").await.output), ["kept"]);
    bounded("close", session.close()).await.expect("close");
}

/// A new client (as after an operator restart) connects to a disconnected shell whose job writes
/// a numbered line every 100 ms, and receives every number exactly once, in order, persisting
/// each batch before acknowledging it.
#[tokio::test]
async fn a_new_client_connects_and_receives_every_line_once() {
    let peer = WsmanPeer::start(&[]).expect("peer");
    let mut config = ntlm(&peer);
    let (session_id, shell_id) = (Uuid::new_v4(), Uuid::new_v4());
    // Both recorded before the open, as the operator records them in the PSSession's status.
    config.session_id = Some(session_id);
    config.shell_id = Some(shell_id);
    let first = open(&config).await;
    assert_eq!(first.shell_id(), Some(shell_id), "the configured ShellId is used");
    assert_eq!(first.instance_id(), shell_id);
    assert_eq!(
        first.wsman_session_id(),
        Some(session_id),
        "the configured SessionId is used"
    );
    run(&first, "$who = 'first client'").await;
    let mut handle = start(
        &first,
        "1..50 | ForEach-Object { Start-Sleep -Milliseconds 100; $_ }",
    )
    .await;
    let mut saved = Vec::new();
    // The first client persists a few batches, then disconnects (a graceful operator stop).
    while saved.len() < 5 {
        let batch = bounded("batch", handle.next_batch()).await.expect("events");
        assert!(batch.needs_acknowledgement());
        for event in &batch.events {
            if let PipelineEvent::Output(v) = event {
                saved.extend(numbers(std::slice::from_ref(v)));
            }
        }
        batch.acknowledge();
    }
    bounded(
        "disconnect",
        first.disconnect(Duration::from_secs(120), BufferMode::Block),
    )
    .await
    .expect("disconnect");
    // What the Receive pending at the Disconnect brought is in the handle: saved before it goes.
    saved.extend(drain_until_disconnected(&mut handle).await);
    drop(handle);
    drop(first);

    // The new client: a new process would know the shell id from the PSSession's status.
    let (second, mut adopted) = bounded(
        "connect",
        Session::connect_wsman(&ntlm(&peer), shell_id, options()),
    )
    .await
    .expect("connect");
    assert_eq!(second.instance_id(), shell_id);
    assert_eq!(second.status().borrow().state, RunspacePoolState::Opened);
    assert_eq!(adopted.len(), 1, "the running job is handed over");
    let mut job = adopted.remove(0);
    let mut end = None;
    while end.is_none() {
        let batch = bounded("batch", job.next_batch()).await.expect("events");
        for event in &batch.events {
            match event {
                PipelineEvent::Output(v) => saved.extend(numbers(std::slice::from_ref(v))),
                PipelineEvent::State { state, .. } if state.is_final() => end = Some(*state),
                PipelineEvent::Lost(e) => panic!("lost: {e}"),
                _ => {}
            }
        }
        batch.acknowledge();
    }
    assert_eq!(end, Some(PipelineState::Completed));
    assert_eq!(saved, (1..=50).collect::<Vec<_>>(), "every number once, in order");
    // The session's state came along.
    assert_eq!(texts(&run(&second, "$who").await.output), ["first client"]);
    bounded("close", second.close()).await.expect("close");
}

/// A client that goes away without Delete or Disconnect (dropped, as a killed process) leaves the
/// shell to the server, which disconnects it once the connections are gone; a new client connects.
#[tokio::test]
async fn a_vanished_client_leaves_a_shell_another_connects_to() {
    let peer = WsmanPeer::start(&["--wsman-auto-disconnect=1"]).expect("peer");
    let config = ntlm(&peer);
    let first = open(&config).await;
    let shell_id = first.shell_id().expect("shell id");
    let handle = start(
        &first,
        "1..30 | ForEach-Object { Start-Sleep -Milliseconds 100; $_ }",
    )
    .await;
    // Vanish: the task and its connections go, no Delete, no Disconnect.
    std::mem::forget(handle);
    drop(first);

    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let shells = bounded("list", list_shells(&config, STEP)).await.expect("list");
        if shells
            .iter()
            .any(|s| s.shell_id == shell_id && s.state == Some(ShellState::Disconnected))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not disconnected: {shells:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (second, adopted) = bounded("connect", Session::connect_wsman(&config, shell_id, options()))
        .await
        .expect("connect");
    let mut numbers_seen = Vec::new();
    for handle in adopted {
        let outcome = bounded("collect", handle.collect()).await.expect("ends");
        numbers_seen.extend(numbers(&outcome.output));
    }
    // What the vanished client had not received arrives; nothing twice, in order.
    assert!(!numbers_seen.is_empty());
    assert!(
        numbers_seen.windows(2).all(|w| w[1] == w[0] + 1),
        "{numbers_seen:?}"
    );
    assert_eq!(numbers_seen.last(), Some(&30));
    bounded("close", second.close()).await.expect("close");
}

#[tokio::test]
async fn enumerate_and_delete_shells() {
    let peer = WsmanPeer::start(&[]).expect("peer");
    let config = ntlm(&peer);
    let a = open(&config).await;
    let b = open(&config).await;
    let shells = bounded("list", list_shells(&config, STEP)).await.expect("list");
    let ids: Vec<Uuid> = shells.iter().map(|s| s.shell_id).collect();
    assert!(
        ids.contains(&a.instance_id()) && ids.contains(&b.instance_id()),
        "{shells:?}"
    );
    assert!(shells.iter().all(|s| s.state == Some(ShellState::Connected)));

    // Orphan cleanup: delete b's shell by id; b finds it gone.
    bounded("delete", delete_shell(&config, b.instance_id(), STEP))
        .await
        .expect("delete");
    let error = bounded("delete again", delete_shell(&config, b.instance_id(), STEP))
        .await
        .expect_err("gone");
    assert_eq!(error.reason(), "ShellNotFound");
    let error = bounded(
        "connect to nothing",
        Session::connect_wsman(&config, Uuid::new_v4(), options()),
    )
    .await
    .expect_err("no such shell");
    assert_eq!(error.reason(), "ShellNotFound", "{error}");
    assert!(error.is_permanent());
    bounded("close", a.close()).await.expect("close");
    drop(b);
}

#[tokio::test]
async fn typed_errors_quota_auth_unreachable() {
    let peer = WsmanPeer::start(&["--wsman-max-shells-per-user=1"]).expect("peer");
    let config = ntlm(&peer);
    let first = open(&config).await;
    let error = open_err(&config).await;
    assert_eq!(error.reason(), "QuotaExceeded", "{error}");
    assert!(!error.is_permanent(), "a quota is retried");
    bounded("close", first.close()).await.expect("close");
    // The quota frees up with the close: a retry opens.
    bounded("close", open(&config).await.close())
        .await
        .expect("close");

    let mut wrong = ntlm(&peer);
    wrong.transport.auth = WsmanAuth::Ntlm(Credentials::new(USER, "not the password"));
    let error = open_err(&wrong).await;
    assert_eq!(error.reason(), "AuthFailed", "{error}");
    assert!(error.is_permanent());

    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let mut unreachable = ntlm(&peer);
    unreachable.transport.port = port;
    let error = open_err(&unreachable).await;
    assert_eq!(error.reason(), "HostUnreachable", "{error}");
    assert!(!error.is_permanent());
}

/// Persist-before-acknowledge: while a batch is not acknowledged, no further Receive goes out,
/// so the server keeps (and the status shows) the job as running with its output buffered.
#[tokio::test]
async fn an_unacknowledged_batch_holds_the_next_receive() {
    let peer = WsmanPeer::start(&[]).expect("peer");
    let session = open(&ntlm(&peer)).await;
    let mut handle = start(
        &session,
        "1..5 | ForEach-Object { Start-Sleep -Milliseconds 100; $_ }",
    )
    .await;
    let batch = bounded("batch", handle.next_batch()).await.expect("events");
    assert!(batch.needs_acknowledgement());
    let mut seen: Vec<i64> = batch
        .events
        .iter()
        .filter_map(|e| match e {
            PipelineEvent::Output(v) => Some(numbers(std::slice::from_ref(v))[0]),
            _ => None,
        })
        .collect();
    // Held: nothing more arrives while the batch is not acknowledged, though the job finishes.
    assert!(
        timeout(Duration::from_millis(1500), handle.next_event())
            .await
            .is_err(),
        "no Receive may go before the acknowledgement"
    );
    batch.acknowledge();
    let rest = bounded("collect", handle.collect()).await.expect("ends");
    seen.extend(numbers(&rest.output));
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    bounded("close", session.close()).await.expect("close");
}

/// A TCP relay in front of the peer whose connections can all be cut at once, as a network fault
/// cuts them (the client sees its requests' connections break).
struct Relay {
    port: u16,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    /// New connections are accepted and then never answered: a black hole behind a live port.
    hang: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: u16) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = connections.clone();
        let hang = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hanging = hang.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let black_hole = hanging.load(std::sync::atomic::Ordering::Relaxed);
                let task = tokio::spawn(async move {
                    if black_hole {
                        // Take the request, answer nothing.
                        let _ = tokio::io::copy(&mut client, &mut tokio::io::sink()).await;
                    } else if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                kept.lock().expect("lock").push(task.abort_handle());
            }
        });
        Relay {
            port,
            connections,
            hang,
            accept,
        }
    }

    /// Drops every connection relayed so far (both sockets close).
    fn cut(&self) -> usize {
        let cut: Vec<_> = self.connections.lock().expect("lock").drain(..).collect();
        for connection in &cut {
            connection.abort();
        }
        cut.len()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Robust connections (MS-WSMV 3.1.4.1.39): the connections carrying the Receives break mid-job;
/// the client sends each lost Receive again as a retransmission, the peer answers from its cache,
/// and every number arrives once, in order; the session goes on.
#[tokio::test]
async fn a_cut_connection_is_survived_by_retransmitting_the_receive() {
    let peer = WsmanPeer::start(&[]).expect("peer");
    let relay = Relay::start(peer.port).await;
    let mut config = ntlm(&peer);
    config.transport.port = relay.port;
    // Long polls that end within the test, so the peer answers the retransmitted ones.
    config.receive_timeout = Duration::from_secs(2);
    let session = open(&config).await;
    // Gaps between outputs keep the pipeline's Receive waiting on the server when the cuts come.
    let mut handle = start(
        &session,
        "1..12 | ForEach-Object { Start-Sleep -Milliseconds 400; $_ }",
    )
    .await;
    let mut seen = take_numbers(&mut handle, 2).await;
    let mut cuts = 0;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(550)).await;
        cuts += relay.cut();
    }
    assert!(cuts > 0, "connections were cut");
    let rest = bounded("collect", handle.collect()).await.expect("the job ends");
    assert_eq!(rest.state, PipelineState::Completed);
    seen.extend(numbers(&rest.output));
    assert_eq!(seen, (1..=12).collect::<Vec<_>>(), "every number once, in order");
    // The peer logs a retransmission once the kept operation has its response.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !peer.log().contains("fetched again") && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = peer.log();
    assert!(
        log.contains("fetched again"),
        "a Receive was retransmitted and answered from the cache; the peer's log ends:\n{}",
        &log[log.len().saturating_sub(4000)..]
    );
    assert_eq!(texts(&run(&session, "'still open'").await.output), ["still open"]);
    bounded("close", session.close()).await.expect("close");
}

/// The same facade against a namespace host's WSMan listener (the host's own address, port 5985,
/// the run's password user), directly and through the harness's delaying relay (150 ms each
/// way): NTLM with encryption, a job handed from one client to a new one by disconnect and connect.
#[tokio::test]
async fn a_namespace_host_over_a_slow_link() {
    let mut hosts = e2e::hosts::TargetHosts::up(1).await.expect("hosts");
    let host = hosts.host(0).clone();
    let user = hosts.state.users.password.clone();
    let addr = host.wsman_addr().expect("wsman listener");
    let config_for = |address: String, port: u16| {
        let mut transport = WsmanConfig::new(
            address,
            WsmanAuth::Ntlm(Credentials::new(user.name.clone(), user.password.clone())),
        );
        transport.port = port;
        transport.connect_timeout = Duration::from_secs(5);
        let mut config = WsmanSessionConfig::new(transport);
        config.receive_timeout = Duration::from_secs(5);
        config
    };
    let direct = config_for(addr.ip().to_string(), addr.port());
    let session = open(&direct).await;
    assert_eq!(
        texts(&run(&session, "Write-Output 'from the namespace'").await.output),
        ["from the namespace"]
    );
    bounded("close", session.close()).await.expect("close");

    let relay = hosts.relay_start_wsman(&host.name, 150).await.expect("relay");
    let slow = config_for(relay.address.clone(), relay.port);
    let first = open(&slow).await;
    let shell_id = first.instance_id();
    let mut handle = start(
        &first,
        "1..20 | ForEach-Object { Start-Sleep -Milliseconds 100; $_ }",
    )
    .await;
    let mut seen = take_numbers(&mut handle, 3).await;
    bounded(
        "disconnect",
        first.disconnect(Duration::from_secs(120), BufferMode::Block),
    )
    .await
    .expect("disconnect");
    seen.extend(drain_until_disconnected(&mut handle).await);
    drop(handle);
    drop(first);
    let (second, adopted) = bounded("connect", Session::connect_wsman(&slow, shell_id, options()))
        .await
        .expect("connect");
    for handle in adopted {
        let outcome = bounded("collect", handle.collect()).await.expect("ends");
        seen.extend(numbers(&outcome.output));
    }
    assert_eq!(seen, (1..=20).collect::<Vec<_>>(), "every number once, in order");
    bounded("close", second.close()).await.expect("close");
    hosts.wsman_relay_stop(&host.name).await.expect("relay stop");
}

/// `operation_timeout` bounds each request that waits for the server (not a Receive long poll): a
/// host that stops answering (every connection cut, new ones black-holed) fails the session with
/// `OperationTimeout` within it, and the pipeline's invoke gets the same error.
#[tokio::test]
async fn an_unanswered_command_is_an_operation_timeout() {
    let peer = WsmanPeer::start(&[]).expect("peer");
    let relay = Relay::start(peer.port).await;
    let mut config = ntlm(&peer);
    config.transport.port = relay.port;
    let options = SessionOptions {
        operation_timeout: Duration::from_secs(3),
        ..options()
    };
    let session = bounded("open", Session::open_wsman(&config, options))
        .await
        .expect("open");
    assert_eq!(texts(&run(&session, "'answered'").await.output), ["answered"]);
    relay.hang.store(true, std::sync::atomic::Ordering::Relaxed);
    relay.cut();
    // Let the client see its kept-alive connections closed: the Command then goes on a new one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = tokio::time::Instant::now();
    let error = bounded(
        "invoke",
        session.run_script("'never answered'", Vec::<(String, PsValue)>::new()),
    )
    .await
    .expect_err("no answer");
    assert_eq!(error.reason(), "OperationTimeout", "{error}");
    assert!(!error.is_permanent());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the operation timeout: {:?}",
        started.elapsed()
    );
    let status = session.status().borrow().clone();
    assert_eq!(status.state, RunspacePoolState::Broken);
    assert_eq!(status.error.map(|e| e.reason()), Some("OperationTimeout"));
}

/// OutputBufferingMode: with Drop, a disconnected shell whose buffer fills discards the oldest
/// output and its job runs to the end (a new client gets the newest lines and the final state);
/// with Block (the other tests) nothing is lost.
#[tokio::test]
async fn drop_mode_discards_the_oldest_output_of_a_disconnected_shell() {
    let peer = WsmanPeer::start(&["--wsman-buffer-bytes=4096"]).expect("peer");
    let mut config = ntlm(&peer);
    config.buffer_mode = BufferMode::Drop;
    let first = open(&config).await;
    let shell_id = first.instance_id();
    let mut handle = start(
        &first,
        "1..400 | ForEach-Object { Start-Sleep -Milliseconds 5; \"line $_ of the job, long enough to fill a buffer\" }",
    )
    .await;
    let mut seen = Vec::new();
    while seen.is_empty() {
        let batch = bounded("batch", handle.next_batch()).await.expect("events");
        seen.extend(texts(
            &batch
                .events
                .iter()
                .filter_map(|e| match e {
                    PipelineEvent::Output(v) => Some(v.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ));
        batch.acknowledge();
    }
    bounded(
        "disconnect",
        first.disconnect(Duration::from_secs(120), BufferMode::Drop),
    )
    .await
    .expect("disconnect");
    loop {
        match bounded("event", handle.next_event()).await {
            Some(PipelineEvent::State {
                state: PipelineState::Disconnected,
                ..
            }) => break,
            Some(event) if event.is_last() => panic!("ended instead: {event:?}"),
            Some(_) => {}
            None => panic!("no Disconnected state"),
        }
    }
    drop(handle);
    drop(first);
    // The job runs to its end meanwhile (400 x 5 ms), dropping what the buffer cannot hold.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (second, adopted) = bounded("connect", Session::connect_wsman(&config, shell_id, options()))
        .await
        .expect("connect");
    assert_eq!(adopted.len(), 1);
    let outcome = bounded("collect", adopted.into_iter().next().expect("job").collect())
        .await
        .expect("ends");
    assert_eq!(
        outcome.state,
        PipelineState::Completed,
        "the final state is never dropped"
    );
    let received = texts(&outcome.output);
    assert!(
        received.len() < 300,
        "Drop discarded output: {} lines came",
        received.len()
    );
    assert_eq!(
        received.last().map(String::as_str),
        Some("line 400 of the job, long enough to fill a buffer"),
        "the newest output is kept"
    );
    bounded("close", second.close()).await.expect("close");
}

/// Output numbers of a batch.
fn batch_numbers(events: &[PipelineEvent]) -> Vec<i64> {
    events
        .iter()
        .filter_map(|e| match e {
            PipelineEvent::Output(v) => Some(numbers(std::slice::from_ref(v))[0]),
            _ => None,
        })
        .collect()
}

/// A crash between receiving a batch and saving it: the next process resumes with the OperationID
/// saved with the previous batch, its first Receive is a retransmission of the lost one, and the
/// peer's robust-connection cache hands that output out again: every number once, in order.
#[tokio::test]
async fn a_crash_before_saving_a_batch_is_resumed_from_the_servers_cache() {
    let peer = WsmanPeer::start(&["--wsman-auto-disconnect=1"]).expect("peer");
    let config = ntlm(&peer);
    let first = open(&config).await;
    let shell_id = first.instance_id();
    let mut handle = start(
        &first,
        "1..30 | ForEach-Object { Start-Sleep -Milliseconds 100; $_ }",
    )
    .await;
    let pipeline = handle.id();
    // Saved: a first batch, with the OperationID of the Receive after it.
    let batch = bounded("batch", handle.next_batch()).await.expect("events");
    let mut saved = batch_numbers(&batch.events);
    let resume_with = batch
        .next_receive_operation()
        .expect("WSMan batches name the next Receive");
    batch.acknowledge();
    // Received, not saved: the process dies here (no Disconnect, no Delete).
    let lost = bounded("batch", handle.next_batch()).await.expect("events");
    let lost_numbers = batch_numbers(&lost.events);
    assert!(!lost_numbers.is_empty());
    std::mem::forget(lost);
    std::mem::forget(handle);
    drop(first);

    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let shells = bounded("list", list_shells(&config, STEP)).await.expect("list");
        if shells
            .iter()
            .any(|s| s.shell_id == shell_id && s.state == Some(ShellState::Disconnected))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not disconnected: {shells:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (second, mut adopted) = bounded(
        "connect",
        Session::connect_wsman_resuming(&config, shell_id, options(), &[(pipeline, resume_with)]),
    )
    .await
    .expect("connect");
    assert_eq!(adopted.len(), 1);
    let mut job = adopted.remove(0);
    let first_again = bounded("batch", job.next_batch()).await.expect("events");
    assert_eq!(
        batch_numbers(&first_again.events),
        lost_numbers,
        "the unsaved batch comes again"
    );
    saved.extend(batch_numbers(&first_again.events));
    first_again.acknowledge();
    let rest = bounded("collect", job.collect()).await.expect("ends");
    assert_eq!(rest.state, PipelineState::Completed);
    saved.extend(numbers(&rest.output));
    assert_eq!(saved, (1..=30).collect::<Vec<_>>(), "every number once, in order");
    assert!(peer.log().contains("fetched again"));
    bounded("close", second.close()).await.expect("close");
}

/// Remove-PSSession of a disconnected session: close deletes the shell on the server too; a
/// reconnect of a connected session is refused without touching it.
#[tokio::test]
async fn close_deletes_a_disconnected_shell() {
    let peer = WsmanPeer::start(&[]).expect("peer");
    let config = ntlm(&peer);
    let session = open(&config).await;
    let error = bounded("reconnect", session.reconnect())
        .await
        .expect_err("connected already");
    assert_eq!(error.reason(), "InvalidState");
    bounded(
        "disconnect",
        session.disconnect(Duration::from_secs(60), BufferMode::Drop),
    )
    .await
    .expect("disconnect");
    let status = session.status().borrow().clone();
    assert_eq!(status.state, RunspacePoolState::Disconnected);
    assert_eq!(status.availability, Availability::None);
    bounded("close", session.close()).await.expect("close");
    let shells = bounded("list", list_shells(&config, STEP)).await.expect("list");
    assert!(shells.is_empty(), "{shells:?}");
}

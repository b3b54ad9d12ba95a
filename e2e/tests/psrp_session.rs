//! The async session facade (`psrp::session`) against the PSRP peer over real sshd on namespace
//! hosts: open and close, state shared between pipelines, every stream, errors, stop, large output,
//! Unicode, typed parameters, and failures, each a distinct typed error with partial output kept.
//! Every wait is bounded.

use std::{
    future::Future,
    path::Path,
    time::{Duration, Instant},
};

use e2e::{
    hosts::{Host, TargetHosts},
    tasks::{alive_tasks, assert_tasks_settle},
};
use psrp::{
    clixml::{ObjContent, PsValue},
    session::{
        CollectError, PipelineEvent, PipelineHandle, PipelineOutcome, Session, SessionError, SessionOptions,
        SessionStatus,
    },
    state::{Availability, PipelineState, RunspacePoolState},
    transport::ssh::{HostKeyPolicy, SshAuth, SshConfig, SshError},
};
use tokio::time::timeout;

/// Bound for any single step that should be quick.
const STEP: Duration = Duration::from_secs(15);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn key_auth(hosts: &TargetHosts) -> SshAuth {
    hosts.key_auth().expect("the key user's key")
}

fn ssh_config(hosts: &TargetHosts, host: &Host, user: &str, auth: SshAuth) -> SshConfig {
    let mut config = hosts.ssh_config(host, user, auth).expect("known_hosts");
    config.connect_timeout = STEP;
    config
}

fn key_config(hosts: &TargetHosts, host: &Host) -> SshConfig {
    ssh_config(hosts, host, &hosts.state.users.key.name, key_auth(hosts))
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

async fn try_open(config: &SshConfig, options: SessionOptions) -> Result<Session, SessionError> {
    let bound = options.open_timeout + Duration::from_secs(5);
    timeout(bound, Session::open_ssh(config, options))
        .await
        .expect("open_ssh keeps its own deadline")
}

async fn open(hosts: &TargetHosts, host: &Host) -> Session {
    try_open(&key_config(hosts, host), options())
        .await
        .expect("the session opens")
}

async fn open_err(config: &SshConfig, options: SessionOptions) -> SessionError {
    match try_open(config, options).await {
        Ok(session) => panic!("open should fail, got {session:?}"),
        Err(e) => e,
    }
}

async fn start(session: &Session, script: &str, parameters: Vec<(&str, PsValue)>) -> PipelineHandle {
    bounded("invoke", session.run_script(script, parameters))
        .await
        .expect("the pipeline starts")
}

/// Runs a script to its end.
async fn run_with(session: &Session, script: &str, parameters: Vec<(&str, PsValue)>) -> PipelineOutcome {
    let handle = start(session, script, parameters).await;
    bounded(script, handle.collect())
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

async fn run(session: &Session, script: &str) -> PipelineOutcome {
    run_with(session, script, Vec::new()).await
}

fn texts(values: &[PsValue]) -> Vec<&str> {
    values
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}")))
        .collect()
}

/// Waits (bounded) until the status satisfies `ok`.
async fn wait_status(session: &Session, what: &str, ok: impl Fn(&SessionStatus) -> bool) -> SessionStatus {
    let mut status = session.status();
    let found = bounded(what, status.wait_for(|s| ok(s)))
        .await
        .expect("the session task is alive");
    found.clone()
}

async fn wait_sshd_count(host: &Host, count: usize) {
    let deadline = Instant::now() + STEP;
    while host.sshd_processes().len() != count {
        assert!(
            Instant::now() < deadline,
            "{} sshd processes on {}",
            host.sshd_processes().len(),
            host.netns
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn open_status_busy_and_close() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let h0 = hosts.host(0).clone();
    let baseline = alive_tasks();

    let session = open(&hosts, &h0).await;
    assert!(!session.instance_id().is_nil());
    assert_eq!(session.protocol_version().as_deref(), Some("2.3"));
    let status = session.status().borrow().clone();
    assert_eq!(
        (status.state, status.availability),
        (RunspacePoolState::Opened, Availability::Available)
    );
    assert!(status.error.is_none());

    // Busy while a pipeline runs, Available again after it.
    let mut handle = start(&session, "Start-Sleep -Milliseconds 300; 'done'", Vec::new()).await;
    wait_status(&session, "Busy", |s| s.availability == Availability::Busy).await;
    let mut saw_running = false;
    let mut output = Vec::new();
    while let Some(event) = bounded("events", handle.next_event()).await {
        match event {
            PipelineEvent::State {
                state: PipelineState::Running,
                ..
            } => saw_running = true,
            PipelineEvent::Output(v) => output.push(v),
            PipelineEvent::State { state, error } => {
                assert_eq!(state, PipelineState::Completed, "{error:?}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_running);
    assert_eq!(texts(&output), ["done"]);
    wait_status(&session, "Available", |s| {
        s.availability == Availability::Available
    })
    .await;

    let mut watcher = session.status();
    bounded("close", session.close()).await.expect("a clean close");
    let last = watcher.borrow_and_update().clone();
    assert_eq!(
        (last.state, last.availability),
        (RunspacePoolState::Closed, Availability::None)
    );
    assert!(last.error.is_none(), "{:?}", last.error);
    assert_tasks_settle(baseline, "after close").await;
    wait_sshd_count(&h0, 1).await;
}

#[tokio::test]
async fn variables_persist_across_pipelines_and_invokes_queue_in_order() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let session = open(&hosts, hosts.host(0)).await;

    let first = run(&session, "$x = 'v'").await;
    assert_eq!(first.state, PipelineState::Completed);
    assert!(first.output.is_empty());
    let second = run(&session, "$x").await;
    assert_eq!(texts(&second.output), ["v"]);

    // One pipeline at a time: invokes made together run one after the other, in order.
    let script = |n: i32| format!("$x = \"$x-{n}\"; Start-Sleep -Milliseconds 100; $x");
    let (a, b, c) = (script(1), script(2), script(3));
    let started = Instant::now();
    let runs = async {
        let (a, b, c) = tokio::join!(run(&session, &a), run(&session, &b), run(&session, &c));
        (a, b, c)
    };
    let (a, b, c) = bounded("three queued pipelines", runs).await;
    assert_eq!(
        (texts(&a.output), texts(&b.output), texts(&c.output)),
        (vec!["v-1"], vec!["v-1-2"], vec!["v-1-2-3"])
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    bounded("close", session.close()).await.expect("close");
}

#[tokio::test]
async fn every_stream_with_its_messages() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let session = open(&hosts, hosts.host(0)).await;
    let script = "Write-Output 'out'
Write-Error 'err'
Write-Warning 'warn'
Write-Verbose 'verb'
Write-Debug 'dbg'
Write-Information 'info'
Write-Progress -Activity 'act' -PercentComplete 42";
    let outcome = run(&session, script).await;
    assert_eq!(outcome.state, PipelineState::Completed);
    assert_eq!(texts(&outcome.output), ["out"]);
    assert_eq!(outcome.errors.len(), 1);
    assert_eq!(outcome.errors[0].message(), "err");
    let messages = |records: &[psrp::clixml::InformationalRecord]| {
        records.iter().map(|r| r.message.clone()).collect::<Vec<_>>()
    };
    assert_eq!(messages(&outcome.warnings), ["warn"]);
    assert_eq!(messages(&outcome.verbose), ["verb"]);
    assert_eq!(messages(&outcome.debug), ["dbg"]);
    assert_eq!(outcome.information.len(), 1);
    assert_eq!(outcome.information[0].message(), "info");
    assert_eq!(
        outcome.information[0].source.as_deref(),
        Some("Write-Information")
    );
    assert_eq!(outcome.progress.len(), 1);
    assert_eq!(
        (
            outcome.progress[0].activity.as_str(),
            outcome.progress[0].percent_complete
        ),
        ("act", 42)
    );
    assert!(outcome.had_errors() && outcome.error.is_none());
    bounded("close", session.close()).await.expect("close");
}

#[tokio::test]
async fn terminating_non_terminating_and_unknown_command_errors() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let session = open(&hosts, hosts.host(0)).await;

    let failed = run(&session, "Write-Output 'before'; throw 'boom'").await;
    assert_eq!(failed.state, PipelineState::Failed);
    let error = failed.error.as_ref().expect("a failed pipeline's error record");
    assert_eq!(error.message(), "boom");
    assert_eq!(error.fully_qualified_error_id.as_deref(), Some("boom"));
    assert_eq!(
        texts(&failed.output),
        ["before"],
        "output before the throw is kept"
    );

    let non_terminating = run(&session, "Write-Error 'e'; Write-Output 1").await;
    assert_eq!(non_terminating.state, PipelineState::Completed);
    assert_eq!(
        non_terminating
            .errors
            .iter()
            .map(|e| e.message())
            .collect::<Vec<_>>(),
        ["e"]
    );
    assert_eq!(non_terminating.output, [PsValue::I32(1)]);
    assert!(non_terminating.had_errors() && non_terminating.error.is_none());

    let unknown = run(&session, "Get-NoSuchThing; Write-Output 2").await;
    assert_eq!(unknown.state, PipelineState::Completed);
    assert_eq!(unknown.errors.len(), 1);
    let record = &unknown.errors[0];
    assert_eq!(
        record.fully_qualified_error_id.as_deref(),
        Some("CommandNotFoundException")
    );
    assert!(
        record
            .exception_type_names
            .iter()
            .any(|t| t.ends_with("CommandNotFoundException")),
        "{:?}",
        record.exception_type_names
    );
    assert!(
        record.message().contains("'Get-NoSuchThing' is not recognized"),
        "{}",
        record.message()
    );
    assert_eq!(record.category.category_name(), "ObjectNotFound");
    assert_eq!(unknown.output, [PsValue::I32(2)]);

    // The session is still good after all that.
    assert_eq!(texts(&run(&session, "'still here'").await.output), ["still here"]);
    bounded("close", session.close()).await.expect("close");
}

#[tokio::test]
async fn stop_ends_a_sleeping_pipeline_promptly() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let session = open(&hosts, hosts.host(0)).await;

    let mut handle = start(
        &session,
        "Write-Output 'started'; Start-Sleep -Seconds 60",
        Vec::new(),
    )
    .await;
    loop {
        match bounded("output before the sleep", handle.next_event()).await {
            Some(PipelineEvent::Output(v)) if v.as_str() == Some("started") => break,
            Some(PipelineEvent::State {
                state: PipelineState::Running,
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let started = Instant::now();
    bounded("stop", handle.stop()).await.expect("stop");
    let stopped_in = started.elapsed();
    assert!(stopped_in < Duration::from_secs(5), "stopped in {stopped_in:?}");
    let outcome = bounded("collect", handle.collect()).await.expect("collect");
    assert_eq!(outcome.state, PipelineState::Stopped);
    eprintln!("stop of a sleeping pipeline took {stopped_in:?}");

    // Dropping the handle of a running pipeline stops it: the next one runs at once.
    let dropped = start(&session, "Start-Sleep -Seconds 60", Vec::new()).await;
    drop(dropped);
    let started = Instant::now();
    assert_eq!(texts(&run(&session, "'next'").await.output), ["next"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Stopping a pipeline that has ended is fine.
    let mut handle = start(&session, "'quick'", Vec::new()).await;
    assert!(!handle.id().is_nil());
    while let Some(event) = bounded("events", handle.next_event()).await {
        if event.is_last() {
            break;
        }
    }
    bounded("stop after the end", handle.stop())
        .await
        .expect("a no-op");

    // Closing the session with a pipeline running: the server stops it, then closes the pool.
    let mut running = start(&session, "Write-Output 'r'; Start-Sleep -Seconds 60", Vec::new()).await;
    while !matches!(
        bounded("output", running.next_event()).await,
        Some(PipelineEvent::Output(_))
    ) {}
    let started = Instant::now();
    bounded("close", session.close()).await.expect("close");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let outcome = bounded("collect", running.collect())
        .await
        .expect("stopped by the close");
    assert_eq!(outcome.state, PipelineState::Stopped);
}

#[tokio::test]
async fn ten_megabytes_and_twenty_thousand_lines_arrive_exactly() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let session = open(&hosts, hosts.host(0)).await;

    let started = Instant::now();
    let big = run(&session, "'x' * 10485760").await;
    let elapsed = started.elapsed();
    assert_eq!(big.output.len(), 1);
    let text = big.output[0].as_str().expect("a string");
    assert_eq!(text.len(), 10_485_760);
    assert!(text.bytes().all(|b| b == b'x'));
    eprintln!("10 MiB string output in {elapsed:?}");

    let started = Instant::now();
    let lines = run(&session, "1..20000 | ForEach-Object { \"line $_\" }").await;
    let elapsed = started.elapsed();
    assert_eq!(lines.state, PipelineState::Completed);
    assert_eq!(lines.output.len(), 20_000);
    for (i, value) in lines.output.iter().enumerate() {
        assert_eq!(value.as_str(), Some(format!("line {}", i + 1).as_str()));
    }
    eprintln!("20,000 output lines in {elapsed:?}");
    bounded("close", session.close()).await.expect("close");
}

#[tokio::test]
async fn unicode_control_characters_and_typed_parameters_round_trip() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let session = open(&hosts, hosts.host(0)).await;

    let tricky = "héllo ☃ 𝄞 \u{0001}\u{0007}\t\r\n _x0041_ <&>'\"";
    let echoed = run_with(&session, "param($S) $S", vec![("S", PsValue::from(tricky))]).await;
    assert_eq!(texts(&echoed.output), [tricky]);

    let json = serde_json::json!({
        "A": "text",
        "B": 42,
        "C": true,
        "D": [1, "two", false],
        "E": {"k": "v", "n": 7},
        "F": 5_000_000_000_i64,
    });
    let parameters: Vec<(&str, PsValue)> = ["A", "B", "C", "D", "E", "F"]
        .into_iter()
        .map(|name| (name, psrp::session::value_from_json(&json[name])))
        .collect();
    let script = "param($A, $B, $C, $D, $E, $F) $A; $B; $C; Write-Output -NoEnumerate $D; $E; $F";
    let typed = run_with(&session, script, parameters).await;
    assert_eq!(typed.state, PipelineState::Completed, "{:?}", typed.errors);
    let out = &typed.output;
    assert_eq!(out.len(), 6, "{out:?}");
    assert_eq!(out[0], PsValue::from("text"));
    assert_eq!(out[1], PsValue::I32(42));
    assert_eq!(out[2], PsValue::Bool(true));
    assert_eq!(
        out[3].as_list(),
        Some(&[PsValue::I32(1), PsValue::from("two"), PsValue::Bool(false)][..])
    );
    let dict = match &out[4] {
        PsValue::Object(o) => match &o.content {
            ObjContent::Dict(entries) => entries.clone(),
            other => panic!("not a dictionary: {other:?}"),
        },
        other => panic!("not an object: {other:?}"),
    };
    assert!(
        dict.contains(&(PsValue::from("k"), PsValue::from("v"))),
        "{dict:?}"
    );
    assert!(dict.contains(&(PsValue::from("n"), PsValue::I32(7))), "{dict:?}");
    assert_eq!(out[5], PsValue::I64(5_000_000_000));

    // A parameter larger than a fragment: CREATE_PIPELINE goes in several Data packets.
    let large: String = "ab☃𝄞\u{1}".repeat(40_000);
    let echoed = run_with(
        &session,
        "param($S) $S",
        vec![("S", PsValue::from(large.as_str()))],
    )
    .await;
    assert_eq!(echoed.output.len(), 1);
    assert!(
        echoed.output[0].as_str() == Some(large.as_str()),
        "the large parameter came back changed"
    );

    // An array output without -NoEnumerate is unrolled, each item keeping its type.
    let unrolled = run_with(
        &session,
        "param($D) $D",
        vec![("D", PsValue::array([PsValue::I32(1), PsValue::Bool(true)]))],
    )
    .await;
    assert_eq!(unrolled.output, [PsValue::I32(1), PsValue::Bool(true)]);
    bounded("close", session.close()).await.expect("close");
}

#[tokio::test]
async fn open_failures_are_distinct_typed_errors() {
    let hosts = TargetHosts::up(2).await.expect("hosts");
    let (h0, h1) = (hosts.host(0).clone(), hosts.host(1).clone());
    let users = hosts.state.users.clone();

    let wrong = ssh_config(
        &hosts,
        &h0,
        &users.password.name,
        SshAuth::Password("wrong-password".into()),
    );
    let e = open_err(&wrong, options()).await;
    assert!(
        matches!(e, SessionError::Transport(SshError::AuthFailed { .. })),
        "{e:?}"
    );
    assert_eq!(e.reason(), "AuthFailed");
    assert!(e.is_permanent() && !e.to_string().contains("wrong-password"));

    let mut unknown = key_config(&hosts, &h0);
    unknown.host_key_policy = HostKeyPolicy::known_hosts(&h1.host_keys.join("\n"));
    let e = open_err(&unknown, options()).await;
    assert!(
        matches!(e, SessionError::Transport(SshError::HostKeyUnknown { .. })),
        "{e:?}"
    );
    assert_eq!(e.reason(), "HostKeyUnknown");

    // The password user does get in with the right password.
    let right = ssh_config(
        &hosts,
        &h0,
        &users.password.name,
        SshAuth::Password(users.password.password.clone()),
    );
    let session = try_open(&right, options()).await.expect("password auth opens");
    assert_eq!(texts(&run(&session, "'pw'").await.output), ["pw"]);
    bounded("close", session.close()).await.expect("close");

    hosts.sshd_stop(&h0.name).await.expect("sshd-stop");
    let started = Instant::now();
    let e = open_err(&key_config(&hosts, &h0), options()).await;
    let SessionError::Transport(SshError::Connect { source, .. }) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(e.reason(), "ConnectFailed");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // A black-holed host: the open timeout ends the wait (the SSH connect timeout is longer here).
    hosts.blackhole(&h1.name).await.expect("blackhole");
    let short = SessionOptions {
        open_timeout: Duration::from_secs(2),
        ..options()
    };
    let started = Instant::now();
    let e = open_err(&key_config(&hosts, &h1), short).await;
    let elapsed = started.elapsed();
    assert!(matches!(e, SessionError::OpenTimeout(_)), "{e:?}");
    assert_eq!(e.reason(), "OpenTimeout");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_millis(2500),
        "{elapsed:?}"
    );
    // And with the SSH connect timeout the shorter one, that one says so.
    let mut config = key_config(&hosts, &h1);
    config.connect_timeout = Duration::from_secs(1);
    let e = open_err(&config, options()).await;
    assert_eq!(e.reason(), "ConnectTimeout", "{e:?}");
}

/// Starts a long streaming pipeline and reads until `count` outputs arrived.
async fn streaming(session: &Session, count: usize) -> (PipelineHandle, Vec<PsValue>) {
    let script = "1..100000 | ForEach-Object { \"line $_\"; Start-Sleep -Milliseconds 1 }";
    let mut handle = start(session, script, Vec::new()).await;
    let mut output = Vec::new();
    while output.len() < count {
        match bounded("streamed output", handle.next_event()).await {
            Some(PipelineEvent::Output(v)) => output.push(v),
            Some(PipelineEvent::State {
                state: PipelineState::Running,
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    (handle, output)
}

/// Collects the rest after a fault: a typed error within the bound, all output kept in order.
async fn collect_lost(
    handle: PipelineHandle,
    mut output: Vec<PsValue>,
    bound: Duration,
) -> (SessionError, usize) {
    let started = Instant::now();
    let result = timeout(bound, handle.collect())
        .await
        .expect("collect ends within the bound");
    let elapsed = started.elapsed();
    let CollectError { error, partial } = result.expect_err("the pipeline cannot complete");
    output.extend(partial.output);
    for (i, value) in output.iter().enumerate() {
        assert_eq!(value.as_str(), Some(format!("line {}", i + 1).as_str()));
    }
    eprintln!(
        "lost after {elapsed:?} with {} lines kept: {} ({error})",
        output.len(),
        error.reason()
    );
    (error, output.len())
}

#[tokio::test]
async fn a_connection_lost_mid_pipeline_ends_it_with_a_typed_error_and_partial_output() {
    let hosts = TargetHosts::up(3).await.expect("hosts");
    let (h0, h1, h2) = (
        hosts.host(0).clone(),
        hosts.host(1).clone(),
        hosts.host(2).clone(),
    );

    // The PowerShell side shuts down (the peer restarts): as a server going down does, it stops the
    // pipeline (Stopped, with PipelineStoppedException), then the channel ends.
    let session = open(&hosts, &h0).await;
    let (handle, mut output) = streaming(&session, 50).await;
    hosts.peer_restart(&h0.name).await.expect("peer-restart");
    let outcome = bounded("collect", handle.collect())
        .await
        .expect("the server ended the pipeline");
    assert_eq!(outcome.state, PipelineState::Stopped);
    assert_eq!(
        outcome
            .error
            .as_ref()
            .and_then(|e| e.fully_qualified_error_id.as_deref()),
        Some("PipelineStopped")
    );
    output.extend(outcome.output);
    assert!(
        output
            .iter()
            .enumerate()
            .all(|(i, v)| v.as_str() == Some(format!("line {}", i + 1).as_str()))
    );
    let status = wait_status(&session, "Broken", |s| s.state == RunspacePoolState::Broken).await;
    assert_eq!(status.availability, Availability::None);
    assert_eq!(
        status.error.as_ref().map(SessionError::reason),
        Some("ConnectionClosed")
    );
    let e = bounded(
        "invoke on a broken session",
        session.run_script("'x'", Vec::<(&str, PsValue)>::new()),
    )
    .await
    .expect_err("a broken session runs nothing");
    assert_eq!(e.reason(), "ConnectionClosed");
    assert_eq!(
        bounded("close", session.close())
            .await
            .expect_err("close says why")
            .reason(),
        "ConnectionClosed"
    );

    // The session's sshd processes are killed (a crash, an OOM kill): the connection drops.
    let session = open(&hosts, &h1).await;
    let (handle, output) = streaming(&session, 50).await;
    let listener = read(&hosts.state.state_dir.join("h1/sshd.pid")).trim().to_owned();
    for pid in h1.sshd_processes().into_iter().filter(|pid| *pid != listener) {
        let pid: libc::pid_t = pid.parse().expect("a pid");
        // SAFETY: kill(2) on a pid of the test's own host namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let (error, _) = collect_lost(handle, output, STEP).await;
    assert!(
        matches!(error, SessionError::Transport(SshError::Disconnected { .. })),
        "{error:?}"
    );
    assert_eq!(error.reason(), "Disconnected");
    drop(session);

    // The link goes down: nothing arrives any more, and the keepalive notices.
    let mut config = key_config(&hosts, &h2);
    config.keepalive_interval = Some(Duration::from_secs(1));
    config.keepalive_max = 2;
    let session = try_open(&config, options()).await.expect("open");
    let (handle, output) = streaming(&session, 50).await;
    hosts.link_down(&h2.name).await.expect("link-down");
    let (error, _) = collect_lost(handle, output, Duration::from_secs(10)).await;
    assert!(
        matches!(error, SessionError::Transport(SshError::KeepaliveTimeout)),
        "{error:?}"
    );
    assert_eq!(error.reason(), "KeepaliveTimeout");
}

#[tokio::test]
async fn dropping_the_session_ends_its_task_and_connection() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let h0 = hosts.host(0).clone();
    let config = key_config(&hosts, &h0);
    let baseline = alive_tasks();

    // Opens abandoned at many points leave nothing behind.
    for millis in [0, 1, 2, 5, 10, 20, 40] {
        let _ = timeout(
            Duration::from_millis(millis),
            Session::open_ssh(&config, options()),
        )
        .await;
    }
    assert_tasks_settle(baseline, "after abandoned opens").await;

    // A session dropped with a pipeline running: the handle learns, the task and connection end.
    let session = open(&hosts, &h0).await;
    let mut handle = start(&session, "Write-Output 'a'; Start-Sleep -Seconds 60", Vec::new()).await;
    let mut first = None;
    while first.is_none() {
        if let Some(PipelineEvent::Output(v)) = bounded("first output", handle.next_event()).await {
            first = Some(v);
        }
    }
    drop(session);
    let CollectError { error, .. } = bounded("collect", handle.collect()).await.expect_err("lost");
    assert!(matches!(error, SessionError::Closed), "{error:?}");
    assert_tasks_settle(baseline, "after a dropped session").await;
    wait_sshd_count(&h0, 1).await;
}

/// Not a timed test: prints what an open and a trivial pipeline cost against the peer.
#[tokio::test]
async fn open_and_pipeline_round_trip_times() {
    let hosts = TargetHosts::up(1).await.expect("hosts");
    let h0 = hosts.host(0).clone();
    let config = key_config(&hosts, &h0);
    let p50 = |times: &mut Vec<Duration>| {
        times.sort();
        (times[times.len() / 2], times[times.len() * 99 / 100])
    };

    let mut opens = Vec::new();
    for i in 0..51 {
        let started = Instant::now();
        let session = try_open(&config, options()).await.expect("open");
        if i > 0 {
            opens.push(started.elapsed()); // the first open warms caches
        }
        bounded("close", session.close()).await.expect("close");
    }

    let session = open(&hosts, &h0).await;
    let mut round_trips = Vec::new();
    for i in 0..51 {
        let started = Instant::now();
        let outcome = run(&session, "1").await;
        if i > 0 {
            round_trips.push(started.elapsed());
        }
        assert_eq!(outcome.output, [PsValue::I32(1)]);
    }
    bounded("close", session.close()).await.expect("close");
    let (open_p50, open_p99) = p50(&mut opens);
    let (rt_p50, rt_p99) = p50(&mut round_trips);
    eprintln!("open (SSH key auth + runspace pool), 50 runs: p50 {open_p50:?}, p99 {open_p99:?}");
    eprintln!("trivial pipeline round trip ('1'), 50 runs: p50 {rt_p50:?}, p99 {rt_p99:?}");
}

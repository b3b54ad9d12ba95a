//! The operator end to end: its binary against the real control plane and namespace hosts with
//! sshd and the PSRP peer. Each test has its own namespace, hosts and operator process (watching
//! only that namespace, with a token of the Helm chart's ServiceAccount and only the chart's RBAC).
//! Every wait is bounded.

use std::time::Duration;

use anyhow::Result;
use e2e::{
    ControlPlane, TestNamespace,
    crds::install_crds,
    hosts::TargetHosts,
    operator::{
        OperatorProcess, create_host_secrets, eventually, job_yaml, ssh_session_yaml, wsman_session_yaml,
    },
    test_namespace,
};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::api::DeleteParams;
use pssession_operator::api::{JobState, PSJob, PSSession, RunspaceState};

const OPEN: Duration = Duration::from_secs(40);
const STEP: Duration = Duration::from_secs(20);

struct Env {
    ns: TestNamespace,
    hosts: TargetHosts,
    operator: OperatorProcess,
}

/// The operator runs as the Helm chart's ServiceAccount (see `e2e::chart`): a scenario that
/// passes while the API server refused it something would hide a missing RBAC rule.
impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let log = self.operator.log_text();
        assert!(
            !log.to_ascii_lowercase().contains("forbidden"),
            "the API server refused the operator something; a rule is missing from the chart:\n{log}"
        );
    }
}

impl Env {
    async fn new(prefix: &str, hosts: usize) -> Env {
        Env::with_flags(prefix, hosts, &[]).await
    }

    async fn with_flags(prefix: &str, hosts: usize, flags: &[&str]) -> Env {
        Env::with_hosts(
            prefix,
            TargetHosts::up(hosts).await.expect("hosts come up"),
            flags,
        )
        .await
    }

    async fn with_hosts(prefix: &str, hosts: TargetHosts, flags: &[&str]) -> Env {
        let control_plane = ControlPlane::shared();
        install_crds(control_plane).await.expect("CRDs install");
        let ns = test_namespace(prefix).await;
        create_host_secrets(&ns.api::<Secret>(), &hosts, "h")
            .await
            .expect("secrets");
        let operator = OperatorProcess::start(control_plane, &ns.name, flags)
            .await
            .expect("operator starts");
        Env { ns, hosts, operator }
    }

    async fn apply(&self, yaml: &str) {
        self.ns
            .kubectl_with_stdin(&["apply", "-f", "-"], yaml)
            .await
            .and_then(|o| o.ok().map(|_| ()))
            .unwrap_or_else(|e| panic!("kubectl apply: {e:#}\n{yaml}"));
    }

    async fn session(&self, name: &str, auth: &str, extra: &str) {
        let yaml = ssh_session_yaml(name, self.hosts.host(0), "h", auth, extra);
        self.apply(&yaml).await;
    }

    async fn job(&self, name: &str, session: &str, script: &str, extra: &str) {
        self.apply(&job_yaml(name, session, script, extra)).await;
    }

    /// Waits until the object `name` passes `check`; on timeout, panics with its status and the
    /// operator's log.
    async fn wait_for<K>(&self, name: &str, within: Duration, what: &str, check: impl Fn(&K) -> bool) -> K
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let api = self.ns.api::<K>();
        let found = eventually(what, within, || {
            let api = api.clone();
            let check = &check;
            async move { Ok(api.get_opt(name).await?.filter(|o| check(o))) }
        })
        .await;
        match found {
            Ok(object) => object,
            Err(error) => {
                let now = api
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|o| serde_json::to_value(o).ok())
                    .map(|o| o["status"].clone());
                panic!(
                    "{error:#}\n{name} now: {now:#?}\noperator log:\n{}",
                    tail(&self.operator.log_text())
                )
            }
        }
    }

    async fn wait_session(
        &self,
        name: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&PSSession) -> bool,
    ) -> PSSession {
        self.wait_for(name, within, what, check).await
    }

    async fn wait_job(
        &self,
        name: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&PSJob) -> bool,
    ) -> PSJob {
        self.wait_for(name, within, what, check).await
    }

    async fn ready(&self, name: &str) -> PSSession {
        self.wait_session(name, OPEN, "session Ready", |s| {
            condition(s, "Ready") == Some(("True", "Opened"))
        })
        .await
    }

    async fn done(&self, name: &str) -> PSJob {
        self.wait_job(name, OPEN, "job finished", |j| {
            matches!(
                state(j),
                Some(JobState::Completed | JobState::Failed | JobState::Stopped)
            )
        })
        .await
    }

    async fn events(&self) -> Vec<Event> {
        self.ns
            .api::<Event>()
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn condition<'a>(session: &'a PSSession, type_: &str) -> Option<(&'a str, &'a str)> {
    let status = session.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.as_str(), c.reason.as_str()))
}

fn state(job: &PSJob) -> Option<JobState> {
    job.status.as_ref()?.state
}

fn output(job: &PSJob) -> String {
    job.status
        .as_ref()
        .and_then(|s| s.output.clone())
        .unwrap_or_default()
}

/// The password user's view of `host`'s WS-Management listener, for checks from outside.
fn wsman_as_password_user(env: &Env, host: &e2e::hosts::Host) -> psrp::session::WsmanSessionConfig {
    let users = &env.hosts.state.users;
    let addr = host.wsman_addr().expect("a WSMan listener");
    let mut transport = psrp::transport::wsman::WsmanConfig::new(
        addr.ip().to_string(),
        psrp::transport::wsman::WsmanAuth::Ntlm(psrp::transport::wsman::Credentials::new(
            users.password.name.clone(),
            users.password.password.clone(),
        )),
    );
    transport.port = addr.port();
    psrp::session::WsmanSessionConfig::new(transport)
}

/// The password user's shells on `host`, as Get-PSSession -ComputerName lists them.
async fn shells_on(env: &Env, host: &e2e::hosts::Host) -> Vec<psrp::wsman::ShellInfo> {
    psrp::session::list_shells(&wsman_as_password_user(env, host), STEP)
        .await
        .expect("Enumerate")
}

/// Whether `host` lists the shell `id`.
async fn has_shell(env: &Env, host: &e2e::hosts::Host, id: &str) -> bool {
    shells_on(env, host)
        .await
        .iter()
        .any(|s| s.shell_id.to_string().eq_ignore_ascii_case(id))
}

#[tokio::test]
async fn a_wsman_session_opens_over_ntlm_keeps_state_and_is_deleted_remotely() {
    let env = Env::new("ctl-wsman", 1).await;
    let host = env.hosts.host(0).clone();
    env.apply(&wsman_session_yaml("win", &host, "h", "NTLM", "idleTimeout: 5m"))
        .await;
    let ready = env.ready("win").await;
    let status = ready.status.expect("status");
    let shell_id = status.shell_id.clone().expect("shellId in status");
    assert!(status.wsman_session_id.is_some(), "wsmanSessionId in status");
    assert_eq!(
        status.instance_id.as_deref(),
        Some(shell_id.as_str()),
        "a shell is its runspace pool"
    );
    assert!(
        has_shell(&env, &host, &shell_id).await,
        "the host lists the shell"
    );

    env.job("first", "win", "$greeting = 'over WSMan'", "").await;
    env.job(
        "second",
        "win",
        "Write-Output $greeting\nWrite-Warning 'careful'",
        "",
    )
    .await;
    let second = env.done("second").await;
    assert_eq!(state(&second), Some(JobState::Completed));
    assert_eq!(output(&second), "over WSMan\n");
    let warning = second
        .status
        .and_then(|s| s.streams)
        .and_then(|s| s.warning)
        .unwrap_or_default();
    assert!(warning.contains("careful"), "{warning}");

    // Deleting the session deletes the shell on the host.
    env.ns
        .api::<PSSession>()
        .delete("win", &DeleteParams::default())
        .await
        .expect("delete");
    let sessions = env.ns.api::<PSSession>();
    eventually("session gone", STEP, || {
        let sessions = sessions.clone();
        async move { Ok(sessions.get_opt("win").await?.is_none().then_some(())) }
    })
    .await
    .expect("the finalizer lets go");
    assert!(
        !has_shell(&env, &host, &shell_id).await,
        "the shell is gone from the host"
    );
}

#[tokio::test]
async fn a_graceful_stop_disconnects_a_wsman_session_and_the_next_operator_connects_with_its_state() {
    let mut env = Env::new("ctl-wsman-restart", 1).await;
    let host = env.hosts.host(0).clone();
    env.apply(&wsman_session_yaml("win", &host, "h", "NTLM", "idleTimeout: 5m"))
        .await;
    let before = env
        .ready("win")
        .await
        .status
        .and_then(|s| s.instance_id)
        .expect("instance");
    env.job("remember", "win", "$kept = 'survives the restart'", "")
        .await;
    assert_eq!(state(&env.done("remember").await), Some(JobState::Completed));

    // SIGTERM: the shell is disconnected on the host, not closed.
    let status = env
        .operator
        .terminate(Duration::from_secs(40))
        .await
        .expect("graceful stop");
    assert!(status.success(), "{status:?}");
    let log = env.operator.log_text();
    assert!(
        log.contains("session disconnected for the next operator"),
        "{log}"
    );
    let shells = shells_on(&env, &host).await;
    let shell = shells
        .iter()
        .find(|s| s.shell_id.to_string().eq_ignore_ascii_case(&before))
        .expect("the shell is still on the host");
    assert_eq!(
        shell.state,
        Some(psrp::wsman::ShellState::Disconnected),
        "{shell:?}"
    );

    // The next operator connects to it: the same runspace, its variables kept. (The status
    // still says Opened from before the stop: wait for the new operator's own word.)
    env.operator.restart().expect("restart");
    eventually("the new operator connects", OPEN, || {
        let events = env.ns.api::<Event>();
        async move {
            Ok(events
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .find(|e| {
                    e.message
                        .as_deref()
                        .is_some_and(|n| n.contains("which kept its state"))
                }))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", env.operator.log_text()));
    let after = env.ready("win").await;
    assert_eq!(
        after.status.as_ref().and_then(|s| s.instance_id.as_deref()),
        Some(before.as_str()),
        "{}",
        env.operator.log_text()
    );
    assert!(
        !after
            .status
            .and_then(|s| s.message)
            .unwrap_or_default()
            .contains("StateLost")
    );
    env.job("recall", "win", "Write-Output $kept", "").await;
    let recall = env.done("recall").await;
    assert_eq!(output(&recall), "survives the restart\n");
}

#[tokio::test]
async fn a_shell_quota_keeps_a_wsman_session_retrying_until_a_shell_is_free() {
    let hosts = TargetHosts::up_with_peer_args(1, &["--wsman-max-shells-per-user=1"])
        .await
        .expect("hosts with a one-shell quota");
    let env = Env::with_hosts("ctl-wsman-quota", hosts, &[]).await;
    let host = env.hosts.host(0).clone();
    env.apply(&wsman_session_yaml("first", &host, "h", "NTLM", ""))
        .await;
    env.ready("first").await;
    env.apply(&wsman_session_yaml(
        "second",
        &host,
        "h",
        "NTLM",
        "maxConnectionRetryCount: 100",
    ))
    .await;
    let waiting = env
        .wait_session("second", OPEN, "QuotaExceeded", |s| {
            condition(s, "Ready").is_some_and(|(_, reason)| reason == "QuotaExceeded")
        })
        .await;
    assert_eq!(
        condition(&waiting, "Stalled").map(|(status, _)| status),
        Some("False"),
        "a quota is waited out, not fatal"
    );
    // A shell is freed: the waiting session opens on a later retry.
    env.ns
        .api::<PSSession>()
        .delete("first", &DeleteParams::default())
        .await
        .expect("delete");
    env.wait_session(
        "second",
        Duration::from_secs(90),
        "opened once a shell was free",
        |s| condition(s, "Ready") == Some(("True", "Opened")),
    )
    .await;
}

#[tokio::test]
async fn desired_state_disconnects_a_wsman_session_and_connects_it_again_with_its_state() {
    let env = Env::new("ctl-wsman-desired", 1).await;
    let host = env.hosts.host(0).clone();
    env.apply(&wsman_session_yaml("win", &host, "h", "NTLM", ""))
        .await;
    let before = env
        .ready("win")
        .await
        .status
        .and_then(|s| s.instance_id)
        .expect("instance");
    env.job("remember", "win", "$kept = 'across a disconnect'", "")
        .await;
    assert_eq!(state(&env.done("remember").await), Some(JobState::Completed));

    env.apply(&wsman_session_yaml(
        "win",
        &host,
        "h",
        "NTLM",
        "desiredState: Disconnected",
    ))
    .await;
    env.wait_session("win", OPEN, "Disconnected, Ready", |s| {
        s.status.as_ref().and_then(|st| st.state) == Some(RunspaceState::Disconnected)
            && condition(s, "Ready") == Some(("True", "Disconnected"))
    })
    .await;
    // A job waits while the session is disconnected.
    env.job("recall", "win", "Write-Output $kept", "").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = env.ns.api::<PSJob>().get("recall").await.expect("job");
    assert_eq!(state(&waiting), Some(JobState::Queued));

    env.apply(&wsman_session_yaml(
        "win",
        &host,
        "h",
        "NTLM",
        "desiredState: Connected",
    ))
    .await;
    let recall = env.done("recall").await;
    assert_eq!(output(&recall), "across a disconnect\n");
    let after = env.ready("win").await.status.expect("status");
    assert_eq!(
        after.instance_id.as_deref(),
        Some(before.as_str()),
        "the same runspace"
    );
    let reasons: Vec<String> = env.events().await.into_iter().filter_map(|e| e.reason).collect();
    assert!(reasons.iter().any(|r| r == "Disconnected"), "{reasons:?}");
}

#[tokio::test]
async fn attach_adopts_a_disconnected_shell_made_elsewhere_with_its_state() {
    let env = Env::new("ctl-wsman-attach", 1).await;
    let host = env.hosts.host(0).clone();
    // Someone else's client makes a shell, leaves a variable in it, and disconnects.
    let elsewhere = wsman_as_password_user(&env, &host);
    let session = psrp::session::Session::open_wsman(&elsewhere, Default::default())
        .await
        .expect("a shell made elsewhere");
    let (shell, client_session) = (
        session.shell_id().expect("shell id"),
        session.wsman_session_id().expect("session id"),
    );
    session
        .run_script(
            "$adopted = 'made elsewhere'",
            Vec::<(String, psrp::clixml::PsValue)>::new(),
        )
        .await
        .expect("invoke")
        .collect()
        .await
        .expect("ran");
    session
        .disconnect(Duration::from_secs(300), psrp::wsman::BufferMode::Block)
        .await
        .expect("disconnect");
    drop(session);

    env.apply(&wsman_session_yaml(
        "adopted",
        &host,
        "h",
        "NTLM",
        &format!("attach: {{shellId: '{shell}', sessionId: '{client_session}'}}"),
    ))
    .await;
    let ready = env.ready("adopted").await;
    assert_eq!(
        ready.status.and_then(|s| s.shell_id),
        Some(shell.to_string()),
        "the adopted shell, not a new one"
    );
    env.job("recall", "adopted", "Write-Output $adopted", "").await;
    assert_eq!(output(&env.done("recall").await), "made elsewhere\n");
}

#[tokio::test]
async fn a_wsman_session_with_a_wrong_password_is_auth_failed() {
    let env = Env::new("ctl-wsman-auth", 1).await;
    let host = env.hosts.host(0).clone();
    let users = &env.hosts.state.users;
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: wrong-password\ntype: kubernetes.io/basic-auth\n\
         stringData:\n  username: {}\n  password: not-{}\n",
        users.password.name, users.password.password
    ))
    .await;
    env.apply(&wsman_session_yaml(
        "win",
        &host,
        "wrong",
        "NTLM",
        "maxConnectionRetryCount: 0",
    ))
    .await;
    let broken = env
        .wait_session("win", OPEN, "AuthFailed", |s| {
            condition(s, "Ready").is_some_and(|(_, reason)| reason == "AuthFailed")
        })
        .await;
    let text = serde_json::to_string(&broken).unwrap_or_default();
    assert!(
        !text.contains(&users.password.password),
        "no password in the object"
    );
}

#[tokio::test]
async fn jobs_share_session_state_run_in_order_and_report_output() {
    let env = Env::new("ctl-jobs", 1).await;
    env.session("s1", "PublicKey", "").await;
    let ready = env.ready("s1").await;
    let status = ready.status.clone().expect("status");
    assert_eq!(status.state, Some(RunspaceState::Opened));
    assert!(status.instance_id.is_some() && status.opened_at.is_some() && status.protocol_version.is_some());
    assert_eq!(condition(&ready, "Reconciling"), Some(("False", "Opened")));
    assert_eq!(condition(&ready, "Stalled"), Some(("False", "Opened")));
    assert_eq!(status.observed_generation, ready.metadata.generation);

    // kubectl wait works the way users write it.
    let waited = env
        .ns
        .kubectl(&["wait", "--for=condition=Ready", "pssession/s1", "--timeout=10s"])
        .await
        .expect("kubectl wait runs");
    assert!(waited.success(), "{}", waited.stderr);

    // State set by one job is read by the next, in the same session.
    env.job("set", "s1", "$greeting = 'kept between jobs'", "").await;
    let set = env.done("set").await;
    assert_eq!(state(&set), Some(JobState::Completed), "{:?}", set.status);
    env.job("get", "s1", "$greeting", "").await;
    let get = env.done("get").await;
    assert_eq!(output(&get), "kept between jobs\n");

    // A long job and a second one: the second queues behind it, then runs.
    env.job(
        "long",
        "s1",
        "Write-Output 'started'\nStart-Sleep -Seconds 4\nWrite-Output 'ended'",
        "",
    )
    .await;
    env.wait_job("long", STEP, "long job running", |j| {
        state(j) == Some(JobState::Running)
    })
    .await;
    env.job("after", "s1", "Write-Output 'second'", "").await;
    let queued = env
        .wait_job("after", STEP, "second job queued", |j| {
            state(j) == Some(JobState::Queued)
        })
        .await;
    assert_eq!(queued.status.and_then(|s| s.queue_position), Some(1));
    env.wait_session("s1", STEP, "session busy with the long job", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.current_job.as_deref() == Some("long") && st.queued_jobs == ["after"])
    })
    .await;
    let long = env.done("long").await;
    let after = env.done("after").await;
    assert_eq!(output(&long), "started\nended\n");
    assert_eq!(output(&after), "second\n");
    let (long_end, after_start) = (
        long.status.and_then(|s| s.completion_time).expect("end"),
        after
            .status
            .as_ref()
            .and_then(|s| s.start_time.clone())
            .expect("start"),
    );
    assert!(
        after_start.0 >= long_end.0,
        "the second job started after the first ended"
    );

    // Every stream, typed parameters, the ConfigMap with the full text, hadErrors.
    let script = "param($Name, $Count, $Flag, $List, $Map)\nWrite-Output \"hello $Name\"\n$Count\n$Flag\n$List\n\
                  Write-Warning 'careful'\nWrite-Verbose 'details'\nWrite-Error 'one bad thing'\n\
                  Write-Information 'fyi'";
    let params = "parameters:\n  Name: world\n  Count: 42\n  Flag: true\n  List: [1, two]\n  Map: {k: v}";
    env.job("streams", "s1", script, params).await;
    let streams = env.done("streams").await;
    let st = streams.status.clone().expect("status");
    assert_eq!(st.state, Some(JobState::Completed));
    assert_eq!(st.had_errors, Some(true));
    assert_eq!(output(&streams), "hello world\n42\nTrue\n1\ntwo\n");
    let s = st.streams.expect("streams");
    assert_eq!(s.warning.as_deref(), Some("careful\n"));
    assert_eq!(s.error.as_deref(), Some("one bad thing\n"));
    assert_eq!(s.information.as_deref(), Some("fyi\n"));
    let cm = env
        .ns
        .api::<ConfigMap>()
        .get(st.output_config_map.as_deref().expect("output ConfigMap named"))
        .await
        .expect("output ConfigMap");
    let data = cm.data.expect("data");
    assert_eq!(data["output"], "hello world\n42\nTrue\n1\ntwo\n");
    assert_eq!(data["error"], "one bad thing\n");
    assert_eq!(
        cm.metadata.owner_references.expect("owned")[0].uid,
        streams.metadata.uid.clone().expect("uid")
    );

    // A terminating error fails the job with its message; the job is owned by its session.
    env.job("throws", "s1", "Write-Output 'before'\nthrow 'it broke'", "")
        .await;
    let throws = env.done("throws").await;
    let st = throws.status.clone().expect("status");
    assert_eq!(st.state, Some(JobState::Failed));
    let failed = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed condition");
    assert_eq!(
        (failed.status.as_str(), failed.reason.as_str()),
        ("True", "ScriptFailed")
    );
    assert!(failed.message.contains("it broke"), "{failed:?}");
    assert_eq!(output(&throws), "before\n");
    assert_eq!(
        throws.metadata.owner_references.expect("owner")[0].uid,
        ready.metadata.uid.clone().expect("uid")
    );

    // timeout stops the pipeline: Failed, DeadlineExceeded.
    env.job("slow", "s1", "Start-Sleep -Seconds 30", "timeout: 2s")
        .await;
    let slow = env.done("slow").await;
    let failed = slow
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Failed");
    assert_eq!(failed.map(|c| c.reason), Some("DeadlineExceeded".to_owned()));

    // ttlSecondsAfterFinished deletes a finished job.
    env.job("ephemeral", "s1", "Write-Output 1", "ttlSecondsAfterFinished: 1")
        .await;
    let jobs = env.ns.api::<PSJob>();
    eventually("ttl deletes the job", STEP, || {
        let jobs = jobs.clone();
        async move { Ok(jobs.get_opt("ephemeral").await?.is_none().then_some(())) }
    })
    .await
    .expect("job deleted after its ttl");

    // A job for a session that does not exist waits with its reason.
    env.job("orphan", "nope", "Write-Output 1", "").await;
    let orphan = env
        .wait_job("orphan", STEP, "SessionNotFound", |j| {
            j.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "SessionNotFound"))
        })
        .await;
    assert_eq!(state(&orphan), Some(JobState::Queued));

    let table = env
        .ns
        .kubectl(&["get", "pssessions,psjobs"])
        .await
        .expect("kubectl get");
    assert!(
        table.stdout.contains("Opened") && table.stdout.contains("Completed"),
        "{}",
        table.stdout
    );
}

#[tokio::test]
async fn failures_have_their_own_reasons() {
    let env = Env::new("ctl-fail", 1).await;
    let password = env.hosts.state.users.password.password.clone();

    // Wrong password: Broken, AuthFailed, Stalled (kstatus Failed).
    let secrets = env.ns.api::<Secret>();
    let mut wrong = secrets.get("h-password").await.expect("secret");
    wrong.metadata = kube::api::ObjectMeta {
        name: Some("h-wrong".into()),
        ..Default::default()
    };
    if let Some(data) = wrong.data.as_mut() {
        data.insert(
            "password".into(),
            k8s_openapi::ByteString(b"not-the-password".to_vec()),
        );
    }
    secrets
        .create(&Default::default(), &wrong)
        .await
        .expect("wrong secret");
    let yaml = ssh_session_yaml("wrong-pw", env.hosts.host(0), "h", "Password", "")
        .replace("name: h-password", "name: h-wrong");
    env.apply(&yaml).await;
    let s = env
        .wait_session("wrong-pw", OPEN, "AuthFailed", |s| {
            condition(s, "Stalled") == Some(("True", "AuthFailed"))
        })
        .await;
    assert_eq!(
        s.status.as_ref().and_then(|s| s.state),
        Some(RunspaceState::Broken)
    );
    assert_eq!(condition(&s, "Ready"), Some(("False", "AuthFailed")));

    // The right password opens.
    env.session("right-pw", "Password", "").await;
    env.ready("right-pw").await;

    // A missing Secret: waits with SecretNotFound, then opens at once when it appears.
    let yaml = ssh_session_yaml("late-secret", env.hosts.host(0), "late", "PublicKey", "")
        .replace("name: late-known-hosts", "name: h-known-hosts");
    env.apply(&yaml).await;
    let s = env
        .wait_session("late-secret", STEP, "SecretNotFound", |s| {
            condition(s, "Ready") == Some(("False", "SecretNotFound"))
        })
        .await;
    assert_eq!(condition(&s, "Reconciling"), Some(("True", "SecretNotFound")));
    let mut key = secrets.get("h-key").await.expect("key secret");
    key.metadata = kube::api::ObjectMeta {
        name: Some("late-key".into()),
        ..Default::default()
    };
    secrets
        .create(&Default::default(), &key)
        .await
        .expect("late secret");
    env.ready("late-secret").await;

    // An unknown host key: HostKeyRejected.
    let mut other = secrets.get("h-known-hosts").await.expect("known hosts");
    other.metadata = kube::api::ObjectMeta {
        name: Some("other-known-hosts".into()),
        ..Default::default()
    };
    other.data = Some(
        [(
            "known_hosts".to_owned(),
            k8s_openapi::ByteString(
                b"example.invalid ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBpsmL0r3Ddw0qk0vJxI2oRhZbB1Y1mVJ1yJ1o6Yk7oD\n"
                    .to_vec(),
            ),
        )]
        .into(),
    );
    secrets
        .create(&Default::default(), &other)
        .await
        .expect("other known hosts");
    let yaml = ssh_session_yaml("bad-hostkey", env.hosts.host(0), "h", "PublicKey", "")
        .replace("name: h-known-hosts", "name: other-known-hosts");
    env.apply(&yaml).await;
    env.wait_session("bad-hostkey", OPEN, "HostKeyRejected", |s| {
        condition(s, "Stalled") == Some(("True", "HostKeyRejected"))
    })
    .await;

    // A host that is down: retried as HostUnreachable (Reconciling), then Broken when retries run out.
    let down = env.hosts.host(0).clone();
    env.hosts.sshd_stop(&down.name).await.expect("sshd stop");
    env.session("down", "PublicKey", "maxConnectionRetryCount: 1")
        .await;
    env.wait_session("down", STEP, "HostUnreachable", |s| {
        condition(s, "Reconciling") == Some(("True", "HostUnreachable"))
            || condition(s, "Stalled") == Some(("True", "Broken"))
    })
    .await;
    env.wait_session("down", OPEN, "Broken", |s| {
        condition(s, "Stalled") == Some(("True", "Broken"))
    })
    .await;
    // The host comes back: the capped retries after Broken find it.
    env.hosts.sshd_start(&down.name).await.expect("sshd start");
    env.wait_session("down", Duration::from_secs(90), "open after Broken", |s| {
        condition(s, "Ready") == Some(("True", "Opened"))
    })
    .await;

    // No password in the operator's log, in events or in any status.
    let log = env.operator.log_text();
    assert!(!log.contains(&password), "the password is in the operator log");
    for event in env.events().await {
        let text = format!("{:?}", (event.message, event.reason));
        assert!(!text.contains(&password), "the password is in an event: {text}");
    }
    let sessions = env
        .ns
        .api::<PSSession>()
        .list(&Default::default())
        .await
        .expect("list");
    for s in sessions {
        let text = serde_json::to_string(&s.status).expect("json");
        assert!(!text.contains(&password), "the password is in a status");
    }
    let reasons: Vec<String> = env.events().await.into_iter().filter_map(|e| e.reason).collect();
    for expected in [
        "AuthFailed",
        "Opened",
        "HostKeyRejected",
        "HostUnreachable",
        "Broken",
    ] {
        assert!(
            reasons.iter().any(|r| r == expected),
            "no {expected} event in {reasons:?}"
        );
    }
}

#[tokio::test]
async fn idle_rule_closes_and_a_new_job_reopens_with_new_state() {
    let env = Env::new("ctl-idle", 1).await;
    env.session("idle", "PublicKey", "idleTimeout: 10s").await;
    let opened = env.ready("idle").await;
    let first = opened.status.and_then(|s| s.instance_id).expect("instance");
    env.job("set", "idle", "$x = 'old state'", "").await;
    env.done("set").await;
    let s = env
        .wait_session("idle", STEP, "has an idle expiry", |s| {
            s.status.as_ref().is_some_and(|st| st.idle_expires_at.is_some())
        })
        .await;
    assert!(s.status.and_then(|st| st.idle_expires_at).is_some());
    let closed = env
        .wait_session("idle", Duration::from_secs(30), "IdleClosed", |s| {
            s.status.as_ref().and_then(|st| st.state) == Some(RunspaceState::Closed)
        })
        .await;
    assert_eq!(condition(&closed, "Ready"), Some(("True", "IdleClosed")));
    assert_eq!(condition(&closed, "Stalled"), Some(("False", "IdleClosed")));

    env.job("after-idle", "idle", "Write-Output \"x=$x\"", "").await;
    let job = env.done("after-idle").await;
    assert_eq!(output(&job), "x=\n", "a new runspace: $x is gone");
    let reopened = env.ready("idle").await;
    let st = reopened.status.expect("status");
    assert_ne!(
        st.instance_id.as_deref(),
        Some(first.as_str()),
        "a new instanceId"
    );
    assert!(st.message.unwrap_or_default().contains("StateLost"));
}

#[tokio::test]
async fn deleting_a_running_job_stops_its_pipeline_and_the_operator_forgets_it() {
    let env = Env::new("ctl-deljob", 1).await;
    env.session("s", "PublicKey", "").await;
    env.ready("s").await;
    env.job(
        "endless",
        "s",
        "Write-Output 'going'\nStart-Sleep -Seconds 120",
        "",
    )
    .await;
    let running = env
        .wait_job("endless", STEP, "running", |j| {
            state(j) == Some(JobState::Running)
        })
        .await;
    let uid = running.metadata.uid.expect("uid");
    env.ns
        .api::<PSJob>()
        .delete("endless", &DeleteParams::default())
        .await
        .expect("delete");
    // The session runs one pipeline at a time: the next job completing soon shows the deleted
    // job's pipeline was stopped, not left to sleep out its 120 s.
    env.job("next", "s", "Write-Output 'after'", "").await;
    let next = env.done("next").await;
    assert_eq!(output(&next), "after\n");
    // What the operator kept for the deleted job is dropped by its sweep.
    eventually("the deleted job is forgotten", Duration::from_secs(40), || {
        let log = env.operator.log_text();
        let uid = uid.clone();
        async move {
            Ok(log
                .lines()
                .any(|l| l.contains("forgetting a deleted job") && l.contains(&uid))
                .then_some(()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", env.operator.log_text()));
}

#[tokio::test]
async fn deleting_a_session_stops_its_job_closes_it_and_removes_its_jobs() {
    let env = Env::new("ctl-del", 1).await;
    env.session("doomed", "PublicKey", "").await;
    env.ready("doomed").await;
    env.job(
        "sleeper",
        "doomed",
        "Write-Output 'going'\nStart-Sleep -Seconds 120",
        "",
    )
    .await;
    env.wait_job("sleeper", STEP, "running", |j| {
        state(j) == Some(JobState::Running)
    })
    .await;
    let sessions = env.ns.api::<PSSession>();
    sessions
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("session gone", STEP, || {
        let sessions = sessions.clone();
        async move { Ok(sessions.get_opt("doomed").await?.is_none().then_some(())) }
    })
    .await
    .expect("the finalizer lets go");
    let jobs = env.ns.api::<PSJob>();
    eventually("job collected", Duration::from_secs(30), || {
        let jobs = jobs.clone();
        async move { Ok(jobs.get_opt("sleeper").await?.is_none().then_some(())) }
    })
    .await
    .expect("owner references remove the job");
    let reasons: Vec<String> = env.events().await.into_iter().filter_map(|e| e.reason).collect();
    assert!(reasons.iter().any(|r| r == "Closing"), "{reasons:?}");
}

#[tokio::test]
async fn operator_restart_reopens_ssh_sessions_and_fails_the_running_job_as_session_lost() {
    let mut env = Env::new("ctl-restart", 1).await;
    env.session("r", "PublicKey", "").await;
    let before = env
        .ready("r")
        .await
        .status
        .and_then(|s| s.instance_id)
        .expect("instance");
    env.job(
        "interrupted",
        "r",
        "1..3 | ForEach-Object { Write-Output \"line $_\" }\nStart-Sleep -Seconds 60",
        "",
    )
    .await;
    env.wait_job("interrupted", STEP, "output arrived", |j| {
        output(j).contains("line 3")
    })
    .await;
    env.operator.kill().await;
    env.operator.restart().expect("restart");
    let job = env
        .wait_job("interrupted", OPEN, "SessionLost", |j| {
            state(j) == Some(JobState::Failed)
        })
        .await;
    let st = job.status.expect("status");
    let failed = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed");
    assert_eq!(failed.reason, "SessionLost");
    assert_eq!(
        st.output.as_deref(),
        Some("line 1\nline 2\nline 3\n"),
        "partial output kept"
    );
    let after = env
        .wait_session("r", OPEN, "reopened", |s| {
            s.status.as_ref().is_some_and(|st| {
                st.state == Some(RunspaceState::Opened) && st.instance_id.as_deref() != Some(before.as_str())
            })
        })
        .await;
    assert!(
        after
            .status
            .and_then(|s| s.message)
            .unwrap_or_default()
            .contains("StateLost")
    );
    // And the session works.
    env.job("next", "r", "Write-Output 'alive'", "").await;
    assert_eq!(output(&env.done("next").await), "alive\n");

    // A graceful stop closes sessions and exits.
    let status = env
        .operator
        .terminate(Duration::from_secs(40))
        .await
        .expect("graceful stop");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn network_faults_lose_the_job_then_the_session_comes_back() -> Result<()> {
    let env = Env::new("ctl-net", 1).await;
    let host = env.hosts.host(0).clone();
    env.session("net", "PublicKey", "openTimeout: 10s").await;
    let before = env
        .ready("net")
        .await
        .status
        .and_then(|s| s.instance_id)
        .expect("instance");

    // sshd's session processes killed mid-job: the job fails SessionLost with its output so far.
    env.job("cut", "net", "Write-Output 'first'\nStart-Sleep -Seconds 60", "")
        .await;
    env.wait_job("cut", STEP, "output", |j| output(j).contains("first"))
        .await;
    let listener =
        std::fs::read_to_string(env.hosts.state.state_dir.join(format!("{}/sshd.pid", host.name)))?
            .trim()
            .to_owned();
    for pid in host.sshd_processes().into_iter().filter(|p| *p != listener) {
        let pid: libc::pid_t = pid.parse()?;
        // SAFETY: kill(2) on a pid in the test's own host namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let cut = env
        .wait_job("cut", STEP, "SessionLost", |j| state(j) == Some(JobState::Failed))
        .await;
    let failed = cut
        .status
        .clone()
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Failed");
    assert_eq!(failed.map(|c| c.reason), Some("SessionLost".to_owned()));
    assert_eq!(output(&cut), "first\n");
    let again = env
        .wait_session("net", OPEN, "reconnected", |s| {
            s.status.as_ref().is_some_and(|st| {
                st.state == Some(RunspaceState::Opened) && st.instance_id.as_deref() != Some(before.as_str())
            })
        })
        .await;
    let second = again.status.and_then(|s| s.instance_id).expect("instance");

    // Black-holed: the keepalive notices, retries show HostUnreachable; restored: open again.
    env.hosts.blackhole(&host.name).await?;
    env.wait_session("net", Duration::from_secs(90), "unreachable", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| matches!(st.state, Some(RunspaceState::Connecting | RunspaceState::Broken)))
    })
    .await;
    env.hosts.unblackhole(&host.name).await?;
    env.wait_session("net", Duration::from_secs(120), "back", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.state == Some(RunspaceState::Opened) && st.instance_id.as_deref() != Some(second.as_str())
        })
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn a_standby_takes_over_the_sessions_when_the_leader_dies() {
    let lease = Duration::from_secs(5);
    let retry = Duration::from_secs(2);
    let mut env = Env::new("ctl-leader", 1).await;
    // The Env's operator runs without election: replace it by two electing replicas.
    env.operator.kill().await;
    let control_plane = ControlPlane::shared();
    let flags = [
        "--leader-election",
        "--lease-namespace",
        &env.ns.name,
        "--lease-duration",
        "5s",
    ];
    let mut first = OperatorProcess::start(control_plane, &env.ns.name, &flags)
        .await
        .expect("first");
    env.session("ha", "PublicKey", "").await;
    env.operator = OperatorProcess::start(control_plane, &env.ns.name, &flags)
        .await
        .expect("second");
    let before = env
        .ready("ha")
        .await
        .status
        .and_then(|s| s.instance_id)
        .expect("instance");
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> = env.ns.api();
    let holder = |lease: Option<k8s_openapi::api::coordination::v1::Lease>| {
        lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
    };
    let leader = holder(leases.get_opt("pssession-operator").await.expect("lease"));
    assert!(!leader.is_empty(), "a leader holds the lease");

    if leader == first.instance {
        first.kill().await;
    } else {
        assert_eq!(leader, env.operator.instance);
        env.operator.kill().await;
    }
    let killed = std::time::Instant::now();
    let new_leader = eventually("the standby leads", lease * 4, || {
        let leases = leases.clone();
        let leader = leader.clone();
        async move {
            let now = holder(leases.get_opt("pssession-operator").await?);
            Ok((!now.is_empty() && now != leader).then_some(now))
        }
    })
    .await
    .expect("takeover");
    let takeover = killed.elapsed();
    println!("takeover after the leader was killed: {takeover:?} (lease {lease:?}, retry {retry:?})");
    assert!(takeover <= (lease + retry) * 2, "took {takeover:?}");
    assert_ne!(new_leader, leader);
    // The new leader reopens the SSH session: a new runspace, said so.
    let after = env
        .wait_session("ha", OPEN, "reopened by the new leader", |s| {
            s.status.as_ref().is_some_and(|st| {
                st.state == Some(RunspaceState::Opened) && st.instance_id.as_deref() != Some(before.as_str())
            })
        })
        .await;
    assert!(
        after
            .status
            .and_then(|s| s.message)
            .unwrap_or_default()
            .contains("StateLost")
    );
}

/// A GET on the operator's HTTP port: (status code, body).
async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut text = String::new();
    tokio::time::timeout(STEP, stream.read_to_string(&mut text)).await??;
    let code = text.split_whitespace().nth(1).unwrap_or_default().parse()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

#[tokio::test]
async fn metrics_and_probes_are_served() -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let env = Env::with_flags("ctl-metrics", 1, &["--metrics-addr", &addr]).await;
    env.session("m", "PublicKey", "").await;
    env.ready("m").await;
    env.job("one", "m", "Write-Output 1", "").await;
    env.done("one").await;
    let (code, _) = http_get(&addr, "/healthz").await?;
    assert_eq!(code, 200);
    let (code, _) = http_get(&addr, "/readyz").await?;
    assert_eq!(code, 200, "ready once the caches are filled");
    let text = eventually("metrics show the job", STEP, || {
        let addr = addr.clone();
        async move {
            let (_, body) = http_get(&addr, "/metrics").await?;
            Ok(body
                .contains("pssession_operator_jobs{state=\"Completed\"} 1")
                .then_some(body))
        }
    })
    .await?;
    for expected in [
        "pssession_operator_sessions{state=\"Opened\"} 1",
        "pssession_operator_open_duration_seconds_count{transport=\"SSH\",result=\"Opened\"} 1",
        "pssession_operator_job_duration_seconds_count{state=\"Completed\"} 1",
        "pssession_operator_reconcile_duration_seconds_count{controller=\"pssession\"}",
        "pssession_operator_status_writes_total{kind=\"PSJob\"}",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    Ok(())
}

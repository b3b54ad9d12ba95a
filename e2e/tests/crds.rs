//! The CRDs on a real API server, used the way people use them: kubectl with its default strict
//! field validation, `kubectl get` and `kubectl explain`, namespace deletion and garbage collection.

use std::time::Duration;

use e2e::{ControlPlane, TestNamespace, crds::install_crds, test_namespace};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use pssession_operator::api::{PSJob, PSSession};
use serde_json::json;

async fn namespace(prefix: &str) -> TestNamespace {
    install_crds(ControlPlane::shared()).await.expect("CRDs install");
    test_namespace(prefix).await
}

/// `kubectl create -f -` of `manifest`, which must succeed.
async fn create(ns: &TestNamespace, manifest: &str) {
    let out = ns
        .kubectl_with_stdin(&["create", "-f", "-"], manifest)
        .await
        .expect("kubectl runs");
    out.ok().unwrap_or_else(|e| panic!("{e}\n{manifest}"));
}

/// `kubectl args...` in the test namespace, which must succeed; its stdout.
async fn kubectl_ok(ns: &TestNamespace, args: &[&str]) -> String {
    let out = ns.kubectl(args).await.expect("kubectl runs");
    out.ok().unwrap_or_else(|e| panic!("{e}")).to_owned()
}

fn repo_path(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn session_manifest(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: psremoting.dev/v1alpha1\nkind: PSSession\nmetadata:\n  name: {name}\nspec:\n{}",
        indent(spec)
    )
}

fn job_manifest(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: psremoting.dev/v1alpha1\nkind: PSJob\nmetadata:\n  name: {name}\nspec:\n{}",
        indent(spec)
    )
}

fn indent(block: &str) -> String {
    block.lines().map(|line| format!("  {line}\n")).collect()
}

const WSMAN: &str = "computerName: web01.corp.example.com\ncredentialsSecretRef: {name: web01-winrm}";
const SSH: &str = "computerName: 10.0.0.5\ntransport: SSH\ncredentialsSecretRef: {name: k}\nknownHostsSecretRef: {name: kh}";
const JOB: &str = "sessionRef: {name: web01}\nscript: Write-Output 'hi'\nparameters: {A: 1}";

/// Bounded poll: `check` until it returns true, or panic with `what` after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn every_example_is_accepted_as_is() {
    let ns = namespace("examples").await;
    let mut files: Vec<_> = std::fs::read_dir(repo_path("examples"))
        .expect("examples/ exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "expected the examples, found {files:?}");
    for file in &files {
        let out = ns
            .kubectl(&["apply", "-f", &file.to_string_lossy()])
            .await
            .expect("kubectl runs");
        assert!(out.success(), "{} was refused: {}", file.display(), out.stderr);
        assert!(
            !out.stderr.contains("Warning"),
            "{} drew a warning: {}",
            file.display(),
            out.stderr
        );
    }
    let sessions = ns
        .api::<PSSession>()
        .list(&Default::default())
        .await
        .expect("list sessions");
    let jobs = ns
        .api::<PSJob>()
        .list(&Default::default())
        .await
        .expect("list jobs");
    assert_eq!(sessions.items.len(), 4, "sessions in the examples");
    assert_eq!(jobs.items.len(), 4, "jobs in the examples");
    // Typed parameters survive the round trip through the API server unchanged.
    let rotate = ns
        .api::<PSJob>()
        .get("rotate-logs")
        .await
        .expect("rotate-logs exists");
    assert_eq!(rotate.spec.parameters["KeepDays"], json!(14));
    assert_eq!(
        rotate.spec.parameters["Owner"],
        json!({"team": "platform", "ticket": "OPS-1234"})
    );
}

/// One invalid manifest: what it is, the YAML, and the texts the refusal must contain (the first
/// one names the field).
struct Invalid {
    case: &'static str,
    manifest: String,
    expect: &'static [&'static str],
}

fn invalid_manifests() -> Vec<Invalid> {
    let s = |case, spec: &str, expect| Invalid {
        case,
        manifest: session_manifest("bad", spec),
        expect,
    };
    let j = |case, spec: &str, expect| Invalid {
        case,
        manifest: job_manifest("bad", spec),
        expect,
    };
    vec![
        s(
            "missing computerName",
            "credentialsSecretRef: {name: c}",
            &["spec.computerName", "Required value"],
        ),
        s(
            "computerName with shell metacharacters",
            "computerName: 'web01; rm -rf /'\ncredentialsSecretRef: {name: c}",
            &["spec.computerName", "should match"],
        ),
        s(
            "unknown transport",
            &format!("{WSMAN}\ntransport: Telnet"),
            &["spec.transport", "Unsupported value"],
        ),
        s(
            "port out of range",
            &format!("{WSMAN}\nport: 70000"),
            &["spec.port", "less than or equal to 65535"],
        ),
        s(
            "port zero",
            &format!("{WSMAN}\nport: 0"),
            &["spec.port", "greater than or equal to 1"],
        ),
        s(
            "allowUnencrypted on SSH",
            &format!("{SSH}\nallowUnencrypted: true"),
            &["spec.allowUnencrypted", "applies to the WSMan transport only"],
        ),
        s(
            "CredSSP is not offered",
            &format!("{WSMAN}\nauthentication: CredSSP"),
            &["spec.authentication", "Unsupported value"],
        ),
        s(
            "SSH with NTLM",
            &format!("{SSH}\nauthentication: NTLM"),
            &["spec.authentication", "must fit the transport"],
        ),
        s(
            "WSMan with PublicKey",
            &format!("{WSMAN}\nauthentication: PublicKey"),
            &["spec.authentication", "must fit the transport"],
        ),
        s(
            "Certificate without SSL",
            &format!("{WSMAN}\nauthentication: Certificate"),
            &["spec.authentication", "needs useSSL"],
        ),
        s(
            "useSSL on SSH",
            &format!("{SSH}\nuseSSL: true"),
            &["spec.useSSL", "WSMan transport only"],
        ),
        s(
            "SSH without known hosts",
            "computerName: h\ntransport: SSH\ncredentialsSecretRef: {name: k}",
            &["spec.knownHostsSecretRef", "needs knownHostsSecretRef"],
        ),
        s(
            "configurationName on SSH",
            &format!("{SSH}\nconfigurationName: JEA"),
            &["spec.configurationName", "WSMan transport only"],
        ),
        s(
            "idleTimeout below 10s",
            &format!("{WSMAN}\nidleTimeout: 5s"),
            &["spec.idleTimeout", "at least 10s"],
        ),
        s(
            "idleTimeout not a duration",
            &format!("{WSMAN}\nidleTimeout: ten minutes"),
            &["spec.idleTimeout", "should match"],
        ),
        s(
            "openTimeout zero",
            &format!("{WSMAN}\nopenTimeout: 0s"),
            &["spec.openTimeout", "greater than 0"],
        ),
        s(
            "retry count above 100",
            &format!("{WSMAN}\nmaxConnectionRetryCount: 101"),
            &["spec.maxConnectionRetryCount"],
        ),
        s(
            "unknown buffering mode",
            &format!("{WSMAN}\noutputBufferingMode: Keep"),
            &["spec.outputBufferingMode", "Unsupported value"],
        ),
        s(
            "Disconnected over SSH",
            &format!("{SSH}\ndesiredState: Disconnected"),
            &["spec.desiredState", "WSMan transport"],
        ),
        s(
            "attach over SSH",
            &format!("{SSH}\nattach: {{shellId: 2D6534D0-6B12-40E3-B773-CBA26459CFA8}}"),
            &["spec.attach", "WSMan transport"],
        ),
        s(
            "attach with a malformed shell id",
            &format!("{WSMAN}\nattach: {{shellId: not-a-guid}}"),
            &["spec.attach.shellId", "should match"],
        ),
        s(
            "caSecretRef without SSL",
            &format!("{WSMAN}\ncaSecretRef: {{name: ca}}"),
            &["spec.caSecretRef", "useSSL"],
        ),
        s(
            "secret name not a DNS name",
            "computerName: h\ncredentialsSecretRef: {name: Bad_Name}",
            &["spec.credentialsSecretRef.name", "should match"],
        ),
        s(
            "missing credentials",
            "computerName: h",
            &["spec.credentialsSecretRef", "Required value"],
        ),
        s(
            "typo in a field name",
            "computerName: h\ncredentialsSecretRef: {name: c}\nidleTimout: 1h",
            &["unknown field", "spec.idleTimout"],
        ),
        j(
            "job without a session",
            "script: Write-Output 1",
            &["spec.sessionRef", "Required value"],
        ),
        j(
            "empty script",
            "sessionRef: {name: web01}\nscript: ''",
            &["spec.script", "at least 1 chars"],
        ),
        j(
            "blank script",
            "sessionRef: {name: web01}\nscript: '   '",
            &["spec.script", "must not be blank"],
        ),
        j(
            "output limit too small",
            &format!("{JOB}\noutputLimitBytes: 100"),
            &["spec.outputLimitBytes", "greater than or equal to 256"],
        ),
        j(
            "output limit too large",
            &format!("{JOB}\noutputLimitBytes: 65536"),
            &["spec.outputLimitBytes", "less than or equal to 32768"],
        ),
        j(
            "parameters not a map",
            "sessionRef: {name: web01}\nscript: x\nparameters: [1, 2]",
            &["spec.parameters", "must be of type object"],
        ),
        j(
            "negative timeout",
            &format!("{JOB}\ntimeout: -5s"),
            &["spec.timeout"],
        ),
        j(
            "negative ttl",
            &format!("{JOB}\nttlSecondsAfterFinished: -1"),
            &["spec.ttlSecondsAfterFinished", "greater than or equal to 0"],
        ),
        j(
            "typo in a job field",
            &format!("{JOB}\nparameter: {{A: 1}}"),
            &["unknown field", "spec.parameter"],
        ),
    ]
}

#[tokio::test]
async fn invalid_manifests_are_refused_naming_the_field() {
    let ns = namespace("invalid").await;
    let cases = invalid_manifests();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        let out = ns
            .kubectl_with_stdin(&["create", "-f", "-"], &case.manifest)
            .await
            .expect("kubectl runs");
        if out.success() {
            failures.push(format!("{}: accepted\n{}", case.case, case.manifest));
            continue;
        }
        let missing: Vec<_> = case
            .expect
            .iter()
            .filter(|text| !out.stderr.contains(*text))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "{}: refusal lacks {missing:?}: {}",
                case.case,
                out.stderr.trim()
            ));
        }
    }
    eprintln!("{} invalid manifests checked", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let left = ns
        .api::<PSSession>()
        .list(&Default::default())
        .await
        .expect("list");
    assert!(left.items.is_empty(), "a refused manifest left an object behind");
}

#[tokio::test]
async fn defaults_are_applied_and_nulls_mean_unset() {
    let ns = namespace("defaults").await;
    let manifest = session_manifest("web01", &format!("{WSMAN}\nport: null\nattach: null"));
    create(&ns, &manifest).await;
    create(&ns, &job_manifest("j", JOB)).await;
    let session = ns.api::<PSSession>().get("web01").await.expect("get");
    assert_eq!(
        serde_json::to_value(session.spec.transport).expect("ser"),
        "WSMan"
    );
    assert_eq!(session.spec.max_connection_retry_count, 5);
    assert_eq!(
        serde_json::to_value(session.spec.desired_state).expect("ser"),
        "Connected"
    );
    assert_eq!(session.spec.port, None);
    assert_eq!(session.spec.attach, None);
    let job = ns.api::<PSJob>().get("j").await.expect("get");
    assert_eq!(job.spec.output_limit_bytes, 4096);
}

#[tokio::test]
async fn immutable_fields_refuse_changes() {
    let ns = namespace("immutable").await;
    let sessions = ns.api::<PSSession>();
    create(&ns, &session_manifest("web01", WSMAN)).await;
    create(&ns, &job_manifest("j", JOB)).await;

    let cases = [
        (
            "computerName",
            json!({"spec": {"computerName": "web02"}}),
            "computerName is immutable",
        ),
        (
            "transport",
            json!({"spec": {"transport": "SSH", "knownHostsSecretRef": {"name": "kh"}}}),
            "transport is immutable",
        ),
        (
            "attach",
            json!({"spec": {"attach": {"shellId": "2D6534D0-6B12-40E3-B773-CBA26459CFA8"}}}),
            "attach is immutable",
        ),
    ];
    for (field, patch, message) in cases {
        let err = sessions
            .patch("web01", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err(&format!("changing {field} must be refused"));
        assert!(err.to_string().contains(message), "{field}: {err}");
    }
    // Mutable fields still change.
    sessions
        .patch(
            "web01",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"idleTimeout": "10m"}})),
        )
        .await
        .expect("idleTimeout is mutable");

    let err = ns
        .api::<PSJob>()
        .patch(
            "j",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"script": "Write-Output 2"}})),
        )
        .await
        .expect_err("a job's spec is immutable");
    assert!(err.to_string().contains("spec is immutable"), "{err}");
}

fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn kubectl_get_prints_the_design_columns() {
    let ns = namespace("columns").await;
    create(&ns, &session_manifest("web01", WSMAN)).await;
    create(&ns, &job_manifest("j", JOB)).await;

    // Status as the controller will write it, through the status subresource.
    let expires = "2099-01-01T00:00:00Z";
    let status = json!({"status": {
        "state": "Opened", "availability": "Available", "idleExpiresAt": expires, "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Opened", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    }});
    ns.api::<PSSession>()
        .patch_status("web01", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status subresource takes a patch");
    let job_status =
        json!({"status": {"state": "Running", "startTime": "2026-01-01T00:00:00Z", "duration": "1m30s"}});
    ns.api::<PSJob>()
        .patch_status("j", &PatchParams::default(), &Patch::Merge(&job_status))
        .await
        .expect("job status subresource takes a patch");

    let table = kubectl_ok(&ns, &["get", "pssessions"]).await;
    assert_eq!(
        header(&table),
        [
            "NAME",
            "COMPUTER",
            "TRANSPORT",
            "STATE",
            "AVAILABILITY",
            "READY",
            "IDLE-EXPIRES",
            "AGE"
        ]
    );
    let row: Vec<_> = table.lines().nth(1).expect("a row").split_whitespace().collect();
    assert_eq!(
        &row[..7],
        [
            "web01",
            "web01.corp.example.com",
            "WSMan",
            "Opened",
            "Available",
            "True",
            expires
        ]
    );

    let table = kubectl_ok(&ns, &["get", "psjobs"]).await;
    assert_eq!(
        header(&table),
        ["NAME", "SESSION", "STATE", "STARTED", "DURATION", "AGE"]
    );
    let row: Vec<_> = table.lines().nth(1).expect("a row").split_whitespace().collect();
    assert_eq!(
        [row[0], row[1], row[2], row[4]],
        ["j", "web01", "Running", "1m30s"]
    );

    // The short name and the category reach the same objects.
    let short = kubectl_ok(&ns, &["get", "pss", "-o", "name"]).await;
    assert_eq!(short.trim(), "pssession.psremoting.dev/web01");
    let category = kubectl_ok(&ns, &["get", "psremoting", "-o", "name"]).await;
    let mut names: Vec<_> = category.lines().collect();
    names.sort();
    assert_eq!(
        names,
        ["psjob.psremoting.dev/j", "pssession.psremoting.dev/web01"]
    );

    // Writing status does not touch the spec's generation.
    let session = ns.api::<PSSession>().get("web01").await.expect("get");
    assert_eq!(session.metadata.generation, Some(1));
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_docs() {
    let ns = namespace("explain").await;
    let out = kubectl_ok(&ns, &["explain", "pssession.spec"]).await;
    for text in [
        "computerName",
        "DNS name or IP address",
        "credentialsSecretRef",
        "idleTimeout",
        "desiredState",
    ] {
        assert!(out.contains(text), "explain lacks {text:?}:\n{out}");
    }
    let out = kubectl_ok(&ns, &["explain", "psjob.spec.parameters"]).await;
    assert!(
        out.contains("param(...)"),
        "explain psjob.spec.parameters:\n{out}"
    );
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_sessions_and_jobs() {
    let ns = namespace("nsdelete").await;
    create(&ns, &session_manifest("web01", WSMAN)).await;
    create(&ns, &job_manifest("j", JOB)).await;
    let namespaces = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(ns.client.clone());
    namespaces
        .delete(&ns.name, &DeleteParams::default())
        .await
        .expect("namespace deletion starts");
    eventually(
        "the namespace and its objects to go",
        Duration::from_secs(60),
        || async { matches!(namespaces.get_opt(&ns.name).await, Ok(None)) },
    )
    .await;
    let everywhere = kube::Api::<PSSession>::all(ns.client.clone());
    let left: Vec<_> = everywhere
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(&ns.name))
        .collect();
    assert!(left.is_empty());
}

#[tokio::test]
async fn a_job_owned_by_a_deleted_session_is_garbage_collected() {
    let ns = namespace("gc").await;
    create(&ns, &session_manifest("web01", WSMAN)).await;
    let sessions = ns.api::<PSSession>();
    let jobs = ns.api::<PSJob>();
    let session = sessions.get("web01").await.expect("get");
    let owner = kube::Resource::controller_owner_ref(&session, &()).expect("session has a uid");
    let mut job: PSJob = serde_saphyr::from_str(&job_manifest("orphan-to-be", JOB)).expect("job yaml");
    job.metadata.owner_references = Some(vec![owner]);
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("job with owner created");

    sessions
        .delete("web01", &DeleteParams::background())
        .await
        .expect("session deleted");
    eventually(
        "the owned job to be garbage collected",
        Duration::from_secs(60),
        || async { matches!(jobs.get_opt("orphan-to-be").await, Ok(None)) },
    )
    .await;
}

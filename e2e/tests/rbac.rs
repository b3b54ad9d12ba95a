//! RBAC proven, not assumed: the Helm chart's ServiceAccount and RBAC (one-namespace mode) are
//! installed into the test control plane, a token is minted for that ServiceAccount (TokenRequest,
//! `kubectl create token`), and the operator runs with only that token: a session opens, a job runs
//! and writes its output ConfigMap, events and status are written, deletion passes the finalizer.
//! And with the same token a Secret in a namespace it does not watch cannot be read.

use std::{path::Path, time::Duration};

use e2e::{
    ControlPlane,
    crds::install_crds,
    hosts::TargetHosts,
    operator::{OperatorProcess, create_host_secrets, eventually, job_yaml, ssh_session_yaml},
    test_namespace,
};
use k8s_openapi::api::core::v1::Secret;
use pssession_operator::api::{JobState, PSJob, PSSession};
use serde_json::Value;

fn helm() -> String {
    let out = std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build-helm.sh"))
        .output()
        .expect("e2e/tools/build-helm.sh runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_charts_rbac_is_enough_and_no_more() {
    let control_plane = ControlPlane::shared();
    install_crds(control_plane).await.expect("CRDs");
    let ns = test_namespace("rbac").await;
    let other = test_namespace("rbac-other").await;

    // The chart's ServiceAccount and RBAC for this namespace, as `helm template` renders them.
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/pssession-operator");
    let rendered = std::process::Command::new(helm())
        .args(["template", "t"])
        .arg(&chart)
        .args([
            "--namespace",
            &ns.name,
            "--kube-version",
            "1.34.0",
            "--set",
            "crds.install=false",
        ])
        .arg("--set")
        .arg(format!("watchNamespaces={{{}}}", ns.name))
        .output()
        .expect("helm template");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8_lossy(&rendered.stdout).into_owned();
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text).expect("rendered YAML");
    let wanted: Vec<String> = documents
        .iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("ServiceAccount" | "Role" | "RoleBinding")
            )
        })
        .map(|d| serde_saphyr::to_string(d).expect("YAML"))
        .collect();
    assert_eq!(wanted.len(), 3, "ServiceAccount, Role, RoleBinding");
    ns.kubectl_with_stdin(&["apply", "-f", "-"], &wanted.join("---\n"))
        .await
        .and_then(|o| o.ok().map(|_| ()))
        .expect("RBAC applied");

    // A token for the ServiceAccount, and a kubeconfig that holds only it.
    let token = ns
        .kubectl(&["create", "token", "t-pssession-operator", "--duration=1h"])
        .await
        .and_then(|o| o.ok().map(|s| s.trim().to_owned()))
        .expect("TokenRequest");
    let admin: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(control_plane.kubeconfig_path()).expect("kubeconfig"),
    )
    .expect("kubeconfig YAML");
    let cluster = &admin["clusters"][0]["cluster"];
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": ns.name}}],
    });
    let path = control_plane.dir().join(format!("kubeconfig-{}", ns.name));
    std::fs::write(&path, serde_saphyr::to_string(&kubeconfig).expect("YAML")).expect("write kubeconfig");

    // Not more: a Secret nobody references, in a namespace the operator does not watch.
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "unrelated"}, "stringData": {"password": "not-for-the-operator"},
    }))
    .expect("secret");
    other
        .api::<Secret>()
        .create(&Default::default(), &secret)
        .await
        .expect("other secret");
    let kubectl = control_plane.binaries().kubectl.clone();
    let denied = std::process::Command::new(&kubectl)
        .env("KUBECONFIG", &path)
        .args(["get", "secret", "unrelated", "--namespace", &other.name])
        .output()
        .expect("kubectl");
    assert!(!denied.status.success(), "the token read a Secret it should not");
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Forbidden"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );

    // Enough: the operator with only that token does its whole job in its namespace.
    let hosts = TargetHosts::up(1).await.expect("hosts");
    create_host_secrets(&ns.api::<Secret>(), &hosts, "h")
        .await
        .expect("secrets");
    let operator = OperatorProcess::start_as(control_plane, &path, &ns.name, &[])
        .await
        .expect("operator");
    let apply = |yaml: String| {
        let ns = &ns;
        async move {
            ns.kubectl_with_stdin(&["apply", "-f", "-"], &yaml)
                .await
                .and_then(|o| o.ok().map(|_| ()))
                .expect("apply");
        }
    };
    apply(ssh_session_yaml("s", hosts.host(0), "h", "PublicKey", "")).await;
    apply(job_yaml("j", "s", "Write-Output 'with least privilege'", "")).await;
    let jobs = ns.api::<PSJob>();
    let job = eventually("the job completes", Duration::from_secs(60), || {
        let jobs = jobs.clone();
        async move {
            Ok(jobs
                .get("j")
                .await?
                .status
                .filter(|s| s.state == Some(JobState::Completed)))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\noperator log:\n{}", operator.log_text()));
    assert_eq!(job.output.as_deref(), Some("with least privilege\n"));
    assert!(
        job.output_config_map.is_some(),
        "the output ConfigMap was written"
    );
    let events = ns
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&Default::default())
        .await
        .expect("events");
    assert!(
        events.items.iter().any(|e| e.reason.as_deref() == Some("Opened")),
        "events written"
    );
    let sessions = ns.api::<PSSession>();
    sessions.delete("s", &Default::default()).await.expect("delete");
    eventually("the finalizer lets go", Duration::from_secs(30), || {
        let sessions = sessions.clone();
        async move { Ok(sessions.get_opt("s").await?.is_none().then_some(())) }
    })
    .await
    .expect("deleted");
    let log = operator.log_text();
    assert!(
        !log.contains("Forbidden") && !log.contains("forbidden"),
        "the operator was refused something:\n{log}"
    );
}

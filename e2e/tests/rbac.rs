//! RBAC proven, not assumed. Every operator the harness starts runs with a TokenRequest token of
//! the Helm chart's ServiceAccount, bound by the chart's own one-namespace Role
//! ([`e2e::chart::install_identity`]), so every scenario of `controllers.rs` passing is the proof
//! that those rules are enough. Here:
//! - no more than that: with the same token, a Secret in a namespace the operator does not watch
//!   cannot be read, and what the operator never does (write Secrets, delete sessions, read Pods)
//!   is refused;
//! - the cluster-wide mode (ClusterRole): one operator watching every namespace runs sessions and
//!   jobs in two namespaces with only the chart's ClusterRole, and still cannot write a Secret.

use std::{path::Path, time::Duration};

use e2e::{
    ControlPlane, ControlPlaneOptions, TestNamespace,
    chart::{self, Watch},
    crds::install_crds,
    hosts::TargetHosts,
    operator::{OperatorProcess, create_host_secrets, eventually, job_yaml, ssh_session_yaml},
};
use k8s_openapi::api::core::v1::Secret;
use pssession_operator::api::{JobState, PSJob, PSSession};

/// What the operator must never be able to do in `namespace`, and what it needs there.
async fn assert_least_privilege(kubeconfig: &Path, namespace: &str) {
    let client = chart::client_for(kubeconfig).await.expect("client");
    for (verb, resource) in [
        ("create", "secrets"),
        ("update", "secrets"),
        ("delete", "secrets"),
        ("delete", "pssessions.psremoting.dev"),
        ("create", "pssessions.psremoting.dev"),
        ("create", "psjobs.psremoting.dev"),
        ("update", "pssessions.psremoting.dev/status"),
        ("get", "pods"),
        ("create", "pods/exec"),
        ("delete", "configmaps"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
    ] {
        assert!(
            !chart::can_i(&client, verb, resource, Some(namespace))
                .await
                .expect("review"),
            "the chart's RBAC allows {verb} {resource} in {namespace}"
        );
    }
    // The scenarios prove these in action; this names them.
    for (verb, resource) in [
        ("patch", "pssessions.psremoting.dev/status"),
        ("patch", "psjobs.psremoting.dev/status"),
        ("watch", "psjobs.psremoting.dev"),
        ("delete", "psjobs.psremoting.dev"),
        ("create", "events.events.k8s.io"),
        ("create", "configmaps"),
    ] {
        assert!(
            chart::can_i(&client, verb, resource, Some(namespace))
                .await
                .expect("review"),
            "the chart's RBAC lacks {verb} {resource} in {namespace}"
        );
    }
}

async fn apply(ns: &TestNamespace, yaml: &str) {
    ns.kubectl_with_stdin(&["apply", "-f", "-"], yaml)
        .await
        .and_then(|o| o.ok().map(|_| ()))
        .unwrap_or_else(|e| panic!("kubectl apply: {e:#}\n{yaml}"));
}

async fn wait_completed(ns: &TestNamespace, name: &str, operator: &OperatorProcess) -> PSJob {
    let jobs = ns.api::<PSJob>();
    eventually("the job completes", Duration::from_secs(60), || {
        let jobs = jobs.clone();
        async move {
            Ok(jobs
                .get(name)
                .await?
                .status
                .filter(|s| s.state == Some(JobState::Completed))
                .map(|_| ()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\noperator log:\n{}", operator.log_text()));
    jobs.get(name).await.expect("job")
}

async fn delete_session(ns: &TestNamespace, name: &str) {
    let sessions = ns.api::<PSSession>();
    sessions.delete(name, &Default::default()).await.expect("delete");
    eventually("the finalizer lets go", Duration::from_secs(30), || {
        let sessions = sessions.clone();
        async move { Ok(sessions.get_opt(name).await?.is_none().then_some(())) }
    })
    .await
    .expect("deleted");
}

fn assert_never_refused(operator: &OperatorProcess) {
    let log = operator.log_text();
    assert!(
        !log.contains("Forbidden") && !log.contains("forbidden"),
        "the operator was refused something:\n{log}"
    );
}

#[tokio::test]
async fn one_namespace_mode_reads_nothing_outside_its_namespace() {
    let control_plane = ControlPlane::shared();
    install_crds(control_plane).await.expect("CRDs");
    let ns = control_plane.test_namespace("rbac").await;
    let other = control_plane.test_namespace("rbac-other").await;
    let kubeconfig = chart::install_identity(control_plane, &ns.name, &Watch::Namespace(ns.name.clone()))
        .await
        .expect("the chart's identity");

    // A Secret nobody references, in a namespace the operator does not watch.
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "unrelated"}, "stringData": {"password": "not-for-the-operator"},
    }))
    .expect("secret");
    other
        .api::<Secret>()
        .create(&Default::default(), &secret)
        .await
        .expect("other secret");
    let denied = std::process::Command::new(&control_plane.binaries().kubectl)
        .env("KUBECONFIG", &kubeconfig)
        .args(["get", "secret", "unrelated", "--namespace", &other.name])
        .output()
        .expect("kubectl");
    assert!(!denied.status.success(), "the token read a Secret it should not");
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Forbidden"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let client = chart::client_for(&kubeconfig).await.expect("client");
    for (namespace, resource) in [
        (Some(other.name.as_str()), "secrets"),
        (Some(other.name.as_str()), "pssessions.psremoting.dev"),
        (Some("default"), "secrets"),
        (None, "secrets"),
    ] {
        assert!(
            !chart::can_i(&client, "list", resource, namespace)
                .await
                .expect("review"),
            "the token may list {resource} in {namespace:?}"
        );
    }
    assert_least_privilege(&kubeconfig, &ns.name).await;

    // With that token the operator does its whole job in its namespace.
    let hosts = TargetHosts::up(1).await.expect("hosts");
    create_host_secrets(&ns.api::<Secret>(), &hosts, "h")
        .await
        .expect("secrets");
    let operator = OperatorProcess::start_as(control_plane, &kubeconfig, &ns.name, &[])
        .await
        .expect("operator");
    apply(&ns, &ssh_session_yaml("s", hosts.host(0), "h", "PublicKey", "")).await;
    apply(
        &ns,
        &job_yaml("j", "s", "Write-Output 'with least privilege'", ""),
    )
    .await;
    let job = wait_completed(&ns, "j", &operator).await;
    let status = job.status.expect("status");
    assert_eq!(status.output.as_deref(), Some("with least privilege\n"));
    assert!(
        status.output_config_map.is_some(),
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
    delete_session(&ns, "s").await;
    assert_never_refused(&operator);
}

#[tokio::test]
async fn cluster_wide_mode_serves_every_namespace_with_the_cluster_role() {
    // A control plane of its own: an operator watching every namespace must not meet the other
    // tests' sessions.
    let control_plane = ControlPlane::start(ControlPlaneOptions::from_env())
        .await
        .expect("a control plane for the cluster-wide operator");
    install_crds(&control_plane).await.expect("CRDs");
    let system = control_plane.test_namespace("pssession-system").await;
    let kubeconfig = chart::install_identity(&control_plane, &system.name, &Watch::All)
        .await
        .expect("the chart's identity");
    let rendered = chart::render(&system.name, &[]).await.expect("render");
    assert!(
        rendered.iter().any(|d| d["kind"] == "ClusterRole") && !rendered.iter().any(|d| d["kind"] == "Role"),
        "the default mode is cluster-wide"
    );

    let teams = [
        control_plane.test_namespace("team-a").await,
        control_plane.test_namespace("team-b").await,
    ];
    for ns in &teams {
        assert_least_privilege(&kubeconfig, &ns.name).await;
    }
    let hosts = TargetHosts::up(1).await.expect("hosts");
    for ns in &teams {
        create_host_secrets(&ns.api::<Secret>(), &hosts, "h")
            .await
            .expect("secrets");
    }
    let operator = OperatorProcess::start_cluster_wide(
        &control_plane,
        &kubeconfig,
        &["--leader-election", "--lease-namespace", &system.name],
    )
    .await
    .expect("operator");
    for ns in &teams {
        apply(ns, &ssh_session_yaml("s", hosts.host(0), "h", "PublicKey", "")).await;
        apply(
            ns,
            &job_yaml("j", "s", &format!("Write-Output '{}'", ns.name), ""),
        )
        .await;
    }
    for ns in &teams {
        let job = wait_completed(ns, "j", &operator).await;
        assert_eq!(job.status.and_then(|s| s.output), Some(format!("{}\n", ns.name)));
    }
    let leases = system.api::<k8s_openapi::api::coordination::v1::Lease>();
    let lease = leases.get("pssession-operator").await.expect("the Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        Some(operator.instance.clone())
    );
    for ns in &teams {
        delete_session(ns, "s").await;
    }
    assert_never_refused(&operator);
}

//! The Helm chart installed the way helm would, into a fresh control plane (this test binary's own):
//! `helm template` output applied with kubectl. The CRDs come from the chart's templates and carry
//! `helm.sh/resource-policy: keep`; the Deployment's pods are created by the real
//! kube-controller-manager in a namespace that enforces the `restricted` Pod Security level, so
//! the admission plugin, not a reading of the YAML, says the pod spec is restricted. A pod without
//! that security context is refused there (the check can fail). The one-namespace mode with two
//! electing replicas passes the API server's server-side dry run.

use std::time::Duration;

use e2e::{ControlPlane, TestNamespace, chart, operator::eventually};
use k8s_openapi::{
    api::core::v1::{Namespace, Pod},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

const RESTRICTED: [(&str, &str); 3] = [
    ("pod-security.kubernetes.io/enforce", "restricted"),
    ("pod-security.kubernetes.io/enforce-version", "latest"),
    ("pod-security.kubernetes.io/warn", "restricted"),
];

async fn restricted_namespace(control_plane: &ControlPlane, prefix: &str) -> TestNamespace {
    let ns = control_plane.test_namespace(prefix).await;
    let labels: serde_json::Map<String, Value> = RESTRICTED
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Api::<Namespace>::all(ns.client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .expect("labelling the namespace");
    ns
}

fn yaml_stream(documents: &[Value]) -> String {
    documents
        .iter()
        .map(|d| serde_saphyr::to_string(d).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

async fn kubectl(ns: &TestNamespace, args: &[&str], stdin: &str) -> String {
    let out = ns.kubectl_with_stdin(args, stdin).await.expect("kubectl runs");
    let stdout = out
        .ok()
        .unwrap_or_else(|e| panic!("kubectl {args:?}: {e:#}"))
        .to_owned();
    format!("{stdout}{}", out.stderr)
}

#[tokio::test]
async fn the_chart_installs_and_its_pods_pass_the_restricted_profile() {
    let control_plane = ControlPlane::shared();
    let release = restricted_namespace(control_plane, "pssession-system").await;

    // The default install: CRDs from the chart, cluster-wide RBAC, one replica.
    let documents = chart::render(&release.name, &[]).await.expect("helm template");
    let kinds: Vec<&str> = documents.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Deployment",
    ] {
        assert!(kinds.contains(&kind), "{kind} not rendered: {kinds:?}");
    }
    let (crds, rest): (Vec<Value>, Vec<Value>) = documents
        .into_iter()
        .partition(|d| d["kind"] == "CustomResourceDefinition");
    assert_eq!(crds.len(), 2, "PSSession and PSJob");
    kubectl(&release, &["apply", "-f", "-"], &yaml_stream(&crds)).await;
    let crd_api = Api::<CustomResourceDefinition>::all(release.client.clone());
    for crd in &crds {
        let name = crd["metadata"]["name"].as_str().expect("CRD name").to_owned();
        let live = eventually("the CRD is established", Duration::from_secs(30), || {
            let crd_api = crd_api.clone();
            let name = name.clone();
            async move {
                let crd = crd_api.get(&name).await?;
                let established = crd
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
                Ok(established.then_some(crd))
            }
        })
        .await
        .expect("established");
        assert_eq!(
            live.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("helm.sh/resource-policy"))
                .map(String::as_str),
            Some("keep"),
            "{name}: an uninstall would delete every session"
        );
    }

    let applied = kubectl(&release, &["apply", "-f", "-"], &yaml_stream(&rest)).await;
    assert!(
        !applied.contains("violate PodSecurity"),
        "the Deployment's pod template would violate the restricted profile:\n{applied}"
    );

    // kube-controller-manager makes the ReplicaSet and its pod; the namespace's enforce label
    // makes the admission plugin judge that pod.
    let pods = release.api::<Pod>();
    let pod = eventually(
        "the Deployment's pod is admitted",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            async move { Ok(pods.list(&ListParams::default()).await?.items.into_iter().next()) }
        },
    )
    .await
    .unwrap_or_else(|e| {
        let events = std::process::Command::new(&control_plane.binaries().kubectl)
            .env("KUBECONFIG", control_plane.kubeconfig_path())
            .args(["get", "events", "--namespace", &release.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!("{e:#}\nevents:\n{events}")
    });
    let spec = pod.spec.expect("pod spec");
    assert_eq!(spec.service_account_name.as_deref(), Some(chart::SERVICE_ACCOUNT));
    let container = &spec.containers[0];
    let security = container
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert!(container.liveness_probe.is_some() && container.readiness_probe.is_some());
    assert!(
        container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_some()
    );

    // The same pod without its security context is refused in that namespace.
    let mut bare = serde_json::to_value(&spec).expect("spec JSON");
    bare["securityContext"] = json!({});
    bare["containers"][0]["securityContext"] = json!({});
    for volatile in ["nodeName", "schedulerName"] {
        if let Some(spec) = bare.as_object_mut() {
            spec.remove(volatile);
        }
    }
    let unrestricted = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "unrestricted"},
        "spec": bare,
    });
    let refused = release
        .kubectl_with_stdin(
            &["create", "--dry-run=server", "-f", "-"],
            &serde_saphyr::to_string(&unrestricted).expect("YAML"),
        )
        .await
        .expect("kubectl runs");
    assert!(
        !refused.success(),
        "a pod without the security context was admitted"
    );
    assert!(
        refused
            .stderr
            .contains("violates PodSecurity \"restricted:latest\""),
        "{}",
        refused.stderr
    );

    // The CRDs the chart installed serve the API: a session from examples/ is accepted.
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ssh-session.yaml"),
    )
    .expect("example");
    let users = control_plane.test_namespace("chart-users").await;
    kubectl(&users, &["apply", "-f", "-"], &example).await;

    // One-namespace mode with two electing replicas: Roles instead of ClusterRoles, accepted by
    // the API server as a whole.
    let watched = control_plane.test_namespace("chart-watched").await;
    let documents = chart::render(
        &release.name,
        &[
            "crds.install=false".into(),
            format!("watchNamespaces={{{}}}", watched.name),
            "replicas=2".into(),
            "leaderElection.enabled=true".into(),
        ],
    )
    .await
    .expect("helm template, one namespace");
    let kinds: Vec<&str> = documents.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert!(!kinds.contains(&"ClusterRole") && !kinds.contains(&"ClusterRoleBinding"));
    assert_eq!(kinds.iter().filter(|k| **k == "Role").count(), 2, "{kinds:?}");
    let deployment = documents
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    // kubectl wants one namespace per call: the Role in the watched namespace goes on its own.
    let (in_watched, in_release): (Vec<Value>, Vec<Value>) = documents
        .into_iter()
        .partition(|d| d["metadata"]["namespace"] == watched.name.as_str());
    assert_eq!(
        in_watched.len(),
        2,
        "the Role and RoleBinding in the watched namespace"
    );
    let mut dry_run = kubectl(
        &release,
        &["apply", "--dry-run=server", "-f", "-"],
        &yaml_stream(&in_release),
    )
    .await;
    dry_run += &kubectl(
        &watched,
        &["apply", "--dry-run=server", "-f", "-"],
        &yaml_stream(&in_watched),
    )
    .await;
    assert!(!dry_run.contains("violate PodSecurity"), "{dry_run}");
}

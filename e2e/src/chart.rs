//! The Helm chart as the tests meet it: rendered by a real helm (built from its Go module by
//! `e2e/tools/build-helm.sh`), and the operator's identity taken from it. Every operator the
//! harness starts runs with a token of the chart's ServiceAccount, bound by the chart's own RBAC,
//! so each end-to-end scenario is also a proof that those rules are enough.

use std::{
    path::{Path, PathBuf},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Value, json};

use crate::ControlPlane;

/// The release name the harness renders the chart with; objects are named `t-pssession-operator`.
pub const RELEASE: &str = "t";
/// The ServiceAccount (and Role/ClusterRole) name that follows from [`RELEASE`].
pub const SERVICE_ACCOUNT: &str = "t-pssession-operator";
/// What `helm template --kube-version` tells the chart; the control plane is newer.
const KUBE_VERSION: &str = "1.34.0";

pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/pssession-operator")
}

/// The helm binary; built (or found in the cache) once per test process.
pub fn helm() -> Result<PathBuf> {
    static HELM: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    HELM.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/build-helm.sh");
        let out = std::process::Command::new(&script)
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(PathBuf::from)
            .ok_or_else(|| "build-helm.sh printed no path".to_owned())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// `helm template` of the chart into `release_namespace` with `--set` values: the rendered
/// documents, in order.
pub async fn render(release_namespace: &str, sets: &[String]) -> Result<Vec<Value>> {
    let helm = tokio::task::spawn_blocking(helm).await??;
    let mut command = tokio::process::Command::new(helm);
    command.args(["template", RELEASE]).arg(chart_dir()).args([
        "--namespace",
        release_namespace,
        "--kube-version",
        KUBE_VERSION,
    ]);
    for set in sets {
        command.arg("--set").arg(set);
    }
    let out = command.output().await.context("running helm template")?;
    ensure!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).context("helm's output is not UTF-8")?;
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text).context("helm's output is not YAML")?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

/// What the operator watches, as the chart's `watchNamespaces` says it.
#[derive(Debug, Clone)]
pub enum Watch {
    /// Every namespace: a ClusterRole and ClusterRoleBinding.
    All,
    /// One namespace: a Role and RoleBinding there.
    Namespace(String),
}

impl Watch {
    fn values(&self) -> Vec<String> {
        match self {
            Watch::All => vec![],
            Watch::Namespace(ns) => vec![format!("watchNamespaces={{{ns}}}")],
        }
    }
}

/// Installs the chart's ServiceAccount and RBAC into `release_namespace` (leader election on, so
/// its Lease rules come too), mints a token for the ServiceAccount (TokenRequest) and writes a
/// kubeconfig holding only that token. Returns the kubeconfig's path.
pub async fn install_identity(
    control_plane: &ControlPlane,
    release_namespace: &str,
    watch: &Watch,
) -> Result<PathBuf> {
    let mut sets = watch.values();
    sets.extend(["crds.install=false".into(), "leaderElection.enabled=true".into()]);
    let documents = render(release_namespace, &sets).await?;
    let rbac: Vec<String> = documents
        .iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("ServiceAccount" | "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding")
            )
        })
        .map(serde_saphyr::to_string)
        .collect::<std::result::Result<_, _>>()
        .context("re-serializing the chart's RBAC")?;
    ensure!(
        rbac.len() >= 5,
        "the chart rendered {} RBAC objects; expected a ServiceAccount, two roles and their bindings",
        rbac.len()
    );
    let applied = control_plane
        .kubectl_in_with_stdin(release_namespace, &["apply", "-f", "-"], &rbac.join("---\n"))
        .await?;
    applied.ok().context("applying the chart's RBAC")?;

    let token = control_plane
        .kubectl_in(
            release_namespace,
            &["create", "token", SERVICE_ACCOUNT, "--duration=2h"],
        )
        .await?
        .ok()
        .context("TokenRequest for the chart's ServiceAccount")?
        .trim()
        .to_owned();
    if token.is_empty() {
        bail!("TokenRequest returned an empty token");
    }
    let admin: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(control_plane.kubeconfig_path()).context("reading the admin kubeconfig")?,
    )
    .context("the admin kubeconfig is not YAML")?;
    let cluster = &admin["clusters"][0]["cluster"];
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": release_namespace}}],
    });
    static WRITTEN: AtomicU32 = AtomicU32::new(0);
    let path = control_plane.dir().join(format!(
        "kubeconfig-sa-{release_namespace}-{}",
        WRITTEN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, serde_saphyr::to_string(&kubeconfig)?)
        .with_context(|| format!("writing {}", path.display()))?;
    wait_for_grants(&path, release_namespace, watch).await?;
    Ok(path)
}

/// A client with the identity of `kubeconfig`.
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client> {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

/// Whether `client` may `verb` `resource` (`plural[.group][/subresource]`) in `namespace` (all
/// namespaces when `None`), as the API server's authorizer answers a SelfSubjectAccessReview. No
/// discovery is involved, so a stale kubectl cache cannot change the answer.
pub async fn can_i(
    client: &kube::Client,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
) -> Result<bool> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let (resource, subresource) = resource
        .split_once('/')
        .map_or((resource, None), |(r, s)| (r, Some(s)));
    let (resource, group) = resource.split_once('.').unwrap_or((resource, ""));
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_owned()),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                subresource: subresource.map(str::to_owned),
                namespace: namespace.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = kube::Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&Default::default(), &review)
        .await
        .context("SelfSubjectAccessReview")?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The API server's RBAC authorizer learns new bindings from a watch, a moment after they are
/// made: until then the token is refused. Waits (bounded) until it is granted what it was given.
async fn wait_for_grants(kubeconfig: &Path, release_namespace: &str, watch: &Watch) -> Result<()> {
    let client = client_for(kubeconfig).await?;
    let watched = match watch {
        Watch::All => None,
        Watch::Namespace(ns) => Some(ns.as_str()),
    };
    let checks = [
        ("list", "pssessions.psremoting.dev", watched),
        ("create", "leases.coordination.k8s.io", Some(release_namespace)),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for (verb, resource, namespace) in checks {
        while !can_i(&client, verb, resource, namespace).await? {
            if std::time::Instant::now() > deadline {
                bail!(
                    "the chart's ServiceAccount was not granted {verb} {resource} in {namespace:?} within 30 s"
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

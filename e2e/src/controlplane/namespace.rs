//! Per-test namespaces on the shared control plane, and running kubectl in them.

use std::{
    collections::BTreeMap,
    hash::{BuildHasher, RandomState},
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::io::AsyncWriteExt;

/// Label on every namespace a test makes, so leftovers are easy to find and delete:
/// `kubectl delete ns -l e2e.psremoting.dev/test-namespace=true`.
pub const TEST_NAMESPACE_LABEL: &str = "e2e.psremoting.dev/test-namespace";
/// Label with the pid of the test process that made the namespace.
pub const TEST_PID_LABEL: &str = "e2e.psremoting.dev/test-pid";

/// A namespace of its own for one test. Deleted (best effort, without waiting) on drop.
pub struct TestNamespace {
    /// A client made in the calling test's runtime.
    pub client: kube::Client,
    pub name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// `prefix` + `-` + 6 random base-36 characters, cut to a valid DNS label (63 chars).
pub(crate) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded randomly per process; hashing a counter gives fresh values
    // without a dependency on a random number crate.
    let mut n = RandomState::new().hash_one((std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let mut suffix = String::with_capacity(6);
    for _ in 0..6 {
        suffix.push(char::from_digit((n % 36) as u32, 36).unwrap_or('x'));
        n /= 36;
    }
    let mut prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    prefix.truncate(63 - 1 - suffix.len());
    let prefix = prefix.trim_matches('-');
    if prefix.is_empty() {
        format!("t-{suffix}")
    } else {
        format!("{prefix}-{suffix}")
    }
}

impl TestNamespace {
    pub(crate) async fn create(
        client: kube::Client,
        prefix: &str,
        kubectl: PathBuf,
        kubeconfig: PathBuf,
    ) -> Result<Self> {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    (TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned()),
                    (TEST_PID_LABEL.to_owned(), std::process::id().to_string()),
                ])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating test namespace {name}"))?;
        tracing::debug!(namespace = %name, "created test namespace");
        Ok(Self {
            client,
            name,
            kubectl,
            kubeconfig,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// An `Api` for namespaced resources of this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// `kubectl --namespace <this> args...`.
    pub async fn kubectl(&self, args: &[&str]) -> Result<KubectlOutput> {
        run_kubectl(&self.kubectl, &self.kubeconfig, Some(&self.name), args, None).await
    }

    /// Like [`Self::kubectl`], with `stdin` fed to kubectl (e.g. `apply -f -`).
    pub async fn kubectl_with_stdin(&self, args: &[&str], stdin: &str) -> Result<KubectlOutput> {
        run_kubectl(
            &self.kubectl,
            &self.kubeconfig,
            Some(&self.name),
            args,
            Some(stdin),
        )
        .await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Not through `client`: drop runs as the test's runtime winds down, and a task spawned
        // there would be cancelled with it. A detached kubectl finishes on its own, and a
        // thread reaps it; nothing here blocks the runtime.
        if !self.kubeconfig.exists() {
            return; // the control plane is already gone
        }
        let spawned = std::process::Command::new(&self.kubectl)
            .env("KUBECONFIG", &self.kubeconfig)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
                "--request-timeout=10s",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(mut child) => {
                let _ = std::thread::Builder::new()
                    .name("ns-delete-reaper".into())
                    .spawn(move || child.wait());
            }
            Err(e) => {
                tracing::warn!(namespace = %self.name, error = %e, "cannot delete test namespace")
            }
        }
    }
}

/// What a kubectl run printed, as text.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    /// The arguments, for messages.
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout if kubectl succeeded; else an error quoting the command and its stderr.
    pub fn ok(&self) -> Result<&str> {
        if !self.success() {
            bail!(
                "kubectl {} failed ({}): {}",
                self.args.join(" "),
                self.status,
                self.stderr.trim()
            );
        }
        Ok(&self.stdout)
    }
}

/// kubectl's discovery cache, beside the kubeconfig: one per control plane. The default
/// (`~/.kube/cache`) is keyed by host and port, and a later control plane on a reused port would
/// read the API groups of an earlier one (say, one without the CRDs) for hours.
pub(crate) fn kubectl_cache_dir(kubeconfig: &std::path::Path) -> std::path::PathBuf {
    kubeconfig
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("kubectl-cache")
}

/// Runs kubectl without blocking the runtime (tokio's process support).
pub(crate) async fn run_kubectl(
    kubectl: &std::path::Path,
    kubeconfig: &std::path::Path,
    namespace: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<KubectlOutput> {
    let mut all: Vec<String> = Vec::with_capacity(args.len() + 2);
    all.push(format!("--cache-dir={}", kubectl_cache_dir(kubeconfig).display()));
    if let Some(ns) = namespace {
        all.push(format!("--namespace={ns}"));
    }
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let mut child = tokio::process::Command::new(kubectl)
        .env("KUBECONFIG", kubeconfig)
        .args(&all)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", kubectl.display()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .context("writing kubectl's stdin")?;
        // Dropping the pipe closes it: kubectl sees EOF.
    }
    let out = child
        .wait_with_output()
        .await
        .with_context(|| format!("waiting for kubectl {}", all.join(" ")))?;
    Ok(KubectlOutput {
        args: all,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_dns_labels() {
        let a = unique_name("My_Test");
        let b = unique_name("My_Test");
        assert_ne!(a, b);
        assert!(a.starts_with("my-test-"), "{a}");
        let long = unique_name(&"x".repeat(100));
        assert!(long.len() <= 63, "{long}");
        assert_eq!(unique_name("--").len(), "t-".len() + 6);
        for n in [&a, &long] {
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
            assert!(!n.starts_with('-') && !n.ends_with('-'));
        }
    }
}

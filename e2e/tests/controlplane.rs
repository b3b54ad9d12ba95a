//! The test control plane itself: it starts, serves the API, its controllers work, and it
//! leaves nothing behind. Every other e2e test builds on these properties.

use std::{
    collections::BTreeMap,
    future::Future,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use e2e::controlplane::{ControlPlane, Options, pid_alive, requested_kube_version};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};

/// Polls `check` every 200 ms until it returns true, failing after `timeout`.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config_map(name: &str, owner: Option<&ConfigMap>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            owner_references: owner.map(|o| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: o.name_any(),
                    uid: o.uid().unwrap_or_default(),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn starts_and_lists_namespaces() -> Result<()> {
    let cp = ControlPlane::shared();
    eprintln!(
        "control plane {} ready in {:.2?} (binaries located in {:.2?}) at {}",
        cp.kube_version(),
        cp.time_to_ready(),
        cp.binaries_time(),
        cp.server_url()
    );
    let namespaces = Api::<Namespace>::all(cp.client().await)
        .list(&ListParams::default())
        .await?;
    let names: Vec<String> = namespaces.iter().map(ResourceExt::name_any).collect();
    for want in ["default", "kube-system", "kube-public"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    Ok(())
}

#[tokio::test]
async fn deleted_namespace_is_finalized_by_the_namespace_controller() -> Result<()> {
    let ns = e2e::test_namespace("cp-ns-delete").await;
    // Content, so the namespace controller has something to delete before it finalizes.
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &config_map("content", None))
        .await?;
    let namespaces = Api::<Namespace>::all(ns.client.clone());
    namespaces.delete(&ns.name, &DeleteParams::default()).await?;
    let took = eventually(
        "namespace finalized and gone",
        Duration::from_secs(60),
        || async { Ok(namespaces.get_opt(&ns.name).await?.is_none()) },
    )
    .await?;
    eprintln!("namespace {} gone {took:.2?} after delete", ns.name);
    Ok(())
}

#[tokio::test]
async fn garbage_collector_deletes_dependents_of_a_deleted_owner() -> Result<()> {
    let ns = e2e::test_namespace("cp-gc").await;
    let cms = ns.api::<ConfigMap>();
    let owner = cms
        .create(&PostParams::default(), &config_map("owner", None))
        .await?;
    cms.create(&PostParams::default(), &config_map("dependent", Some(&owner)))
        .await?;
    cms.delete("owner", &DeleteParams::background()).await?;
    let took = eventually("dependent garbage collected", Duration::from_secs(60), || async {
        Ok(cms.get_opt("dependent").await?.is_none())
    })
    .await?;
    eprintln!("dependent collected {took:.2?} after its owner was deleted");
    Ok(())
}

#[tokio::test]
async fn kubectl_version_shows_the_expected_server_version() -> Result<()> {
    let cp = ControlPlane::shared();
    let mut cmd = cp.kubectl();
    cmd.args(["version", "--output=json"]);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let server = v["serverVersion"]["gitVersion"]
        .as_str()
        .context("serverVersion")?;
    assert_eq!(server, cp.kube_version());
    if std::env::var_os("PSSO_CONTROLPLANE_BIN").is_none() {
        // Built by the script: the version asked for is the version served.
        assert_eq!(server, format!("v{}", requested_kube_version()));
    }
    let client = v["clientVersion"]["gitVersion"]
        .as_str()
        .context("clientVersion")?;
    assert_eq!(client, server, "kubectl is built from the same release");
    Ok(())
}

#[tokio::test]
async fn kubectl_in_applies_and_reads_in_the_test_namespace() -> Result<()> {
    let ns = e2e::test_namespace("cp-kubectl").await;
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  greeting: hello\n";
    ns.kubectl_with_stdin(&["apply", "-f", "-"], manifest)
        .await?
        .ok()?;
    let out = e2e::kubectl_in(
        &ns.name,
        &["get", "configmap", "applied", "-o", "jsonpath={.data.greeting}"],
    )
    .await?;
    assert_eq!(out.ok()?, "hello");
    // Strict field validation, as users get it: an unknown field is an error.
    let bad = format!("{manifest}bogus: 1\n");
    let out = ns.kubectl_with_stdin(&["apply", "-f", "-"], &bad).await?;
    assert!(!out.success(), "unknown field accepted: {}", out.stdout);
    assert!(out.stderr.contains("bogus"), "{}", out.stderr);
    Ok(())
}

#[tokio::test]
async fn a_control_plane_of_its_own_stops_without_leftovers() -> Result<()> {
    let cp = ControlPlane::start(Options::from_env()).await?;
    eprintln!("second control plane ready in {:.2?}", cp.time_to_ready());
    let pids = cp.pids();
    assert_eq!(pids.len(), 3, "{pids:?}");
    let dir = cp.dir().to_owned();
    assert_ne!(dir, ControlPlane::shared().dir(), "not the shared one");
    Api::<Namespace>::all(cp.client().await).get("default").await?;
    let t = Instant::now();
    drop(cp);
    eprintln!("stopped in {:.2?}", t.elapsed());
    for (name, pid) in pids {
        assert!(!pid_alive(pid), "{name} ({pid}) still running");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    Ok(())
}

/// SIGKILL the `controlplane up` binary: no Rust code of it runs, yet its etcd, apiserver
/// and kcm must die (PDEATHSIG) and its dir must be cleaned by the next start.
#[tokio::test]
async fn a_killed_owner_leaves_no_processes_running() -> Result<()> {
    let bin = env!("CARGO_BIN_EXE_controlplane");
    let (pids, dir) = tokio::task::spawn_blocking(move || -> Result<(Vec<u32>, PathBuf)> {
        let mut child = Command::new(bin)
            .arg("up")
            .env("RUST_LOG", "warn,kube_client=off")
            .env_remove("PSSO_KEEP_CONTROLPLANE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting controlplane up")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (mut pids, mut dir) = (Vec::new(), None);
        // The binary prints `export KUBECONFIG=` last, once everything is ready; if it dies
        // first, stdout closes and the loop ends.
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Some(list) = line.strip_prefix("pids: ") {
                pids = list
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('=')?.1.parse().ok())
                    .collect();
            } else if let Some(d) = line.strip_prefix("logs: ") {
                dir = Some(PathBuf::from(d));
            } else if line.starts_with("export KUBECONFIG=") {
                break;
            }
        }
        child.kill().context("SIGKILL")?;
        child.wait()?;
        Ok((
            pids,
            dir.context("no `logs:` line: did `controlplane up` start?")?,
        ))
    })
    .await??;
    assert_eq!(pids.len(), 3, "{pids:?}");
    eventually(
        "children of a killed owner die",
        Duration::from_secs(10),
        || async { Ok(pids.iter().all(|&p| !pid_alive(p))) },
    )
    .await?;
    // Another test's control plane may already have cleaned it up at its start, in parallel.
    e2e::controlplane::clean_stale_dirs();
    assert!(!dir.exists(), "stale {} not cleaned", dir.display());
    Ok(())
}

//! Installs the operator's CRDs (the checked-in `crds/` manifests, as a user applies them).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::sync::OnceCell;

use crate::ControlPlane;

/// The CRDs the operator serves, by name.
pub const CRD_NAMES: [&str; 2] = ["pssessions.psremoting.dev", "psjobs.psremoting.dev"];

/// Applies `crds/` once per control plane and process, and waits until the API server serves them:
/// Established, and published in the OpenAPI document that `kubectl explain` reads.
pub async fn install_crds(control_plane: &ControlPlane) -> Result<()> {
    // One cell per control plane (by its URL): a test may start a control plane of its own
    // beside the shared one.
    static INSTALLED: Mutex<BTreeMap<String, Arc<OnceCell<()>>>> = Mutex::new(BTreeMap::new());
    let cell = INSTALLED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(control_plane.server_url().to_owned())
        .or_default()
        .clone();
    cell.get_or_try_init(|| apply_and_wait(control_plane))
        .await
        .map(|_| ())
}

async fn apply_and_wait(control_plane: &ControlPlane) -> Result<()> {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(pssession_operator::crds::CHECKED_IN_PATH);
    let manifest = manifest.to_string_lossy();
    control_plane
        .kubectl_in(
            "default",
            &["apply", "--server-side", "--field-manager=e2e", "-f", &manifest],
        )
        .await?
        .ok()
        .context("applying the CRDs")?;
    let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    let crds: Vec<String> = CRD_NAMES.iter().map(|name| format!("crd/{name}")).collect();
    wait.extend(crds.iter().map(String::as_str));
    control_plane
        .kubectl_in("default", &wait)
        .await?
        .ok()
        .context("waiting for the CRDs")?;

    // The OpenAPI document is rebuilt asynchronously after a CRD is established.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let explain = control_plane
            .kubectl_in("default", &["explain", "pssession.spec.computerName"])
            .await?;
        if explain.success() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the CRDs never appeared in OpenAPI: {}", explain.stderr.trim());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

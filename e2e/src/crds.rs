//! Installs the operator's CRDs (the checked-in `crds/` manifests, as a user applies them).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::OnceCell;

use crate::ControlPlane;

/// The CRDs the operator serves, by name.
pub const CRD_NAMES: [&str; 2] = ["pssessions.psremoting.dev", "psjobs.psremoting.dev"];

/// Applies `crds/` once per control plane and process, and waits until the API server serves them:
/// Established, and published in the OpenAPI document that `kubectl explain` reads.
pub async fn install_crds(control_plane: &ControlPlane) -> Result<()> {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_try_init(|| apply_and_wait(control_plane))
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

//! The container image's binary needs nothing from a base image: the statically linked build runs
//! in an empty root (chroot: only the binary and a kubeconfig), as the image's numeric non-root
//! user, and does its job against the real control plane (it writes a PSSession's status).
//!
//! Needs the static binary: `PSSO_STATIC_BIN`, as `./test`'s image phase builds it
//! (`cargo build --release --target x86_64-unknown-linux-musl -p pssession-operator`). Without it
//! the test fails and says so; it is `#[ignore]`d so a plain `cargo test` does not need musl.

use std::{
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use e2e::{ControlPlane, crds::install_crds, test_namespace};
use pssession_operator::api::PSSession;

/// The image's `USER`.
const IMAGE_USER: &str = "65532:65532";

fn static_binary() -> PathBuf {
    let path = std::env::var_os("PSSO_STATIC_BIN")
        .map(PathBuf::from)
        .expect("PSSO_STATIC_BIN: the statically linked operator binary (see the module doc)");
    assert!(path.exists(), "{} is missing", path.display());
    path
}

#[test]
#[ignore = "needs the static binary (PSSO_STATIC_BIN); ./test's image phase runs it"]
fn the_static_binary_is_self_contained() {
    let binary = static_binary();
    // No program interpreter and no shared libraries: nothing to find in an image.
    let readelf = std::process::Command::new("readelf")
        .args(["--program-headers", "--dynamic"])
        .arg(&binary)
        .output()
        .expect("readelf runs");
    let text = String::from_utf8_lossy(&readelf.stdout);
    assert!(
        !text.contains("INTERP"),
        "the binary asks for a dynamic loader:\n{text}"
    );
    assert!(
        !text.contains("(NEEDED)"),
        "the binary needs shared libraries:\n{text}"
    );
}

#[tokio::test]
#[ignore = "needs the static binary (PSSO_STATIC_BIN); ./test's image phase runs it"]
async fn the_static_binary_runs_in_an_empty_root_as_the_image_user() {
    let binary = static_binary();
    let control_plane = ControlPlane::shared();
    install_crds(control_plane).await.expect("CRDs");
    let ns = test_namespace("image").await;

    // The root: the binary and the kubeconfig (certificates embedded), nothing else.
    let root = tempdir();
    std::fs::copy(&binary, root.join("pssession-operator")).expect("copy the binary");
    std::fs::copy(control_plane.kubeconfig_path(), root.join("kubeconfig")).expect("copy kubeconfig");
    for (name, mode) in [("pssession-operator", 0o755), ("kubeconfig", 0o644)] {
        std::fs::set_permissions(root.join(name), std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod root");
    let entries: Vec<_> = std::fs::read_dir(&root)
        .expect("list")
        .filter_map(Result::ok)
        .collect();
    assert_eq!(
        entries.len(),
        2,
        "the root holds only the binary and the kubeconfig"
    );

    // Same output as the build of the workspace: the CRDs it serves.
    let crds = std::process::Command::new(chroot())
        .arg(format!("--userspec={IMAGE_USER}"))
        .arg(&root)
        .args(["/pssession-operator", "crds"])
        .env_clear()
        .output()
        .expect("chroot runs");
    assert!(crds.status.success(), "{}", String::from_utf8_lossy(&crds.stderr));
    assert_eq!(
        String::from_utf8_lossy(&crds.stdout),
        pssession_operator::crds::to_yaml().expect("CRDs render")
    );

    // And the real job: watch a namespace and report a session whose Secret is missing.
    let mut operator = tokio::process::Command::new(chroot())
        .arg(format!("--userspec={IMAGE_USER}"))
        .arg(&root)
        .args([
            "/pssession-operator",
            "run",
            "--namespace",
            &ns.name,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env_clear()
        .env("KUBECONFIG", "/kubeconfig")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the operator starts in the empty root");
    let yaml = "apiVersion: psremoting.dev/v1alpha1\nkind: PSSession\nmetadata:\n  name: probe\nspec:\n  \
                computerName: 10.0.0.1\n  transport: SSH\n  credentialsSecretRef:\n    name: absent\n  \
                skipHostKeyCheck: true\n";
    ns.kubectl_with_stdin(&["apply", "-f", "-"], yaml)
        .await
        .and_then(|o| o.ok().map(|_| ()))
        .expect("apply");
    let sessions = ns.api::<PSSession>();
    let started = Instant::now();
    loop {
        let reason = sessions
            .get("probe")
            .await
            .ok()
            .and_then(|s| s.status)
            .and_then(|st| st.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.reason);
        if reason.as_deref() == Some("SecretNotFound") {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = operator.start_kill();
            let output = operator.wait_with_output().await.expect("output");
            panic!(
                "no SecretNotFound from the chrooted operator (last: {reason:?}); its log:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = operator.start_kill();
    let _ = std::fs::remove_dir_all(&root);
}

/// chroot(8), found before the child's environment is cleared (which takes PATH with it).
fn chroot() -> PathBuf {
    ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("chroot(8) from coreutils")
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("psso-image-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp root");
    dir
}

//! Finding the pinned etcd, kube-apiserver, kube-controller-manager and kubectl binaries:
//! `$PSSO_CONTROLPLANE_BIN` if set, else `e2e/controlplane/build.sh` builds (once) and
//! caches them and prints their dir on its last stdout line.

use std::{
    fs::{self, File},
    os::unix::{fs::PermissionsExt, io::AsRawFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// The Kubernetes version the tests run against unless `$PSSO_KUBE_VERSION` says otherwise.
pub const DEFAULT_KUBE_VERSION: &str = "1.37.2";

/// `$PSSO_KUBE_VERSION` (a leading `v` is dropped) or [`DEFAULT_KUBE_VERSION`].
pub fn requested_kube_version() -> String {
    std::env::var("PSSO_KUBE_VERSION")
        .ok()
        .map(|v| v.trim().trim_start_matches('v').to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_KUBE_VERSION.to_owned())
}

/// Paths of the control plane's programs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kubectl: PathBuf,
}

impl Binaries {
    /// Checks that `dir` holds all four programs, executable.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let bin = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            let meta = fs::metadata(&path)
                .with_context(|| format!("control plane binary {} is missing", path.display()))?;
            if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                bail!("{} is not an executable file", path.display());
            }
            Ok(path)
        };
        Ok(Self {
            etcd: bin("etcd")?,
            kube_apiserver: bin("kube-apiserver")?,
            kube_controller_manager: bin("kube-controller-manager")?,
            kubectl: bin("kubectl")?,
            dir,
        })
    }

    /// `$PSSO_CONTROLPLANE_BIN`, else the build script's cache for `kube_version`
    /// (building it first when needed: the first run takes tens of minutes).
    pub fn locate(kube_version: &str) -> Result<Self> {
        if let Some(dir) = std::env::var_os("PSSO_CONTROLPLANE_BIN") {
            return Self::in_dir(PathBuf::from(dir)).context("from $PSSO_CONTROLPLANE_BIN");
        }
        let dir = build(kube_version)?;
        Self::in_dir(dir)
    }

    /// The apiserver's own version (`v1.37.2`), from `kube-apiserver --version`.
    pub fn kube_version(&self) -> Result<String> {
        let out = Command::new(&self.kube_apiserver)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} --version", self.kube_apiserver.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "{} --version failed ({}): {}",
                self.kube_apiserver.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse_version(&text)
            .with_context(|| format!("unexpected `kube-apiserver --version` output: {text:?}"))
    }
}

/// "Kubernetes v1.37.2\n" -> "v1.37.2".
fn parse_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_owned)
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/build.sh")
}

fn cache_root() -> PathBuf {
    std::env::var_os("PSSO_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pssession-operator")))
        .unwrap_or_else(|| std::env::temp_dir().join("pssession-operator-cache"))
        .join("controlplane")
}

/// Runs the build script under an exclusive lock, so test binaries run side by side (e.g.
/// by nextest) do not build the same version twice into the same dir.
fn build(kube_version: &str) -> Result<PathBuf> {
    let root = cache_root();
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let lock_path = root.join(".build.lock");
    let lock = File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    // SAFETY: flock on an fd we own; the lock goes when `lock` is dropped (fd closed).
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("locking {}", lock_path.display()));
    }
    let script = script();
    tracing::info!(script = %script.display(), kube_version, "locating control plane binaries (a cold build takes tens of minutes)");
    // stderr is inherited: the script's progress lines show up while a long build runs.
    let out = Command::new("bash")
        .arg(&script)
        .arg(kube_version)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    drop(lock);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} {kube_version} failed ({}); its stdout:\n{stdout}",
            script.display(),
            out.status
        );
    }
    let last = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .with_context(|| format!("{} printed no bin dir", script.display()))?;
    Ok(PathBuf::from(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apiserver_version() {
        assert_eq!(parse_version("Kubernetes v1.37.2\n").as_deref(), Some("v1.37.2"));
        assert_eq!(parse_version("nothing here"), None);
    }

    #[test]
    fn in_dir_names_the_missing_binary() {
        let dir = std::env::temp_dir().join(format!("psso-bin-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let err = Binaries::in_dir(&dir).expect_err("empty dir");
        assert!(format!("{err:#}").contains("etcd"), "{err:#}");
        fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn build_script_is_where_we_look() {
        assert!(script().is_file(), "{}", script().display());
    }
}

//! A real Kubernetes control plane for tests, started the way controller-runtime's envtest
//! starts one: etcd, kube-apiserver and kube-controller-manager as local processes on
//! loopback ports, a throwaway PKI, an admin kubeconfig; no nodes, no kubelet.
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! let cp = e2e::ControlPlane::shared(); // one per test binary, started on first use
//! let ns = e2e::test_namespace("my-test").await; // a namespace of this test's own
//! let out = e2e::kubectl_in(&ns.name, &["get", "configmaps"]).await?;
//! # let _ = (cp, out); Ok(()) }
//! ```

mod binaries;
mod certs;
mod flags;
mod kubeconfig;
mod namespace;
mod process;
mod workdir;

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};

pub use binaries::{Binaries, DEFAULT_KUBE_VERSION, requested_kube_version};
pub(crate) use namespace::unique_name;
pub use namespace::{KubectlOutput, TEST_NAMESPACE_LABEL, TEST_PID_LABEL, TestNamespace};
pub use process::pid_alive;

use process::{ManagedProcess, log_tail};

/// How a control plane is started; [`Options::from_env`] reads the knobs tests use.
#[derive(Debug, Clone)]
pub struct Options {
    /// Dir with the four binaries; `None` builds or reuses the cached build of
    /// `kube_version` (`$PSSO_CONTROLPLANE_BIN`).
    pub bin_dir: Option<PathBuf>,
    /// Version the build script builds (`$PSSO_KUBE_VERSION`, default 1.37.2).
    pub kube_version: String,
    /// Keep the temp dir (logs, etcd data) after stopping (`$PSSO_KEEP_CONTROLPLANE=1`).
    pub keep_dir: bool,
    /// Bound on waiting for the apiserver's /readyz and then for kcm's /healthz.
    pub ready_timeout: Duration,
    /// Grace between SIGTERM and SIGKILL for each component on stop.
    pub stop_grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bin_dir: None,
            kube_version: DEFAULT_KUBE_VERSION.to_owned(),
            keep_dir: false,
            // Generous: a cold apiserver on 2 busy cores (a parallel cargo build) is slow.
            ready_timeout: Duration::from_secs(120),
            stop_grace: Duration::from_secs(10),
        }
    }
}

impl Options {
    pub fn from_env() -> Self {
        let flag = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
        Self {
            bin_dir: std::env::var_os("PSSO_CONTROLPLANE_BIN").map(PathBuf::from),
            kube_version: requested_kube_version(),
            keep_dir: flag("PSSO_KEEP_CONTROLPLANE"),
            ..Self::default()
        }
    }
}

/// A running etcd + kube-apiserver + kube-controller-manager. Stopped (and its temp dir
/// removed) by [`ControlPlane::stop`] or on drop; its processes also die with the test
/// process if that is killed.
pub struct ControlPlane {
    dir: PathBuf,
    keep_dir: bool,
    stop_grace: Duration,
    binaries: Binaries,
    kubeconfig: PathBuf,
    server: String,
    kube_version: String,
    binaries_time: Duration,
    time_to_ready: Duration,
    /// In start order; stopped in reverse. Emptied by `stop`.
    processes: Mutex<Vec<ManagedProcess>>,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server", &self.server)
            .field("kube_version", &self.kube_version)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The shared control plane, or why it could not start (kept, so every test of the binary
/// fails fast with the same message instead of each retrying a slow start).
static SHARED: OnceLock<std::result::Result<ControlPlane, String>> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    // Statics are never dropped; this runs when libtest's main returns or calls exit().
    // A panic must not unwind into libc.
    let _ = std::panic::catch_unwind(|| {
        if let Some(Ok(cp)) = SHARED.get() {
            cp.stop();
        }
    });
}

impl ControlPlane {
    /// The control plane of this test process, started on first use (blocking the calling
    /// thread; fine from a `#[tokio::test]`). Tests in one binary share it and each makes
    /// its own namespace ([`test_namespace`]). Panics if it cannot start: every test needs it.
    pub fn shared() -> &'static ControlPlane {
        let started = SHARED.get_or_init(|| {
            let started = Self::start_blocking(Options::from_env()).map_err(|e| format!("{e:#}"));
            if started.is_ok() {
                // SAFETY: registers a plain extern "C" fn with no preconditions.
                if unsafe { libc::atexit(stop_shared_at_exit) } != 0 {
                    tracing::warn!("atexit failed; the shared control plane's dir stays behind");
                }
            }
            started
        });
        match started {
            Ok(cp) => cp,
            Err(e) => panic!("the shared test control plane did not start: {e}"),
        }
    }

    /// Starts a control plane from any thread, inside a tokio runtime or not: the start runs
    /// on a helper thread with a runtime of its own (its probing client stays there).
    pub fn start_blocking(options: Options) -> Result<Self> {
        std::thread::Builder::new()
            .name("controlplane-start".into())
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("building a runtime for the control plane start")?
                    .block_on(Self::start(options))
            })
            .context("spawning the control plane start thread")?
            .join()
            .map_err(|_| anyhow!("the control plane start thread panicked"))?
    }

    /// Starts a control plane (binaries first: maybe a long build), waiting until the
    /// apiserver is ready and the controller manager healthy.
    pub async fn start(options: Options) -> Result<Self> {
        let root = workdir::root();
        let removed = workdir::clean_stale_dirs(&root);
        if !removed.is_empty() {
            tracing::info!(count = removed.len(), "cleaned stale control plane dirs");
        }

        let t0 = Instant::now();
        let (bin_dir, version) = (options.bin_dir.clone(), options.kube_version.clone());
        let binaries = tokio::task::spawn_blocking(move || match bin_dir {
            Some(dir) => Binaries::in_dir(dir),
            None => Binaries::locate(&version),
        })
        .await
        .context("locating binaries")??;
        let kube_version = {
            let b = binaries.clone();
            tokio::task::spawn_blocking(move || b.kube_version())
                .await
                .context("asking kube-apiserver its version")??
        };
        let binaries_time = t0.elapsed();

        // A port picked as free can be taken before a component binds it; try again then.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(&root, &options, binaries.clone(), &kube_version, binaries_time).await {
                Ok(cp) => return Ok(cp),
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    tracing::warn!(attempt, error = %e, "port taken during start-up; retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_once(
        root: &Path,
        options: &Options,
        binaries: Binaries,
        kube_version: &str,
        binaries_time: Duration,
    ) -> Result<Self> {
        let t0 = Instant::now();
        let dir = workdir::create(root)?;
        // From here on `cp` owns the dir and processes: an early return drops it, which stops
        // whatever started and removes the dir (unless keep_dir).
        let [etcd_client, etcd_peer, apiserver, kcm] = workdir::free_ports(4)?[..] else {
            bail!("free_ports returned the wrong count");
        };
        let ports = flags::Ports {
            etcd_client,
            etcd_peer,
            apiserver,
            kcm,
        };
        let server = format!("https://127.0.0.1:{apiserver}");
        let mut cp = Self {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            keep_dir: options.keep_dir,
            stop_grace: options.stop_grace,
            binaries,
            server,
            kube_version: kube_version.to_owned(),
            binaries_time,
            time_to_ready: Duration::ZERO,
            processes: Mutex::new(Vec::new()),
        };

        let pki = certs::Pki::generate()?;
        let pki_files = pki.write(&cp.dir.join("pki"))?;
        kubeconfig::write(
            &cp.kubeconfig,
            &cp.server,
            &pki.ca_cert,
            &pki.admin_cert,
            &pki.admin_key,
        )?;

        // etcd and the apiserver start together: the apiserver retries etcd until it is up,
        // and /readyz covers both.
        cp.spawn(
            "etcd",
            &cp.binaries.etcd.clone(),
            &flags::etcd(&cp.dir.join("etcd"), ports),
        )?;
        cp.spawn(
            "kube-apiserver",
            &cp.binaries.kube_apiserver.clone(),
            &flags::apiserver(&cp.subdir("apiserver")?, &pki_files, ports),
        )?;
        let client = cp.try_client().await?;
        cp.wait_for("kube-apiserver", "/readyz", options.ready_timeout, &client)
            .await?;
        tracing::info!(elapsed = ?t0.elapsed(), "kube-apiserver ready");

        // kcm only after /readyz: it gives up if the apiserver is not healthy within ~10s.
        cp.spawn(
            "kube-controller-manager",
            &cp.binaries.kube_controller_manager.clone(),
            &flags::controller_manager(&cp.subdir("kcm")?, &cp.kubeconfig, &pki_files, ports),
        )?;
        let kcm_client = {
            let url: http::Uri = format!("https://127.0.0.1:{kcm}").parse().context("kcm URL")?;
            let mut config = kube::Config::new(url);
            // kcm serves /healthz with a certificate it made itself; nothing to verify it by.
            config.accept_invalid_certs = true;
            kube::Client::try_from(config).context("client for kcm's /healthz")?
        };
        cp.wait_for(
            "kube-controller-manager",
            "/healthz",
            options.ready_timeout,
            &kcm_client,
        )
        .await?;

        cp.time_to_ready = t0.elapsed();
        tracing::info!(
            server = %cp.server,
            kubeconfig = %cp.kubeconfig.display(),
            version = %cp.kube_version,
            time_to_ready = ?cp.time_to_ready,
            "control plane ready"
        );
        Ok(cp)
    }

    fn subdir(&self, name: &str) -> Result<PathBuf> {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }

    fn spawn(&mut self, name: &'static str, program: &Path, args: &[String]) -> Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        let p = ManagedProcess::spawn(name, program, args, log, &self.dir)?;
        if let Some(pid) = p.pid() {
            workdir::record_pid(&self.dir, name, pid)?;
        }
        self.procs().push(p);
        Ok(())
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, Vec<ManagedProcess>> {
        // A panic while holding the lock leaves the Vec intact: keep going.
        self.processes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Polls `path` on `client` until it answers 200, failing early when any component
    /// exits, and with the waited-for component's log tail on timeout.
    async fn wait_for(
        &self,
        component: &'static str,
        path: &str,
        timeout: Duration,
        client: &kube::Client,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for p in self.procs().iter_mut() {
                p.ensure_running()
                    .with_context(|| format!("while waiting for {component} {path}"))?;
            }
            let request = http::Request::get(path)
                .body(Vec::new())
                .context("building a health request")?;
            let last_error =
                match tokio::time::timeout(Duration::from_secs(5), client.request_text(request)).await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "request timed out after 5s".to_owned(),
                };
            if Instant::now() >= deadline {
                let log = self.dir.join(format!("{component}.log"));
                bail!(
                    "{component} not healthy on {path} after {timeout:?}: {last_error}; last lines of {}:\n{}",
                    log.display(),
                    log_tail(&log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new client with the admin identity, bound to the calling tokio runtime (make one
    /// per test: a client outlives its runtime badly). Panics if the kubeconfig this control
    /// plane wrote cannot be loaded; see [`Self::try_client`].
    pub async fn client(&self) -> kube::Client {
        match self.try_client().await {
            Ok(c) => c,
            Err(e) => panic!("client for the test control plane: {e:#}"),
        }
    }

    /// A new admin client from the kubeconfig file, as a user's tools would build it.
    pub async fn try_client(&self) -> Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading {}", self.kubeconfig.display()))?;
        kube::Client::try_from(config).context("building a kube client")
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// The apiserver's version as it reports it, e.g. `v1.37.2`.
    pub fn kube_version(&self) -> &str {
        &self.kube_version
    }

    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// The temp dir with pki/, kubeconfig, etcd/ and one `<component>.log` per process.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// From launching etcd to kcm answering /healthz.
    pub fn time_to_ready(&self) -> Duration {
        self.time_to_ready
    }

    /// Finding (or building) the binaries and asking the apiserver its version.
    pub fn binaries_time(&self) -> Duration {
        self.binaries_time
    }

    /// `(component, pid)` of the running processes, for tests that check clean-up.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.procs()
            .iter()
            .filter_map(|p| Some((p.name(), p.pid()?)))
            .collect()
    }

    /// The log file of `component` (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }

    /// `kubectl` with `KUBECONFIG` set to this control plane's admin kubeconfig.
    pub fn kubectl(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.binaries.kubectl);
        c.env("KUBECONFIG", &self.kubeconfig).arg(format!(
            "--cache-dir={}",
            namespace::kubectl_cache_dir(&self.kubeconfig).display()
        ));
        c
    }

    /// Runs `kubectl --namespace ns args...` without blocking the runtime.
    pub async fn kubectl_in(&self, ns: &str, args: &[&str]) -> Result<KubectlOutput> {
        namespace::run_kubectl(&self.binaries.kubectl, &self.kubeconfig, Some(ns), args, None).await
    }

    /// Like [`Self::kubectl_in`] with `stdin` fed to kubectl (`apply -f -`).
    pub async fn kubectl_in_with_stdin(&self, ns: &str, args: &[&str], stdin: &str) -> Result<KubectlOutput> {
        namespace::run_kubectl(
            &self.binaries.kubectl,
            &self.kubeconfig,
            Some(ns),
            args,
            Some(stdin),
        )
        .await
    }

    /// A fresh namespace for one test; see [`TestNamespace`]. Panics on failure.
    pub async fn test_namespace(&self, prefix: &str) -> TestNamespace {
        match self.try_test_namespace(prefix).await {
            Ok(ns) => ns,
            Err(e) => panic!("test namespace {prefix}: {e:#}"),
        }
    }

    pub async fn try_test_namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let client = self.try_client().await?;
        TestNamespace::create(
            client,
            prefix,
            self.binaries.kubectl.clone(),
            self.kubeconfig.clone(),
        )
        .await
    }

    /// Stops kcm, the apiserver and etcd (in that order, each SIGTERM then SIGKILL after the
    /// grace period) and removes the temp dir unless kept. Idempotent; never panics.
    pub fn stop(&self) {
        let procs: Vec<ManagedProcess> = std::mem::take(&mut *self.procs());
        for mut p in procs.into_iter().rev() {
            let name = p.name();
            let log = p.log_path().to_path_buf();
            match p.stop(self.stop_grace) {
                Ok(status) => tracing::debug!(component = name, ?status, "stopped"),
                Err(e) => {
                    tracing::warn!(component = name, error = %format!("{e:#}"), log = %log.display(), "stop failed")
                }
            }
        }
        if self.keep_dir {
            tracing::info!(dir = %self.dir.display(), "keeping the control plane dir");
        } else if self.dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.dir)
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the control plane dir");
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh namespace on the [shared](ControlPlane::shared) control plane.
pub async fn test_namespace(prefix: &str) -> TestNamespace {
    ControlPlane::shared().test_namespace(prefix).await
}

/// `kubectl --namespace ns args...` against the [shared](ControlPlane::shared) control plane.
pub async fn kubectl_in(ns: &str, args: &[&str]) -> Result<KubectlOutput> {
    ControlPlane::shared().kubectl_in(ns, args).await
}

/// Removes control plane dirs left by killed processes (done at every start too).
pub fn clean_stale_dirs() -> Vec<PathBuf> {
    workdir::clean_stale_dirs(&workdir::root())
}

/// Where control plane dirs are made (`$PSSO_CONTROLPLANE_TMPDIR` or the temp dir).
pub fn workdir_root() -> PathBuf {
    workdir::root()
}

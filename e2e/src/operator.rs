//! The operator as a user runs it: its own binary, as a separate process, against the test control
//! plane; plus what tests need around it (Secrets for the namespace hosts, bounded waits).

use std::{
    collections::BTreeMap,
    future::Future,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::process::{Child, Command};

use crate::{
    ControlPlane,
    chart::{self, Watch},
    hosts::{Host, TargetHosts},
};

/// The operator binary: `PSSO_OPERATOR_BIN`, or the workspace's debug build.
pub fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PSSO_OPERATOR_BIN") {
        return Ok(PathBuf::from(path));
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pssession-operator");
    if !path.exists() {
        bail!(
            "{} is missing: build it first (cargo build -p pssession-operator)",
            path.display()
        );
    }
    Ok(path)
}

/// One operator process, watching one namespace. Killed on drop.
pub struct OperatorProcess {
    child: Option<Child>,
    /// `--instance`: the name in events and the Lease's holder identity.
    pub instance: String,
    pub log: PathBuf,
    args: Vec<String>,
    kubeconfig: PathBuf,
    starts: u32,
}

impl OperatorProcess {
    /// Starts the operator for `namespace` with `extra` flags, as the Helm chart runs it: with a
    /// token of the chart's ServiceAccount and only the chart's RBAC for that namespace (installed
    /// there first; see [`crate::chart`]). Its log goes to a file in the control plane's dir.
    pub async fn start(control_plane: &ControlPlane, namespace: &str, extra: &[&str]) -> Result<Self> {
        let kubeconfig =
            chart::install_identity(control_plane, namespace, &Watch::Namespace(namespace.to_owned()))
                .await?;
        Self::start_as(control_plane, &kubeconfig, namespace, extra).await
    }

    /// Like [`Self::start`], with the identity of another kubeconfig.
    pub async fn start_as(
        control_plane: &ControlPlane,
        kubeconfig: &Path,
        namespace: &str,
        extra: &[&str],
    ) -> Result<Self> {
        Self::launch(control_plane, kubeconfig, Some(namespace), extra)
    }

    /// The operator watching every namespace (no `--namespace`), with `kubeconfig`'s identity.
    pub async fn start_cluster_wide(
        control_plane: &ControlPlane,
        kubeconfig: &Path,
        extra: &[&str],
    ) -> Result<Self> {
        Self::launch(control_plane, kubeconfig, None, extra)
    }

    fn launch(
        control_plane: &ControlPlane,
        kubeconfig: &Path,
        namespace: Option<&str>,
        extra: &[&str],
    ) -> Result<Self> {
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let instance = format!("operator-{}-{n}", namespace.unwrap_or("all"));
        let mut args = vec!["run".to_owned(), "--instance".into(), instance.clone()];
        if let Some(namespace) = namespace {
            args.extend(["--namespace".into(), namespace.into()]);
        }
        if !extra.contains(&"--metrics-addr") {
            // Tests run side by side: each operator on its own ephemeral port.
            args.extend(["--metrics-addr".into(), "127.0.0.1:0".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = control_plane.dir().join(format!("{instance}.log"));
        let mut process = OperatorProcess {
            child: None,
            instance,
            log,
            args,
            kubeconfig: kubeconfig.to_owned(),
            starts: 0,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(binary()?)
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,pssession_operator=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting the operator")?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// SIGKILL: a crash, with no chance to close anything.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then waits up to `within` for a graceful exit.
    pub async fn terminate(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("the operator is not running");
        };
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                let _ = child.kill().await;
                bail!("the operator did not stop within {within:?} of SIGTERM")
            }
        }
    }

    /// Starts the same operator again (after [`Self::kill`] or [`Self::terminate`]).
    pub fn restart(&mut self) -> Result<()> {
        self.spawn()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn secret(name: &str, type_: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

/// Creates Secrets for the namespace hosts: `key` (ssh-auth), `password` (basic-auth) and
/// `known-hosts`, named with `prefix`.
pub async fn create_host_secrets(api: &Api<Secret>, hosts: &TargetHosts, prefix: &str) -> Result<()> {
    let users = &hosts.state.users;
    let key = std::fs::read_to_string(&users.key.private_key).context("reading the key user's key")?;
    let known_hosts = std::fs::read_to_string(&hosts.state.known_hosts).context("reading known_hosts")?;
    let secrets = [
        secret(
            &format!("{prefix}-key"),
            "kubernetes.io/ssh-auth",
            &[("username", &users.key.name), ("ssh-privatekey", &key)],
        ),
        secret(
            &format!("{prefix}-password"),
            "kubernetes.io/basic-auth",
            &[
                ("username", &users.password.name),
                ("password", &users.password.password),
            ],
        ),
        secret(
            &format!("{prefix}-known-hosts"),
            "Opaque",
            &[("known_hosts", &known_hosts)],
        ),
    ];
    for s in &secrets {
        api.create(&PostParams::default(), s)
            .await
            .context("creating a Secret")?;
    }
    Ok(())
}

/// A PSSession manifest for `host` over SSH.
/// A WSMan PSSession to a namespace host's WS-Management listener, as the password user of the
/// `{secret_prefix}-password` Secret ([`create_host_secrets`]), with `auth` (`NTLM`, `Basic`,
/// ...) and `extra_spec` lines.
pub fn wsman_session_yaml(
    name: &str,
    host: &Host,
    secret_prefix: &str,
    auth: &str,
    extra_spec: &str,
) -> String {
    let port = host.wsman_port.unwrap_or(5985);
    let mut yaml = format!(
        "apiVersion: psremoting.dev/v1alpha1\nkind: PSSession\nmetadata:\n  name: {name}\nspec:\n  \
         computerName: {address}\n  port: {port}\n  transport: WSMan\n  authentication: {auth}\n  \
         credentialsSecretRef:\n    name: {secret_prefix}-password\n",
        address = host.address,
    );
    for line in extra_spec.lines().filter(|l| !l.trim().is_empty()) {
        yaml.push_str("  ");
        yaml.push_str(line.trim_start());
        yaml.push('\n');
    }
    yaml
}

pub fn ssh_session_yaml(
    name: &str,
    host: &Host,
    secret_prefix: &str,
    auth: &str,
    extra_spec: &str,
) -> String {
    let credentials = if auth == "Password" {
        format!("{secret_prefix}-password")
    } else {
        format!("{secret_prefix}-key")
    };
    let mut yaml = format!(
        "apiVersion: psremoting.dev/v1alpha1\nkind: PSSession\nmetadata:\n  name: {name}\nspec:\n  \
         computerName: {address}\n  port: {port}\n  transport: SSH\n  authentication: {auth}\n  \
         credentialsSecretRef:\n    name: {credentials}\n  knownHostsSecretRef:\n    name: {secret_prefix}-known-hosts\n",
        address = host.address,
        port = host.port,
    );
    for line in extra_spec.lines().filter(|l| !l.trim().is_empty()) {
        yaml.push_str("  ");
        yaml.push_str(line.trim_start());
        yaml.push('\n');
    }
    yaml
}

/// A PSJob manifest; `script` is indented into a literal block.
pub fn job_yaml(name: &str, session: &str, script: &str, extra_spec: &str) -> String {
    let mut yaml = format!(
        "apiVersion: psremoting.dev/v1alpha1\nkind: PSJob\nmetadata:\n  name: {name}\nspec:\n  sessionRef:\n    \
         name: {session}\n  script: |\n"
    );
    for line in script.lines() {
        yaml.push_str("    ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    for line in extra_spec.lines().filter(|l| !l.trim().is_empty()) {
        yaml.push_str("  ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

/// Polls `check` every 200 ms until it gives `Some`, or fails after `within` with the last `why`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "not yet".to_owned(),
            Err(error) => format!("{error:#}"),
        };
        if started.elapsed() > within {
            bail!("{what}: not within {within:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! Real target hosts for Rust tests: a thin wrapper over `e2e/hosts/hostctl.py`, which makes network
//! namespaces with sshd and the PSRP peer (see `e2e/hosts/README.md`). Everything a test needs comes
//! from the harness's `hosts.json`; the fault switches are its subcommands.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, Result, bail};
use psrp::transport::ssh::{HostKeyPolicy, SshAuth, SshConfig, SshKey};
use serde::Deserialize;

/// What `hostctl.py up` made (its `hosts.json`, the parts tests use).
#[derive(Debug, Clone, Deserialize)]
pub struct HostsState {
    pub run_id: String,
    pub state_dir: PathBuf,
    /// `known_hosts` lines for every host.
    pub known_hosts: PathBuf,
    pub users: Users,
    pub hosts: Vec<Host>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Users {
    pub password: PasswordUser,
    pub key: KeyUser,
    pub passphrase_key: KeyUser,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PasswordUser {
    pub name: String,
    pub password: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KeyUser {
    pub name: String,
    pub private_key: PathBuf,
    pub public_key: String,
    #[serde(default)]
    pub passphrase: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Host {
    /// `h0`, `h1`, ...: what the fault switches take.
    pub name: String,
    pub netns: String,
    pub address: String,
    pub port: u16,
    pub known_hosts: PathBuf,
    pub host_keys: Vec<String>,
    pub peer_socket: PathBuf,
    /// The peer's WS-Management listener on the host's address (`None` for a host without a peer).
    /// Its users are `HostsState::users.password` (Basic, or NTLM with message encryption).
    #[serde(default)]
    pub wsman_port: Option<u16>,
    #[serde(default)]
    pub relay: Option<Relay>,
    /// A delaying relay in front of the WS-Management listener (`relay_start_wsman`).
    #[serde(default)]
    pub wsman_relay: Option<WsmanRelay>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Relay {
    pub address: String,
    pub port: u16,
    pub delay_ms: u64,
    pub known_hosts: PathBuf,
}

/// A delaying TCP relay on loopback in front of a host's WS-Management listener.
#[derive(Debug, Clone, Deserialize)]
pub struct WsmanRelay {
    pub address: String,
    pub port: u16,
    pub delay_ms: u64,
}

impl WsmanRelay {
    /// `http://127.0.0.1:PORT/wsman` through the relay.
    pub fn wsman_url(&self) -> String {
        format!("http://{}:{}/wsman", self.address, self.port)
    }
}

impl Host {
    /// The host's sshd.
    pub fn ssh_addr(&self) -> Result<SocketAddr> {
        format!("{}:{}", self.address, self.port)
            .parse()
            .with_context(|| format!("host {} has no socket address", self.name))
    }

    /// The host's WS-Management listener (the PSRP peer, plain HTTP).
    pub fn wsman_addr(&self) -> Result<SocketAddr> {
        let port = self
            .wsman_port
            .with_context(|| format!("host {} runs no WS-Management listener", self.name))?;
        format!("{}:{}", self.address, port)
            .parse()
            .with_context(|| format!("host {} has no socket address", self.name))
    }

    /// `http://address:5985/wsman`, the URL a WinRM client posts to.
    pub fn wsman_url(&self) -> Result<String> {
        Ok(format!("http://{}/wsman", self.wsman_addr()?))
    }
}

/// A set of target hosts, torn down on drop (and by the harness's supervisor if this process dies).
#[derive(Debug)]
pub struct TargetHosts {
    pub state: HostsState,
    python: PathBuf,
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// The project's Python venv (`e2e/python-env.sh`), or `PSSO_VENV` when the test command made it.
fn venv_python() -> Result<PathBuf> {
    if let Some(venv) = std::env::var_os("PSSO_VENV") {
        return Ok(PathBuf::from(venv).join("bin/python"));
    }
    let out = std::process::Command::new(repo_path("e2e/python-env.sh"))
        .stderr(Stdio::inherit())
        .output()
        .context("running e2e/python-env.sh")?;
    if !out.status.success() {
        bail!("e2e/python-env.sh failed ({})", out.status);
    }
    let venv = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(PathBuf::from(venv).join("bin/python"))
}

impl TargetHosts {
    /// Makes `count` hosts, each with sshd and the PSRP peer.
    pub async fn up(count: usize) -> Result<Self> {
        Self::up_with_peer_args(count, &[]).await
    }

    /// Like `up`, with extra `--wsman-*` options for every host's peer, each as one
    /// `--option=value` (e.g. `--wsman-auto-disconnect=5`, `--wsman-buffer-bytes=65536`): shorter
    /// timers and smaller buffers for tests of vanished clients. See e2e/peer/README.md.
    pub async fn up_with_peer_args(count: usize, peer_args: &[&str]) -> Result<Self> {
        let python = venv_python()?;
        // hostctl needs a world-traversable path (sshd and the shim read it as the test users).
        let state_dir = std::env::temp_dir().join(crate::controlplane::unique_name("psso-hosts"));
        let count = count.to_string();
        let owner = std::process::id().to_string();
        let state_dir_arg = state_dir.to_string_lossy().into_owned();
        let mut args = vec![
            "up".to_owned(),
            "--count".to_owned(),
            count,
            "--state-dir".to_owned(),
            state_dir_arg,
            "--owner-pid".to_owned(),
            owner,
        ];
        args.extend(peer_args.iter().map(|arg| format!("--peer-arg={arg}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stdout = run_hostctl(&python, &args).await?;
        let state: HostsState = serde_json::from_str(&stdout).context("parsing hostctl's hosts.json")?;
        Ok(Self { state, python })
    }

    pub fn host(&self, index: usize) -> &Host {
        &self.state.hosts[index]
    }

    async fn fault(&self, command: &str, host: &str, extra: &[&str]) -> Result<()> {
        let dir = self.state.state_dir.to_string_lossy();
        let mut args = vec![command, "--state-dir", &dir, host];
        args.extend_from_slice(extra);
        run_hostctl(&self.python, &args).await.map(|_| ())
    }

    pub async fn sshd_stop(&self, host: &str) -> Result<()> {
        self.fault("sshd-stop", host, &[]).await
    }
    pub async fn sshd_start(&self, host: &str) -> Result<()> {
        self.fault("sshd-start", host, &[]).await
    }
    pub async fn sshd_restart(&self, host: &str) -> Result<()> {
        self.fault("sshd-restart", host, &[]).await
    }
    pub async fn link_down(&self, host: &str) -> Result<()> {
        self.fault("link-down", host, &[]).await
    }
    pub async fn link_up(&self, host: &str) -> Result<()> {
        self.fault("link-up", host, &[]).await
    }
    pub async fn blackhole(&self, host: &str) -> Result<()> {
        self.fault("blackhole", host, &[]).await
    }
    pub async fn unblackhole(&self, host: &str) -> Result<()> {
        self.fault("unblackhole", host, &[]).await
    }
    pub async fn peer_restart(&self, host: &str) -> Result<()> {
        self.fault("peer-restart", host, &[]).await
    }

    /// Starts a delaying TCP relay on loopback in front of `host`'s sshd; returns its entry.
    pub async fn relay_start(&mut self, host: &str, delay_ms: u64) -> Result<Relay> {
        let dir = self.state.state_dir.to_string_lossy().into_owned();
        let delay = delay_ms.to_string();
        let stdout = run_hostctl(
            &self.python,
            &["relay-start", "--state-dir", &dir, host, "--delay-ms", &delay],
        )
        .await?;
        let updated: Host = serde_json::from_str(&stdout).context("parsing hostctl's host entry")?;
        let relay = updated.relay.clone().context("relay-start reported no relay")?;
        if let Some(entry) = self.state.hosts.iter_mut().find(|h| h.name == host) {
            *entry = updated;
        }
        Ok(relay)
    }

    pub async fn relay_stop(&self, host: &str) -> Result<()> {
        self.fault("relay-stop", host, &[]).await
    }

    /// Starts a delaying TCP relay on loopback in front of `host`'s WS-Management listener.
    pub async fn relay_start_wsman(&mut self, host: &str, delay_ms: u64) -> Result<WsmanRelay> {
        let dir = self.state.state_dir.to_string_lossy().into_owned();
        let delay = delay_ms.to_string();
        let stdout = run_hostctl(
            &self.python,
            &[
                "relay-start",
                "--state-dir",
                &dir,
                host,
                "--delay-ms",
                &delay,
                "--service",
                "wsman",
            ],
        )
        .await?;
        let updated: Host = serde_json::from_str(&stdout).context("parsing hostctl's host entry")?;
        let relay = updated
            .wsman_relay
            .clone()
            .context("relay-start reported no WSMan relay")?;
        if let Some(entry) = self.state.hosts.iter_mut().find(|h| h.name == host) {
            *entry = updated;
        }
        Ok(relay)
    }

    pub async fn wsman_relay_stop(&self, host: &str) -> Result<()> {
        self.fault("wsman-relay-stop", host, &[]).await
    }
}

impl Drop for TargetHosts {
    fn drop(&mut self) {
        // Blocking on purpose: the namespaces and users must be gone before the next test makes its
        // own, and a drop cannot await.
        let result = std::process::Command::new(&self.python)
            .arg(repo_path("e2e/hosts/hostctl.py"))
            .args(["down", "--state-dir"])
            .arg(&self.state.state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match result {
            // The state dir (keys, configs, logs) is only useful while the hosts exist.
            Ok(out) if out.status.success() => {
                if let Err(error) = std::fs::remove_dir_all(&self.state.state_dir) {
                    tracing::warn!(run = %self.state.run_id, %error, "cannot remove the hosts' state dir");
                }
            }
            Ok(out) => tracing::warn!(
                run = %self.state.run_id,
                error = %String::from_utf8_lossy(&out.stderr).trim(),
                "hostctl down failed"
            ),
            Err(error) => tracing::warn!(run = %self.state.run_id, %error, "cannot run hostctl down"),
        }
    }
}

async fn run_hostctl(python: &Path, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(python)
        .arg(repo_path("e2e/hosts/hostctl.py"))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running hostctl {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "hostctl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("hostctl printed non-UTF-8")
}

/// Logging in to the hosts with the project's own SSH transport.
impl TargetHosts {
    /// The hosts' keys as the SSH client checks them.
    pub fn host_key_policy(&self) -> Result<HostKeyPolicy> {
        let text = std::fs::read_to_string(&self.state.known_hosts)
            .with_context(|| format!("reading {}", self.state.known_hosts.display()))?;
        Ok(HostKeyPolicy::known_hosts(&text))
    }

    /// The key user's private key.
    pub fn key_auth(&self) -> Result<SshAuth> {
        let path = &self.state.users.key.private_key;
        let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(SshAuth::PrivateKey(SshKey::decode(&pem, None)?))
    }

    /// An SSH configuration for `host` as `user`, checking host keys against the hosts' known_hosts.
    pub fn ssh_config(&self, host: &Host, user: &str, auth: SshAuth) -> Result<SshConfig> {
        let mut config = SshConfig::new(host.address.clone(), user, auth, self.host_key_policy()?);
        config.port = host.port;
        Ok(config)
    }

    /// The key user's SSH configuration for `host`.
    pub fn key_config(&self, host: &Host) -> Result<SshConfig> {
        self.ssh_config(host, &self.state.users.key.name, self.key_auth()?)
    }
}

impl Host {
    /// Pids of the sshd processes in the host's namespace (the listener and one per session).
    pub fn sshd_processes(&self) -> Vec<String> {
        let Ok(out) = std::process::Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .unwrap_or_default()
                    .trim()
                    == "sshd"
            })
            .map(str::to_owned)
            .collect()
    }
}

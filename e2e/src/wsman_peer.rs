//! The PSRP peer's WS-Management listener as a loopback process of its own, for tests and the
//! benchmark that need a WSMan server but no namespace hosts: `python -m psrp_peer --wsman
//! 127.0.0.1:0`, its port read from `--wsman-port-file`. Dropping it kills the process.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::hosts::{repo_path, venv_python};

/// The user the peer accepts (Basic and NTLM).
pub const USER: &str = "psrp-test";
pub const PASSWORD: &str = "Pa55-wsman-loopback!";

/// A running WSMan peer on 127.0.0.1.
pub struct WsmanPeer {
    child: Child,
    pub port: u16,
    /// Holds the users file, port file and log.
    pub dir: PathBuf,
}

impl WsmanPeer {
    /// Starts a peer with extra `--wsman-*` arguments (`--wsman-allow-unencrypted`,
    /// `--wsman-max-shells-per-user=2`, ...), waiting (bounded) until it serves.
    pub fn start(args: &[&str]) -> Result<WsmanPeer> {
        let dir = std::env::temp_dir().join(format!("wsman-peer-{}", uuid_like()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let users = dir.join("users.txt");
        std::fs::write(&users, format!("{USER}:{PASSWORD}\n")).context("writing the users file")?;
        let port_file = dir.join("port");
        let python = venv_python()?;
        let child = Command::new(python)
            .current_dir(repo_path("e2e/peer"))
            .args(["-m", "psrp_peer", "--wsman", "127.0.0.1:0"])
            .arg("--wsman-users")
            .arg(&users)
            .arg("--wsman-port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(dir.join("peer.log"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the WSMan peer")?;
        let mut peer = WsmanPeer { child, port: 0, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(port) = text.trim().parse::<u16>()
                && port != 0
            {
                peer.port = port;
                return Ok(peer);
            }
            if let Some(status) = peer.child.try_wait()? {
                bail!("the WSMan peer exited ({status}); log in {}", peer.dir.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "the WSMan peer did not serve within 30 s; log in {}",
                    peer.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The peer's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("peer.log")).unwrap_or_default()
    }

    /// The process id (for the benchmark's CPU figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for WsmanPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A name unique to this process and moment, without another dependency.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

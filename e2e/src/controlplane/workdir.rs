//! The control plane's temp dir (certificates, kubeconfig, etcd data, logs), free loopback
//! ports, and the clean-up of dirs that killed test processes left behind.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::{Context, Result};

use super::process::pid_alive;

/// Every control plane dir is `<tmp>/psso-controlplane-<pid>-<n>`; the pid tells a later
/// run whether its owner is gone.
pub(crate) const DIR_PREFIX: &str = "psso-controlplane-";
/// Lines `<component> <pid>` of the children started from a dir, for stale clean-up.
const PIDS_FILE: &str = "pids";

/// Root under which control plane dirs are made: `$PSSO_CONTROLPLANE_TMPDIR` or the
/// system temp dir.
pub(crate) fn root() -> PathBuf {
    std::env::var_os("PSSO_CONTROLPLANE_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// Makes a fresh, empty dir for one control plane of this process.
pub(crate) fn create(root: &Path) -> Result<PathBuf> {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    loop {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            // Left by an earlier process with our (reused) pid: take the next number.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
}

/// Records a started child so a later run can kill it if this process dies without
/// stopping it and PDEATHSIG somehow did not fire.
pub(crate) fn record_pid(dir: &Path, component: &str, pid: u32) -> Result<()> {
    let path = dir.join(PIDS_FILE);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{component} {pid}").with_context(|| format!("writing {}", path.display()))
}

fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(DIR_PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes control plane dirs under `root` whose owning process is dead, killing any
/// component still running from them (recognised by the dir in its command line, so a
/// reused pid is never killed). Returns the dirs removed. Best effort: problems are logged.
pub fn clean_stale_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner_pid(&name.to_string_lossy()) else {
            continue;
        };
        if pid == std::process::id() || pid_alive(pid) {
            continue;
        }
        let dir = entry.path();
        kill_leftovers(&dir);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), owner = pid, "removed stale control plane dir");
                removed.push(dir);
            }
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove stale dir"),
        }
    }
    removed
}

fn kill_leftovers(dir: &Path) {
    let Ok(pids) = fs::read_to_string(dir.join(PIDS_FILE)) else {
        return;
    };
    let needle = dir.to_string_lossy().into_owned();
    for line in pids.lines() {
        let Some(pid) = line
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            tracing::warn!(pid, line, "killing a leftover control plane process");
            // SAFETY: kill(2); the pid's command line names this dir, so it is ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// `n` distinct free TCP ports on 127.0.0.1. All listeners are held until every port is
/// chosen (so they differ), then released for the components to bind. Another process may
/// grab one in between; start-up retries on "address already in use" for that.
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding 127.0.0.1:0 to find a free port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .context("reading a bound port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct() {
        let ports = free_ports(4).expect("ports");
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "{ports:?}");
    }

    #[test]
    fn parses_owner_pid() {
        assert_eq!(owner_pid("psso-controlplane-123-0"), Some(123));
        assert_eq!(owner_pid("psso-controlplane-x-0"), None);
        assert_eq!(owner_pid("other-123-0"), None);
    }

    #[test]
    fn removes_dirs_of_dead_owners_only() {
        let root = std::env::temp_dir().join(format!("psso-workdir-test-{}", std::process::id()));
        fs::create_dir_all(&root).expect("root");
        let mine = create(&root).expect("create");
        // A pid that cannot be alive: above the kernel's pid_max limit (2^22).
        let dead = root.join(format!("{DIR_PREFIX}{}-0", (1u32 << 22) + 7));
        fs::create_dir_all(dead.join("etcd")).expect("dead dir");
        record_pid(&dead, "etcd", 1).expect("pids"); // pid 1's cmdline lacks the dir: spared
        let removed = clean_stale_dirs(&root);
        assert_eq!(removed, vec![dead.clone()]);
        assert!(mine.exists() && !dead.exists());
        fs::remove_dir_all(&root).expect("cleanup");
    }
}

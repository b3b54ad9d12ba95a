//! Child processes (etcd, kube-apiserver, kube-controller-manager) that cannot outlive the
//! test process.
//!
//! Three layers, because each covers a way of ending the others miss:
//! - an explicit, graceful [`ManagedProcess::stop`] (SIGTERM, then SIGKILL after a grace
//!   period), called by `ControlPlane::stop`, its `Drop` and an `atexit` hook;
//! - `Drop` of [`ManagedProcess`] kills what is still running (a panic mid start-up);
//! - `PR_SET_PDEATHSIG = SIGKILL`, for when the test process is killed outright and no Rust
//!   code runs. The kernel delivers it when the *thread* that forked the child exits, not
//!   the process: libtest runs each test on a thread of its own that ends with the test, so
//!   a child forked from a test thread would die with that test. All children are therefore
//!   forked by one dedicated spawner thread that lives as long as the process.

use std::{
    fs::{self, File},
    io::{self, Read, Seek, SeekFrom},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};

struct SpawnRequest {
    command: Command,
    reply: mpsc::SyncSender<io::Result<Child>>,
}

/// The spawner thread's inbox. The `Sender` lives in a static, so the thread's `recv` loop
/// never ends and the thread lives until the process exits.
fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        // If the thread cannot start, `rx` is dropped with the closure and every spawn
        // request fails with a clear error instead of hanging.
        if let Err(e) = thread::Builder::new()
            .name("controlplane-spawner".into())
            .spawn(move || spawner_loop(rx))
        {
            tracing::error!(error = %e, "cannot start the control plane's spawner thread");
        }
        tx
    })
}

fn spawner_loop(rx: mpsc::Receiver<SpawnRequest>) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    for SpawnRequest { mut command, reply } in rx {
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (prctl, getppid, setpgid) and builds io::Errors without allocating.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl; then no signal will come.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                // A process group of its own: a terminal's Ctrl-C reaches only our process,
                // which then stops the components in order (apiserver before etcd).
                if libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // The requester may have given up (it cannot, it blocks); a failed send just drops
        // the child, whose Drop does not kill: PDEATHSIG still covers it.
        let _ = reply.send(command.spawn());
    }
}

/// Spawns `command` from the long-lived spawner thread with PDEATHSIG set.
fn spawn_with_pdeathsig(command: Command) -> io::Result<Child> {
    let (reply, answer) = mpsc::sync_channel(1);
    spawner()
        .send(SpawnRequest { command, reply })
        .map_err(|_| io::Error::other("the control plane's spawner thread is not running"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the control plane's spawner thread went away"))?
}

/// One running component, its output going to a log file.
#[derive(Debug)]
pub(crate) struct ManagedProcess {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl ManagedProcess {
    /// Starts `program args...` with stdout and stderr appended to `log`.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
        cwd: &Path,
    ) -> Result<Self> {
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicating {}", log.display()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        tracing::debug!(component = name, program = %program.display(), ?args, "starting");
        let child = spawn_with_pdeathsig(command)
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        tracing::info!(component = name, pid = child.id(), log = %log.display(), "started");
        Ok(Self {
            name,
            child: Some(child),
            log,
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// An error (with the log's tail) if the process has exited.
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} was stopped", self.name);
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(anyhow!(
                "{} exited early ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 40)
            )),
            Err(e) => Err(anyhow!(e).context(format!("checking on {}", self.name))),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`; always reaps the child.
    pub(crate) fn stop(&mut self, grace: Duration) -> Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        if let Some(status) = child.try_wait().context("checking before stop")? {
            return Ok(Some(status));
        }
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        // SAFETY: plain kill(2) on our own, not yet reaped, child.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            tracing::debug!(component = self.name, error = %io::Error::last_os_error(), "SIGTERM failed");
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().context("waiting for exit")? {
                tracing::debug!(component = self.name, %status, "stopped");
                return Ok(Some(status));
            }
            thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(component = self.name, ?grace, "did not stop on SIGTERM; killing");
        child.kill().context("SIGKILL")?;
        Ok(Some(child.wait().context("reaping after SIGKILL")?))
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // Only reached when nobody called stop (e.g. a failed start): no grace needed.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last `lines` lines of a log file (at most the last 64 KiB are read), for error
/// messages; never fails, says why instead.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// True while `pid` exists and is not a zombie. Used for stale-dir cleanup and by tests
/// that check nothing is left behind.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 is the state; the command name before it is in parentheses and may hold
        // spaces, so look after the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("psso-process-test-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn tail_keeps_last_lines() {
        let dir = tmp("tail");
        let log = dir.join("x.log");
        fs::write(&log, (1..=10).map(|i| format!("line {i}\n")).collect::<String>()).expect("write");
        assert_eq!(log_tail(&log, 2), "line 9\nline 10");
        assert!(log_tail(&dir.join("missing"), 2).contains("cannot read"));
        fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn child_outlives_the_thread_that_asked_for_it() {
        // The reason for the spawner thread: a child spawned on behalf of a short-lived
        // thread (a libtest test thread) must not get its PDEATHSIG when that thread ends.
        let dir = tmp("spawn");
        let log = dir.join("s.log");
        let cwd = dir.clone();
        let mut p = thread::spawn(move || {
            let args = vec!["-c".to_owned(), "echo hello; exec sleep 30".to_owned()];
            ManagedProcess::spawn("sleeper", Path::new("/bin/sh"), &args, log, &cwd)
        })
        .join()
        .expect("thread")
        .expect("spawn");
        let pid = p.pid().expect("pid");
        thread::sleep(Duration::from_millis(300));
        p.ensure_running()
            .expect("still running after the requesting thread ended");
        // Its own process group (field 5 of /proc/<pid>/stat, after the state and ppid).
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("stat")
            .1
            .split_whitespace()
            .collect();
        assert_eq!(fields[2], pid.to_string(), "own process group");
        let status = p.stop(Duration::from_secs(5)).expect("stop").expect("status");
        assert!(!status.success(), "terminated by a signal: {status}");
        assert!(!pid_alive(pid));
        assert!(log_tail(&dir.join("s.log"), 5).contains("hello"));
        fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn early_exit_reports_log_tail() {
        let dir = tmp("early");
        let args = vec!["-c".to_owned(), "echo boom >&2; exit 3".to_owned()];
        let mut p = ManagedProcess::spawn("failer", Path::new("/bin/sh"), &args, dir.join("f.log"), &dir)
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            match p.ensure_running() {
                Err(e) => break e,
                Ok(()) if Instant::now() > deadline => panic!("still running"),
                Ok(()) => thread::sleep(Duration::from_millis(10)),
            }
        };
        let text = format!("{err:#}");
        assert!(
            text.contains("failer exited early") && text.contains("boom"),
            "{text}"
        );
        fs::remove_dir_all(dir).expect("cleanup");
    }
}

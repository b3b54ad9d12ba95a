//! Benchmark of the project's PSRP client (`psrp::session`) against pypsrp 1.0.0b1's SSH client, on
//! the same namespace host (real sshd, the PSRP peer), interleaved round by round, printed side by
//! side as a Markdown table with ratios (pypsrp / ours). Not a test: nothing here asserts a time.
//! With `--wsman`, both clients use WS-Management instead (NTLM with message encryption) against
//! the PSRP peer's WSMan listener on loopback: ours `Session::open_wsman`, pypsrp its
//! `psrp.WSManInfo`.
//!
//! `cargo run --release -p e2e --bin psrp-bench -- [--quick] [--wsman]` (as root, like the e2e
//! tests; `--wsman` needs no namespace hosts).
//!
//! Each client measures itself in its own process: wall time, CPU as getrusage(RUSAGE_SELF) user+sys,
//! RSS from /proc/self/statm. The pypsrp side is `e2e/bench/pypsrp_bench.py`, driven over stdio.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use e2e::hosts::TargetHosts;
use psrp::{
    clixml::PsValue,
    session::{Session, SessionOptions, WsmanSessionConfig},
    transport::{
        ssh::SshConfig,
        wsman::{Credentials, WsmanAuth, WsmanConfig},
    },
};
use serde_json::{Value, json};
use tokio::{sync::Semaphore, time::timeout};

/// Bound for any one open, pipeline or close.
const STEP: Duration = Duration::from_secs(30);
/// Sessions opening at the same time in the concurrent workload (both clients).
const OPENING_AT_ONCE: usize = 50;
const SCRIPT: &str = "Write-Output 1";

#[derive(Parser)]
#[command(about = "PSRP client benchmark: ours against pypsrp's SSH client, same peer and sshd")]
struct Args {
    /// Smaller counts, for a smoke check.
    #[arg(long)]
    quick: bool,
    /// Both clients over WS-Management (NTLM, encrypted) against a loopback WSMan peer.
    #[arg(long, conflicts_with = "only_ours")]
    wsman: bool,
    /// Profiling aid: only our client, `N` sequential pipelines on one session (after `--opens` opens),
    /// no pypsrp; prints CPU, context switches and syscalls per pipeline and per open + close.
    #[arg(long, value_name = "N")]
    only_ours: Option<usize>,
    /// With `--only-ours`: run the opens and the pipelines in a spawned task (on a runtime worker,
    /// as the operator's reconcilers do) rather than on the main thread's `block_on`.
    #[arg(long, requires = "only_ours")]
    in_task: bool,
    /// With `--only-ours`: how many opens (each with its close) to measure.
    #[arg(long, value_name = "N", default_value_t = 20, requires = "only_ours")]
    opens: usize,
    /// With `--only-ours`: then open `N` sessions at once and print the RSS per session.
    #[arg(long, value_name = "N", requires = "only_ours")]
    concurrent: Option<usize>,
}

struct Counts {
    rounds: usize,
    opens_per_round: usize,
    pipelines_per_round: usize,
    sequential: usize,
    concurrent: usize,
}

impl Counts {
    fn new(quick: bool) -> Self {
        if quick {
            Counts {
                rounds: 2,
                opens_per_round: 5,
                pipelines_per_round: 50,
                sequential: 100,
                concurrent: 20,
            }
        } else {
            Counts {
                rounds: 5,
                opens_per_round: 20,
                pipelines_per_round: 200,
                sequential: 1000,
                concurrent: 300,
            }
        }
    }
}

fn rusage() -> libc::rusage {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    usage
}

fn cpu_seconds() -> f64 {
    let usage = rusage();
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Voluntary + involuntary context switches of the whole process: unlike CPU time, a count that
/// does not depend on what else runs on the machine (involuntary ones somewhat).
fn context_switches() -> u64 {
    let usage = rusage();
    (usage.ru_nvcsw + usage.ru_nivcsw) as u64
}

/// Counts the process's system calls with the kernel's `raw_syscalls:sys_enter` tracepoint (one
/// perf counter per thread, inherited by threads they start). Needs root (or a permissive
/// `perf_event_paranoid`) and tracefs; `None` when either is missing.
struct SyscallCounter {
    fds: Vec<std::os::fd::OwnedFd>,
}

impl SyscallCounter {
    fn open() -> Option<Self> {
        use std::os::fd::FromRawFd;
        let id: u64 = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .find_map(|root| {
                std::fs::read_to_string(format!("{root}/events/raw_syscalls/sys_enter/id")).ok()
            })?
            .trim()
            .parse()
            .ok()?;
        // struct perf_event_attr, PERF_ATTR_SIZE_VER0 (64 bytes): type, size, config, then the
        // flags word at byte 40, where bit 1 is `inherit`.
        let mut attr = [0u8; 64];
        attr[0..4].copy_from_slice(&2u32.to_ne_bytes()); // PERF_TYPE_TRACEPOINT
        attr[4..8].copy_from_slice(&64u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&id.to_ne_bytes());
        attr[40..48].copy_from_slice(&(1u64 << 1).to_ne_bytes());
        let mut fds = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").ok()? {
            let tid: libc::pid_t = task.ok()?.file_name().to_str()?.parse().ok()?;
            // SAFETY: attr outlives the call; the kernel reads `size` bytes of it.
            let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), tid, -1, -1, 0) };
            if fd < 0 {
                return None;
            }
            // SAFETY: a new descriptor that nothing else owns.
            fds.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) });
        }
        Some(SyscallCounter { fds })
    }

    fn read(&self) -> u64 {
        use std::os::fd::AsRawFd;
        self.fds
            .iter()
            .map(|fd| {
                let mut value = 0u64;
                // SAFETY: reads 8 bytes into a u64 we own.
                let n = unsafe { libc::read(fd.as_raw_fd(), (&raw mut value).cast(), 8) };
                if n == 8 { value } else { 0 }
            })
            .sum()
    }
}

static SYSCALLS: std::sync::OnceLock<Option<SyscallCounter>> = std::sync::OnceLock::new();

fn syscalls() -> u64 {
    SYSCALLS
        .get()
        .and_then(Option::as_ref)
        .map_or(0, SyscallCounter::read)
}

fn rss_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as i64
}

/// What one run of a workload measured (either client): the same shape as the Python side's JSON.
#[derive(Default)]
struct Sample {
    latencies: Vec<f64>,
    cpu: f64,
    wall: f64,
    count: usize,
    /// Context switches (ours only; 0 for pypsrp).
    switches: u64,
    /// System calls (ours only, when they can be counted).
    syscalls: u64,
}

impl Sample {
    fn add(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.cpu += other.cpu;
        self.wall += other.wall;
        self.count += other.count;
        self.switches += other.switches;
        self.syscalls += other.syscalls;
    }

    fn from_json(value: &Value, count: usize) -> Result<Self> {
        if let Some(error) = value.get("error") {
            bail!("pypsrp: {error}");
        }
        let latencies = value["latencies"]
            .as_array()
            .map(|l| l.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        Ok(Sample {
            latencies,
            cpu: value["cpu"].as_f64().context("cpu")?,
            wall: value["wall"].as_f64().context("wall")?,
            count,
            ..Sample::default()
        })
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    fn cpu_per(&self) -> f64 {
        self.cpu / self.count as f64
    }

    fn switches_per(&self) -> f64 {
        self.switches as f64 / self.count as f64
    }

    fn syscalls_per(&self) -> f64 {
        self.syscalls as f64 / self.count as f64
    }
}

struct Concurrent {
    opened: usize,
    wall: f64,
    rss_delta: f64,
}

impl Concurrent {
    fn from_json(value: &Value) -> Result<Self> {
        if let Some(error) = value.get("error") {
            bail!("pypsrp: {error}");
        }
        Ok(Concurrent {
            opened: value["opened"].as_u64().context("opened")? as usize,
            wall: value["wall"].as_f64().context("wall")?,
            rss_delta: value["rss_delta"].as_f64().context("rss_delta")?,
        })
    }
}

// ---- our client ----

fn ssh_config(hosts: &TargetHosts) -> Result<SshConfig> {
    let mut config = hosts.key_config(hosts.host(0))?;
    config.connect_timeout = STEP;
    Ok(config)
}

/// Where our client opens its sessions.
#[derive(Clone)]
enum Target {
    Ssh(SshConfig),
    Wsman(WsmanSessionConfig),
}

fn wsman_config(port: u16) -> WsmanSessionConfig {
    let auth = WsmanAuth::Ntlm(Credentials::new(e2e::wsman_peer::USER, e2e::wsman_peer::PASSWORD));
    let mut transport = WsmanConfig::new("127.0.0.1", auth);
    transport.port = port;
    transport.connect_timeout = STEP;
    WsmanSessionConfig::new(transport)
}

fn options() -> SessionOptions {
    SessionOptions {
        open_timeout: STEP,
        operation_timeout: STEP,
        ..SessionOptions::default()
    }
}

async fn open(target: &Target) -> Result<Session> {
    let opening = async {
        match target {
            Target::Ssh(config) => Session::open_ssh(config, options()).await,
            Target::Wsman(config) => Session::open_wsman(config, options()).await,
        }
    };
    timeout(STEP + Duration::from_secs(5), opening)
        .await
        .context("open: no result in time")?
        .context("open")
}

async fn close(session: Session) -> Result<()> {
    timeout(STEP, session.close())
        .await
        .context("close: no result in time")?
        .context("close")
}

async fn pipeline(session: &Session) -> Result<()> {
    let run = async {
        let handle = session
            .run_script(SCRIPT, Vec::<(String, PsValue)>::new())
            .await?;
        anyhow::Ok(handle.collect().await?)
    };
    let outcome = timeout(STEP, run)
        .await
        .context("pipeline: no result in time")??;
    if outcome.output.len() != 1 {
        bail!("unexpected output {:?}", outcome.output);
    }
    Ok(())
}

async fn ours_opens(config: &Target, count: usize) -> Result<Sample> {
    let mut latencies = Vec::with_capacity(count);
    let (cpu0, wall0, switches0, syscalls0) = (cpu_seconds(), Instant::now(), context_switches(), syscalls());
    for _ in 0..count {
        let start = Instant::now();
        let session = open(config).await?;
        latencies.push(start.elapsed().as_secs_f64());
        close(session).await?;
    }
    Ok(Sample {
        latencies,
        cpu: cpu_seconds() - cpu0,
        wall: wall0.elapsed().as_secs_f64(),
        count,
        switches: context_switches() - switches0,
        syscalls: syscalls() - syscalls0,
    })
}

async fn ours_pipelines(config: &Target, count: usize) -> Result<Sample> {
    let session = open(config).await?;
    let mut latencies = Vec::with_capacity(count);
    let (cpu0, wall0, switches0, syscalls0) = (cpu_seconds(), Instant::now(), context_switches(), syscalls());
    for _ in 0..count {
        let start = Instant::now();
        pipeline(&session).await?;
        latencies.push(start.elapsed().as_secs_f64());
    }
    let sample = Sample {
        latencies,
        cpu: cpu_seconds() - cpu0,
        wall: wall0.elapsed().as_secs_f64(),
        count,
        switches: context_switches() - switches0,
        syscalls: syscalls() - syscalls0,
    };
    close(session).await?;
    Ok(sample)
}

async fn ours_concurrent(config: &Target, count: usize) -> Result<Concurrent> {
    let gate = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let (rss0, wall0) = (rss_bytes(), Instant::now());
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let (gate, config) = (gate.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            open(&config).await
        }));
    }
    let mut sessions = Vec::with_capacity(count);
    let mut errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(session)) => sessions.push(session),
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let (wall, rss) = (wall0.elapsed().as_secs_f64(), rss_bytes());
    if !errors.is_empty() {
        eprintln!(
            "ours: {} of {count} opens failed, e.g. {}",
            errors.len(),
            errors[0]
        );
    }
    if let Some(first) = sessions.first() {
        pipeline(first).await?;
    }
    let closing: Vec<_> = sessions.into_iter().map(|s| tokio::spawn(close(s))).collect();
    for task in closing {
        let _ = task.await;
    }
    Ok(Concurrent {
        opened: count - errors.len(),
        wall,
        rss_delta: (rss - rss0) as f64,
    })
}

// ---- pypsrp, driven over stdio ----

struct Pypsrp {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<std::io::Result<String>>,
}

fn venv_python() -> Result<PathBuf> {
    if let Some(venv) = std::env::var_os("PSSO_VENV") {
        return Ok(PathBuf::from(venv).join("bin/python"));
    }
    let script = repo_path("e2e/python-env.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .context("running e2e/python-env.sh")?;
    if !out.status.success() {
        bail!("e2e/python-env.sh failed ({})", out.status);
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin/python"))
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

impl Pypsrp {
    /// `args`: the hosts.json of the namespace hosts (SSH), or `--wsman HOST PORT USER PASSWORD`.
    fn start(args: &[String]) -> Result<Self> {
        let mut child = Command::new(venv_python()?)
            .arg(repo_path("e2e/bench/pypsrp_bench.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting pypsrp_bench.py")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Pypsrp { child, stdin, lines })
    }

    /// One request, answered within `bound` (the Python side bounds each of its steps too).
    fn request(&mut self, workload: &str, count: usize, bound: Duration) -> Result<Value> {
        writeln!(self.stdin, "{}", json!({"workload": workload, "count": count}))?;
        self.stdin.flush()?;
        let line = self
            .lines
            .recv_timeout(bound)
            .map_err(|e| anyhow!("pypsrp {workload}: no answer within {bound:?} ({e})"))??;
        serde_json::from_str(&line).with_context(|| format!("pypsrp's answer: {line}"))
    }
}

impl Drop for Pypsrp {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"workload": "quit"}));
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bound for a whole workload of `count` steps.
fn bound(count: usize) -> Duration {
    STEP * 2 + Duration::from_millis(200) * count as u32
}

// ---- the table ----

struct Table(Vec<String>);

impl Table {
    fn row(&mut self, what: &str, ours: f64, theirs: f64, digits: usize) {
        let ratio = if ours > 0.0 { theirs / ours } else { f64::NAN };
        self.0.push(format!(
            "| {what} | {ours:.digits$} | {theirs:.digits$} | {ratio:.1}x |"
        ));
    }

    /// A rate (more is better): the ratio is ours / pypsrp, so that it reads the same way.
    fn rate(&mut self, what: &str, ours: f64, theirs: f64, digits: usize) {
        let ratio = if theirs > 0.0 { ours / theirs } else { f64::NAN };
        self.0.push(format!(
            "| {what} (ratio: ours / pypsrp) | {ours:.digits$} | {theirs:.digits$} | {ratio:.1}x |"
        ));
    }

    /// A figure measured on our side only.
    fn ours(&mut self, what: &str, ours: f64, digits: usize) {
        self.0.push(format!("| {what} | {ours:.digits$} | - | - |"));
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let counts = Counts::new(args.quick);
    let ms = 1e3;

    // The namespace hosts or the loopback WSMan peer, held until the end.
    let (config, pypsrp_args, _hosts, _peer) = if args.wsman {
        eprintln!("psrp-bench: starting the WSMan peer on loopback");
        let peer = e2e::wsman_peer::WsmanPeer::start(&["--wsman-max-shells-per-user=1000"])?;
        let pypsrp_args = vec![
            "--wsman".to_owned(),
            "127.0.0.1".to_owned(),
            peer.port.to_string(),
            e2e::wsman_peer::USER.to_owned(),
            e2e::wsman_peer::PASSWORD.to_owned(),
        ];
        (
            Target::Wsman(wsman_config(peer.port)),
            pypsrp_args,
            None,
            Some(peer),
        )
    } else {
        eprintln!("psrp-bench: bringing up one namespace host (sshd and the PSRP peer)");
        let hosts = TargetHosts::up(1).await?;
        let config = Target::Ssh(ssh_config(&hosts)?);
        let hosts_json = hosts.state.state_dir.join("hosts.json").display().to_string();
        (config, vec![hosts_json], Some(hosts), None)
    };
    SYSCALLS.get_or_init(SyscallCounter::open);
    if let Some(n) = args.only_ours {
        ours_opens(&config, 1).await?;
        let opens = if args.in_task {
            let (config, count) = (config.clone(), args.opens);
            tokio::spawn(async move { ours_opens(&config, count).await }).await??
        } else {
            ours_opens(&config, args.opens).await?
        };
        let pipes = if args.in_task {
            let config = config.clone();
            tokio::spawn(async move { ours_pipelines(&config, n).await }).await??
        } else {
            ours_pipelines(&config, n).await?
        };
        println!(
            "ours only: per open + close: CPU {:.3} ms, {:.1} context switches, {:.1} syscalls; \
             per pipeline ({n}): CPU {:.3} ms, {:.2} context switches, {:.2} syscalls, p50 {:.3} ms",
            opens.cpu_per() * ms,
            opens.switches_per(),
            opens.syscalls_per(),
            pipes.cpu_per() * ms,
            pipes.switches_per(),
            pipes.syscalls_per(),
            pipes.percentile(50.0) * ms
        );
        if let Some(n) = args.concurrent {
            let conc = ours_concurrent(&config, n).await?;
            println!(
                "ours only: {n} concurrent sessions: {} opened in {:.2} s, RSS per session {:.1} KiB",
                conc.opened,
                conc.wall,
                conc.rss_delta / conc.opened.max(1) as f64 / 1024.0
            );
        }
        return Ok(());
    }
    let mut py = Pypsrp::start(&pypsrp_args)?;

    // Warm-up, not counted: the first connection of each client (host key caches, the peer).
    ours_opens(&config, 1).await?;
    py.request("open", 1, bound(1))?;

    let (mut ours_open, mut py_open) = (Sample::default(), Sample::default());
    let (mut ours_pipe, mut py_pipe) = (Sample::default(), Sample::default());
    for round in 1..=counts.rounds {
        eprintln!("psrp-bench: round {round}/{}", counts.rounds);
        let n = counts.opens_per_round;
        ours_open.add(ours_opens(&config, n).await?);
        py_open.add(Sample::from_json(&py.request("open", n, bound(n))?, n)?);
        let n = counts.pipelines_per_round;
        ours_pipe.add(ours_pipelines(&config, n).await?);
        py_pipe.add(Sample::from_json(&py.request("pipelines", n, bound(n))?, n)?);
    }

    let n = counts.sequential;
    eprintln!("psrp-bench: {n} sequential pipelines");
    let ours_seq = ours_pipelines(&config, n).await?;
    let py_seq = Sample::from_json(&py.request("pipelines", n, bound(n))?, n)?;

    let n = counts.concurrent;
    eprintln!("psrp-bench: {n} concurrent sessions");
    let ours_conc = ours_concurrent(&config, n).await?;
    let py_conc = Concurrent::from_json(&py.request("concurrent", n, bound(n))?)?;
    drop(py);

    let transport = if args.wsman {
        "WSMan, NTLM + encryption"
    } else {
        "SSH"
    };
    let mut table = Table(vec![
        format!("| measure ({transport}) | ours (psrp) | pypsrp 1.0.0b1 | pypsrp / ours |"),
        "|---|---:|---:|---:|".into(),
    ]);
    let opens = ours_open.count;
    table.row(
        &format!("open p50, ms ({opens} opens)"),
        ours_open.percentile(50.0) * ms,
        py_open.percentile(50.0) * ms,
        2,
    );
    table.row(
        "open p99, ms",
        ours_open.percentile(99.0) * ms,
        py_open.percentile(99.0) * ms,
        2,
    );
    table.row(
        "client CPU per open + close, ms",
        ours_open.cpu_per() * ms,
        py_open.cpu_per() * ms,
        2,
    );
    table.rate(
        "sessions opened (and closed) per second",
        ours_open.count as f64 / ours_open.wall,
        py_open.count as f64 / py_open.wall,
        1,
    );
    table.ours("context switches per open + close", ours_open.switches_per(), 1);
    table.ours("syscalls per open + close", ours_open.syscalls_per(), 1);
    let pipes = ours_pipe.count;
    table.row(
        &format!("pipeline round trip p50, ms ({pipes} pipelines)"),
        ours_pipe.percentile(50.0) * ms,
        py_pipe.percentile(50.0) * ms,
        3,
    );
    table.row(
        "pipeline round trip p99, ms",
        ours_pipe.percentile(99.0) * ms,
        py_pipe.percentile(99.0) * ms,
        3,
    );
    table.row(
        "client CPU per pipeline, ms",
        ours_pipe.cpu_per() * ms,
        py_pipe.cpu_per() * ms,
        3,
    );
    table.ours("context switches per pipeline", ours_pipe.switches_per(), 2);
    table.ours("syscalls per pipeline", ours_pipe.syscalls_per(), 2);
    let seq = counts.sequential;
    table.row(
        &format!("{seq} sequential pipelines, total s"),
        ours_seq.wall,
        py_seq.wall,
        2,
    );
    table.row(
        &format!("{seq} sequential pipelines, ms each"),
        ours_seq.wall / seq as f64 * ms,
        py_seq.wall / seq as f64 * ms,
        3,
    );
    table.row(
        &format!("{seq} sequential pipelines, CPU ms each"),
        ours_seq.cpu_per() * ms,
        py_seq.cpu_per() * ms,
        3,
    );
    let conc = counts.concurrent;
    table.row(
        &format!("{conc} concurrent sessions, time to open all, s"),
        ours_conc.wall,
        py_conc.wall,
        2,
    );
    table.row(
        &format!("{conc} concurrent sessions, RSS per session, KiB"),
        ours_conc.rss_delta / ours_conc.opened.max(1) as f64 / 1024.0,
        py_conc.rss_delta / py_conc.opened.max(1) as f64 / 1024.0,
        1,
    );
    if ours_conc.opened != conc || py_conc.opened != conc {
        table.0.push(format!(
            "\nOpened of {conc}: ours {}, pypsrp {}.",
            ours_conc.opened, py_conc.opened
        ));
    }
    println!("{}", table.0.join("\n"));
    Ok(())
}

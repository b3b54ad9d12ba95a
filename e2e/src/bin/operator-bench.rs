//! The operator at scale (a benchmark, not a test: it prints figures and asserts nothing):
//!
//! ```text
//! cargo build --release -p pssession-operator -p e2e --bin operator-bench
//! target/release/operator-bench [--sessions 300] [--hosts 10]
//! ```
//!
//! Brings up a control plane, `--hosts` namespace hosts (sshd + one PSRP peer per host) and the
//! operator's binary (`PSSO_OPERATOR_BIN`, default the release build), applies `--sessions` SSH
//! sessions spread over the hosts, then one trivial job per session, and reports: time until all
//! Ready; apply-to-Opened p50/p99 as this process saw it, next to the client's own open time (the
//! operator's `open_duration_seconds`); job create-to-Completed p50/p99 next to the pipeline's own
//! time (`job_duration_seconds`); operator RSS per session; reconcile p99 (from its histogram); and
//! API writes per second from the API server's own `apiserver_request_total`. Two replicas run with
//! leader election; at the end the leader is killed, and the standby's takeover is timed.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use e2e::{
    ControlPlane, ControlPlaneOptions,
    crds::install_crds,
    hosts::TargetHosts,
    operator::{OperatorProcess, create_host_secrets, job_yaml, ssh_session_yaml},
};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Namespace, Secret},
};
use kube::{Api, api::PostParams};
use pssession_operator::api::{JobState, PSJob, PSSession, RunspaceState};

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value_t = 300)]
    sessions: usize,
    #[arg(long, default_value_t = 10)]
    hosts: usize,
    /// The operator's write budget (`--status-writes-per-second`; burst twice that).
    #[arg(long, default_value_t = 50)]
    write_rate: u32,
    /// Bound on each phase.
    #[arg(long, default_value = "600")]
    timeout_secs: u64,
}

const NAMESPACE: &str = "bench";
const METRICS_ADDR: &str = "127.0.0.1:18089";

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if std::env::var_os("PSSO_OPERATOR_BIN").is_none() {
        let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/pssession-operator");
        // SAFETY: set before any other thread of this process reads the environment.
        unsafe { std::env::set_var("PSSO_OPERATOR_BIN", release) };
    }
    let bound = Duration::from_secs(cli.timeout_secs);
    let control_plane = ControlPlane::start(ControlPlaneOptions::from_env()).await?;
    install_crds(&control_plane).await?;
    let client = control_plane.client().await;
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    eprintln!("bringing up {} hosts", cli.hosts);
    let hosts = TargetHosts::up(cli.hosts).await?;
    create_host_secrets(&Api::<Secret>::namespaced(client.clone(), NAMESPACE), &hosts, "b").await?;
    // Two replicas with leader election (the default 15 s lease): the first leads; at the end the
    // leader is killed and the standby's takeover is timed.
    let (rate, burst) = (cli.write_rate.to_string(), (cli.write_rate * 2).to_string());
    let election = [
        "--leader-election",
        "--lease-namespace",
        NAMESPACE,
        "--status-writes-per-second",
        &rate,
        "--status-write-burst",
        &burst,
    ];
    let mut leader_flags = vec!["--metrics-addr", METRICS_ADDR];
    leader_flags.extend(election);
    let mut operator = OperatorProcess::start(&control_plane, NAMESPACE, &leader_flags).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for_holder(&leases, &operator.instance, bound).await?;
    let standby = OperatorProcess::start(&control_plane, NAMESPACE, &election).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = operator.pid().context("operator pid")?;
    let rss_idle = rss_kib(pid)?;
    let writes_before = api_writes(&client).await?;
    let started = Instant::now();

    // Sessions, applied in batches as a GitOps tool would.
    let mut manifests = Vec::new();
    for i in 0..cli.sessions {
        let host = hosts.host(i % cli.hosts);
        manifests.push(ssh_session_yaml(&format!("s{i:04}"), host, "b", "PublicKey", ""));
    }
    let applied_at = apply_in_batches(&control_plane, &manifests, "s").await?;
    let applied = started.elapsed();
    let sessions: Api<PSSession> = Api::namespaced(client.clone(), NAMESPACE);
    let opened_at = wait_for_all(&sessions, cli.sessions, started, bound, "sessions Opened", |s| {
        s.status.as_ref().and_then(|st| st.state) == Some(RunspaceState::Opened)
    })
    .await?;
    let all_ready = started.elapsed();
    let rss_open = rss_kib(pid)?;
    let mut to_opened: Vec<f64> = opened_at
        .iter()
        .filter_map(|(name, at)| Some(at.duration_since(*applied_at.get(name)?).as_secs_f64()))
        .collect();
    let metrics_open = operator_metrics().await?;

    // One trivial job per session.
    let jobs: Api<PSJob> = Api::namespaced(client.clone(), NAMESPACE);
    let job_manifests: Vec<String> = (0..cli.sessions)
        .map(|i| job_yaml(&format!("j{i:04}"), &format!("s{i:04}"), "Write-Output 1", ""))
        .collect();
    let created_at = apply_in_batches(&control_plane, &job_manifests, "j").await?;
    let jobs_started = Instant::now();
    let done_at = wait_for_all(&jobs, cli.sessions, jobs_started, bound, "jobs Completed", |j| {
        j.status.as_ref().and_then(|s| s.state) == Some(JobState::Completed)
    })
    .await?;
    let jobs_all = jobs_started.elapsed();
    let mut job_latency: Vec<f64> = done_at
        .iter()
        .filter_map(|(name, at)| Some(at.duration_since(*created_at.get(name)?).as_secs_f64()))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let writes_after = api_writes(&client).await?;
    let metrics_end = operator_metrics().await?;

    let open_mean = histogram_mean(&metrics_open, "pssession_operator_open_duration_seconds");
    let job_mean = histogram_mean(&metrics_end, "pssession_operator_job_duration_seconds");
    let reconcile_p99 = histogram_quantile(
        &metrics_end,
        "pssession_operator_reconcile_duration_seconds",
        0.99,
    );
    let writes: f64 = writes_after.values().sum::<f64>() - writes_before.values().sum::<f64>();
    println!(
        "| measure ({} SSH sessions over {} hosts, write budget {}/s) | value |",
        cli.sessions, cli.hosts, cli.write_rate
    );
    println!("|---|---:|");
    println!(
        "| apply of all sessions (kubectl, batches of 50), s | {:.2} |",
        applied.as_secs_f64()
    );
    println!("| time until all Opened, s | {:.2} |", all_ready.as_secs_f64());
    println!(
        "| apply-to-Opened p50 / p99, s | {:.2} / {:.2} |",
        quantile(&mut to_opened, 0.5),
        quantile(&mut to_opened, 0.99)
    );
    println!("| the client's own open (mean of open_duration_seconds), s | {open_mean:.3} |");
    println!(
        "| {} jobs: all Completed, s | {:.2} |",
        cli.sessions,
        jobs_all.as_secs_f64()
    );
    println!(
        "| job create-to-Completed p50 / p99, s | {:.2} / {:.2} |",
        quantile(&mut job_latency, 0.5),
        quantile(&mut job_latency, 0.99)
    );
    println!("| the pipeline's own time (mean of job_duration_seconds), s | {job_mean:.4} |");
    println!(
        "| operator RSS idle / with all open, MiB | {:.1} / {:.1} |",
        rss_idle as f64 / 1024.0,
        rss_open as f64 / 1024.0
    );
    println!(
        "| operator RSS per session, KiB | {:.1} |",
        (rss_open.saturating_sub(rss_idle)) as f64 / cli.sessions as f64
    );
    println!("| reconcile p99 (histogram bucket bound), s | {reconcile_p99:.3} |");
    println!("| API writes (POST/PUT/PATCH/DELETE seen by the API server), total | {writes:.0} |");
    println!(
        "| API writes per second over the run ({elapsed:.0} s) | {:.1} |",
        writes / elapsed
    );
    let mut by_resource: Vec<(String, f64)> = Vec::new();
    for (series, after) in &writes_after {
        let resource = series
            .split("resource=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("-")
            .to_owned();
        let delta = after - writes_before.get(series).copied().unwrap_or(0.0);
        match by_resource.iter_mut().find(|(r, _)| *r == resource) {
            Some((_, total)) => *total += delta,
            None => by_resource.push((resource, delta)),
        }
    }
    by_resource.retain(|(_, n)| *n > 0.0);
    by_resource.sort_by(|a, b| b.1.total_cmp(&a.1));
    let shown: Vec<String> = by_resource.iter().map(|(r, n)| format!("{r} {n:.0}")).collect();
    println!("| API writes by resource | {} |", shown.join(", "));
    let status_writes: Vec<String> = sample(&metrics_end, "pssession_operator_status_writes")
        .iter()
        .map(|(series, v)| format!("{} {v:.0}", series.trim_start_matches("pssession_operator_")))
        .collect();
    println!("| the operator's own count | {} |", status_writes.join(", "));

    // Leader dies: how long until the standby leads, and until it has reopened every session.
    let instances: HashMap<String, Option<String>> = sessions
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .map(|s| {
            (
                s.metadata.name.clone().unwrap_or_default(),
                s.status.and_then(|st| st.instance_id),
            )
        })
        .collect();
    operator.kill().await;
    let killed = Instant::now();
    wait_for_holder(&leases, &standby.instance, bound).await?;
    let takeover = killed.elapsed();
    loop {
        let list = sessions.list(&Default::default()).await?.items;
        let reopened = list.iter().all(|s| {
            let st = s.status.as_ref();
            st.and_then(|st| st.state) == Some(RunspaceState::Opened)
                && st.and_then(|st| st.instance_id.clone())
                    != instances
                        .get(s.metadata.name.as_deref().unwrap_or_default())
                        .cloned()
                        .flatten()
        });
        if reopened {
            break;
        }
        if killed.elapsed() > bound {
            bail!("the standby did not reopen every session within {bound:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all_reopened = killed.elapsed();
    println!(
        "| leader killed: standby leads after (15 s lease), s | {:.2} |",
        takeover.as_secs_f64()
    );
    println!(
        "| leader killed: all {} sessions reopened by the standby after, s | {:.2} |",
        cli.sessions,
        all_reopened.as_secs_f64()
    );
    drop(operator);
    drop(standby);
    drop(hosts);
    control_plane.stop();
    Ok(())
}

/// Applies `manifests` with kubectl in batches of 50, as a GitOps tool would; returns when each
/// was applied, by name (`prefix` + its index, as the manifests are named).
async fn apply_in_batches(
    control_plane: &ControlPlane,
    manifests: &[String],
    prefix: &str,
) -> Result<HashMap<String, Instant>> {
    let mut applied_at = HashMap::new();
    for (chunk_index, chunk) in manifests.chunks(50).enumerate() {
        control_plane
            .kubectl_in_with_stdin(NAMESPACE, &["apply", "-f", "-"], &chunk.join("---\n"))
            .await?
            .ok()?;
        let now = Instant::now();
        for i in 0..chunk.len() {
            applied_at.insert(format!("{prefix}{:04}", chunk_index * 50 + i), now);
        }
    }
    Ok(applied_at)
}

/// Lists `api` every 250 ms until `count` objects passed `done`; returns when each was first
/// seen done, by name. Fails once `bound` has passed since `since`.
async fn wait_for_all<K>(
    api: &Api<K>,
    count: usize,
    since: Instant,
    bound: Duration,
    what: &str,
    done: impl Fn(&K) -> bool,
) -> Result<HashMap<String, Instant>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut done_at: HashMap<String, Instant> = HashMap::new();
    while done_at.len() < count {
        if since.elapsed() > bound {
            bail!("only {} of {count} {what} within {bound:?}", done_at.len());
        }
        for object in api.list(&Default::default()).await?.items {
            if done(&object) {
                done_at
                    .entry(object.meta().name.clone().unwrap_or_default())
                    .or_insert_with(Instant::now);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(done_at)
}

async fn wait_for_holder(leases: &Api<Lease>, identity: &str, bound: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let holder = leases
            .get_opt("pssession-operator")
            .await?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity);
        if holder.as_deref() == Some(identity) {
            return Ok(());
        }
        if started.elapsed() > bound {
            bail!("{identity} did not lead within {bound:?} (holder: {holder:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[index.min(values.len() - 1)]
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")
}

/// Writes by verb and resource, from the API server's own counter.
async fn api_writes(client: &kube::Client) -> Result<HashMap<String, f64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut writes = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let is_write = [
            "verb=\"POST\"",
            "verb=\"PUT\"",
            "verb=\"PATCH\"",
            "verb=\"DELETE\"",
            "verb=\"APPLY\"",
        ]
        .iter()
        .any(|v| line.contains(v));
        if !is_write {
            continue;
        }
        if let Some((series, value)) = line.rsplit_once(' ') {
            writes.insert(series.to_owned(), value.parse().unwrap_or(0.0));
        }
    }
    Ok(writes)
}

async fn operator_metrics() -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(METRICS_ADDR).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text)).await??;
    Ok(text)
}

fn sample(text: &str, prefix: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn histogram_mean(text: &str, name: &str) -> f64 {
    let sum: f64 = sample(text, &format!("{name}_sum")).iter().map(|(_, v)| v).sum();
    let count: f64 = sample(text, &format!("{name}_count"))
        .iter()
        .map(|(_, v)| v)
        .sum();
    if count > 0.0 { sum / count } else { f64::NAN }
}

/// The upper bound of the bucket holding quantile `q`, over all label sets summed.
fn histogram_quantile(text: &str, name: &str, q: f64) -> f64 {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for (series, value) in sample(text, &format!("{name}_bucket")) {
        let Some(le) = series.split("le=\"").nth(1).and_then(|s| s.split('"').next()) else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        match buckets.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, total)) => *total += value,
            None => buckets.push((bound, value)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |(_, c)| *c);
    buckets
        .iter()
        .find(|(_, c)| *c >= total * q)
        .map_or(f64::NAN, |(b, _)| *b)
}

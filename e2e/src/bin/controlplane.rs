//! Runs the e2e test control plane in the foreground, for working against it by hand:
//!
//! ```text
//! cargo run -p e2e --bin controlplane -- up
//! ```
//!
//! prints the kubeconfig path and an `export KUBECONFIG=...` line, then keeps etcd,
//! kube-apiserver and kube-controller-manager running until SIGINT (Ctrl-C) or SIGTERM,
//! and stops them cleanly. The same knobs as the tests apply: `PSSO_CONTROLPLANE_BIN`,
//! `PSSO_KUBE_VERSION`, `PSSO_KEEP_CONTROLPLANE`.

use std::{io::Write, path::PathBuf, time::Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use e2e::controlplane::{ControlPlane, Options};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(about = "The e2e test control plane (etcd, kube-apiserver, kube-controller-manager)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a control plane and keep it running until SIGINT or SIGTERM.
    Up {
        /// Kubernetes version to build or reuse from the cache.
        #[arg(long, env = "PSSO_KUBE_VERSION", default_value = e2e::controlplane::DEFAULT_KUBE_VERSION)]
        kube_version: String,
        /// Use the binaries in this dir instead of building.
        #[arg(long, env = "PSSO_CONTROLPLANE_BIN")]
        bin_dir: Option<PathBuf>,
        /// Keep the temp dir (logs, etcd data) after stopping.
        #[arg(long)]
        keep: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // kube's client logs every failed request at ERROR; during start-up the
                // readiness probes fail by design until the apiserver is up.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Cli {
        command: Command::Up {
            kube_version,
            bin_dir,
            keep,
        },
    } = Cli::parse();

    // Listen before starting: a Ctrl-C during a long start still stops cleanly.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;

    let options = Options {
        bin_dir,
        kube_version: kube_version.trim_start_matches('v').to_owned(),
        keep_dir: keep || Options::from_env().keep_dir,
        ..Options::default()
    };
    let t0 = Instant::now();
    let cp = tokio::select! {
        cp = ControlPlane::start(options) => cp?,
        _ = sigint.recv() => return Ok(()),
        _ = sigterm.recv() => return Ok(()),
    };
    let pids = cp
        .pids()
        .iter()
        .map(|(name, pid)| format!("{name}={pid}"))
        .collect::<Vec<_>>()
        .join(" ");
    // stdout carries only what a caller (or a test) reads; logs go to stderr.
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "control plane {} ready in {:.1?} (binaries {:.1?}, total {:.1?})",
        cp.kube_version(),
        cp.time_to_ready(),
        cp.binaries_time(),
        t0.elapsed()
    )?;
    writeln!(out, "server: {}", cp.server_url())?;
    writeln!(out, "logs: {}", cp.dir().display())?;
    writeln!(out, "pids: {pids}")?;
    writeln!(out, "kubeconfig: {}", cp.kubeconfig_path().display())?;
    writeln!(out, "export KUBECONFIG={}", cp.kubeconfig_path().display())?;
    out.flush()?;
    drop(out);

    let which = tokio::select! {
        _ = sigint.recv() => "SIGINT",
        _ = sigterm.recv() => "SIGTERM",
    };
    tracing::info!(signal = which, "stopping the control plane");
    let t = Instant::now();
    // stop() waits on child processes: off the runtime thread.
    tokio::task::spawn_blocking(move || {
        cp.stop();
        drop(cp);
    })
    .await
    .context("stopping")?;
    tracing::info!(elapsed = ?t.elapsed(), "stopped");
    Ok(())
}

use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::{Args, Parser, Subcommand};
use pssession_operator::{
    controller::{self, CacheCounts, Config, WriteLimits},
    http::{self, Health},
    leader::{LeaderElectionConfig, LeaderElector},
    metrics::Metrics,
    telemetry::{self, LogFormat},
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// The pssession-operator binary.
#[derive(Parser)]
#[command(name = "pssession-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (YAML) the operator serves.
    Crds,
    /// Print the API reference (Markdown) generated from the CRD schemas.
    ApiDocs,
    /// Run the controllers (in-cluster config, or KUBECONFIG).
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "PSSO_NAMESPACE")]
    namespace: Option<String>,
    /// Least time between two status writes of one object.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    status_interval: Duration,
    /// Sustained status writes per second for the whole process.
    #[arg(long, default_value_t = 50.0)]
    status_writes_per_second: f64,
    /// Status writes allowed in a burst above that rate.
    #[arg(long, default_value_t = 100.0)]
    status_write_burst: f64,
    /// Bytes of a job's full text kept in its output ConfigMap (below the 1 MiB object limit).
    #[arg(long, default_value_t = 900 * 1024, value_parser = clap::value_parser!(u32).range(1024..=1000 * 1024))]
    output_max_bytes: u32,
    /// How long deleting a PSSession (or stopping the operator) waits for the remote close.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    close_timeout: Duration,
    /// This replica's name in events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Run as one of several replicas: only the holder of the Lease runs the controllers.
    #[arg(long)]
    leader_election: bool,
    /// The Lease's name.
    #[arg(long, default_value = "pssession-operator")]
    lease_name: String,
    /// The Lease's namespace (in a cluster: the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// How long a Lease holds after its last renewal: a standby takes over within about this long.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<kube::core::Duration>()
        .map(Duration::from)
        .map_err(|e| format!("{text:?} is not a duration like 30s or 5m: {e}"))
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crds => match pssession_operator::crds::to_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: cannot render the CRDs: {error}");
                ExitCode::FAILURE
            }
        },
        Command::ApiDocs => {
            print!("{}", pssession_operator::api_docs::to_markdown());
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("error: cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(run(args))
        }
    }
}

async fn run(args: RunArgs) -> ExitCode {
    if let Err(error) = telemetry::init(args.log_format, "info,kube_runtime=warn") {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            error!(error = %error, "cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());

    let counts = Arc::new(CacheCounts::default());
    let metrics = Arc::new(Metrics::new(counts.clone()));
    let health = Health::new();
    let listener = match tokio::net::TcpListener::bind(args.metrics_addr).await {
        Ok(listener) => listener,
        Err(error) => {
            error!(address = %args.metrics_addr, error = %error, "cannot listen for /metrics and probes");
            return ExitCode::FAILURE;
        }
    };
    let server = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown.clone().cancelled_owned(),
    ));

    let elector = if args.leader_election {
        let identity = args
            .instance
            .clone()
            .unwrap_or_else(|| format!("pssession-operator-{}", std::process::id()));
        let mut config = LeaderElectionConfig::new(&args.lease_name, &args.lease_namespace, &identity);
        config.lease_duration = args.lease_duration;
        // Renew a third of the way before expiry (at most the default 5 s), so short leases work too.
        config.grace = Duration::from_secs((args.lease_duration.as_secs() / 3).clamp(1, 5));
        let mut elector = match LeaderElector::new(client.clone(), config) {
            Ok(elector) => elector,
            Err(error) => {
                error!(error = %error, "leader election is misconfigured");
                return ExitCode::FAILURE;
            }
        };
        info!(identity = %identity, lease = %args.lease_name, "waiting to lead");
        tokio::select! {
            acquired = elector.acquire() => if let Err(error) = acquired {
                error!(error = %error, "leader election failed");
                return ExitCode::FAILURE;
            },
            _ = shutdown.cancelled() => return ExitCode::SUCCESS,
        }
        info!(identity = %identity, "leading");
        let lost = elector.lost();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            lost.await;
            if !stop.is_cancelled() {
                warn!("leadership lost: stopping so another replica runs the sessions");
                stop.cancel();
            }
        });
        Some(elector)
    } else {
        None
    };

    if controller::wait_for_crds(&client, &shutdown).await {
        let config = Config {
            namespace: args.namespace,
            writes: WriteLimits {
                per_object_interval: args.status_interval,
                rate: args.status_writes_per_second,
                burst: args.status_write_burst,
            },
            output_max_bytes: args.output_max_bytes as usize,
            close_timeout: args.close_timeout,
            instance: args.instance,
        };
        info!(namespace = ?config.namespace, "starting the controllers");
        let ready = health.clone();
        controller::run(
            client,
            config,
            metrics,
            counts,
            move |r| ready.set_ready(r),
            shutdown.clone(),
        )
        .await;
    }
    let mut exit = ExitCode::SUCCESS;
    if let Some(elector) = elector {
        if !elector.is_leader() {
            exit = ExitCode::FAILURE;
        }
        elector.release().await;
    }
    shutdown.cancel();
    let _ = server.await;
    info!("stopped");
    exit
}

/// SIGTERM or SIGINT starts a graceful stop; a second one ends the process at once.
fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        info!("stop requested: closing sessions");
        shutdown.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        std::process::exit(130);
    });
}

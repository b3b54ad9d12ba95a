use std::{process::ExitCode, sync::Arc, time::Duration};

use clap::{Args, Parser, Subcommand};
use pssession_operator::controller::{self, Config, NoTelemetry, WriteLimits};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

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
    #[arg(long, default_value_t = 20.0)]
    status_writes_per_second: f64,
    /// Status writes allowed in a burst above that rate.
    #[arg(long, default_value_t = 50.0)]
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
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
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

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_runtime=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

async fn run(args: RunArgs) -> ExitCode {
    init_logging(&args.log_format);
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            error!(error = %error, "cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    if !controller::wait_for_crds(&client, &shutdown).await {
        return ExitCode::SUCCESS;
    }
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
    controller::run(client, config, Arc::new(NoTelemetry), |_| {}, shutdown).await;
    info!("stopped");
    ExitCode::SUCCESS
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

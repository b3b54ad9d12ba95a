//! Process-wide logging: `tracing` events to stderr as text for people or JSON for log pipelines.

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the fields of the current span and its parents, so a log
    /// pipeline can filter by session, job or controller without parsing messages.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("invalid RUST_LOG: {0}")]
    Env(#[source] tracing_subscriber::filter::FromEnvError),
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[source] tracing_subscriber::util::TryInitError),
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `filter` (the default the
/// binary passes, e.g. from a flag), the way every Rust service behaves; a malformed `RUST_LOG`
/// is an error rather than silently ignored, so a typo does not hide the logs someone asked for.
pub fn init(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    let filter = env_filter(std::env::var_os(EnvFilter::DEFAULT_ENV).is_some(), filter)?;
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours only for a person at a terminal, not in files and log collectors.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    installed.map_err(TelemetryError::AlreadyInstalled)
}

fn env_filter(from_env: bool, default: &str) -> Result<EnvFilter, TelemetryError> {
    if from_env {
        EnvFilter::try_from_default_env().map_err(TelemetryError::Env)
    } else {
        EnvFilter::try_new(default).map_err(|source| TelemetryError::Filter {
            filter: default.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_parses() {
        let filter = env_filter(false, "info,pssession_operator=debug").unwrap();
        assert!(filter.to_string().contains("pssession_operator=debug"));
    }

    #[test]
    fn malformed_default_filter_is_an_error() {
        let error = env_filter(false, "info,[").unwrap_err();
        assert!(matches!(error, TelemetryError::Filter { .. }), "{error:?}");
    }

    #[test]
    fn second_init_is_an_error_not_a_panic() {
        // The first may fail too when another test of this binary installed one; the second must.
        let _ = init(LogFormat::Json, "warn");
        let error = init(LogFormat::Text, "warn").unwrap_err();
        assert!(matches!(error, TelemetryError::AlreadyInstalled(_)), "{error:?}");
    }
}

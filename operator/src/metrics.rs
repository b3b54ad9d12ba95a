//! The operator's Prometheus metrics, all named `pssession_operator_*`.
//!
//! Counts of sessions and jobs by state are not kept here: they are read from the controllers'
//! watch caches ([`StateCounts`]) when Prometheus scrapes, so they can never drift from what the
//! API server holds, and nothing has to remember to decrement a gauge when an object goes away.
//! Everything else is an event the controllers report as it happens.
//!
//! Every label value is a `&'static str` (a transport, a state, a condition reason, a kind):
//! the set of series stays bounded by the code, never by user input such as object names.

use std::{
    fmt::Write as _,
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, text},
    metrics::{
        MetricType,
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

/// Where the scrape-time gauges come from: the controllers implement this over their watch
/// caches (reflector stores). Called on every scrape, so it must be cheap and must not block
/// on the network.
pub trait StateCounts: Send + Sync + 'static {
    /// `(state, count)` for PSSessions, e.g. `("Opened", 12)`. States with no objects may be
    /// left out or given as 0; the same state must not appear twice.
    fn sessions_by_state(&self) -> Vec<(String, i64)>;
    /// `(state, count)` for PSJobs, e.g. `("Running", 3)`.
    fn jobs_by_state(&self) -> Vec<(String, i64)>;
}

/// The controller label of the reconcile metrics.
pub const CONTROLLER_PSSESSION: &str = "pssession";
pub const CONTROLLER_PSJOB: &str = "psjob";

/// The operator's metrics and the registry that encodes them. Cheap to share behind an `Arc`;
/// every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    open_duration: Family<TransportResult, Histogram, fn() -> Histogram>,
    job_duration: Family<StateLabel, Histogram, fn() -> Histogram>,
    reconcile_duration: Family<ControllerLabel, Histogram, fn() -> Histogram>,
    reconcile_errors: Family<ControllerReason, Counter>,
    status_writes: Family<KindLabel, Counter>,
    status_writes_deferred: Family<KindLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportResult {
    transport: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerReason {
    controller: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Session opens: a loopback SSH open takes milliseconds, a WinRM open through Kerberos or a
/// slow WAN seconds, and `openTimeout` defaults to 3 minutes: 10 ms .. ~164 s.
fn open_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// Jobs run from a `Write-Output` (milliseconds) to maintenance scripts of hours: 10 ms .. ~5.8 h.
fn job_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 12))
}

/// A reconcile reads caches and makes a few API calls: 1 ms .. ~16 s.
fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    pub fn new(counts: Arc<dyn StateCounts>) -> Self {
        let mut registry = Registry::with_prefix("pssession_operator");
        let open_duration = Family::new_with_constructor(open_histogram as fn() -> Histogram);
        let job_duration = Family::new_with_constructor(job_histogram as fn() -> Histogram);
        let reconcile_duration = Family::new_with_constructor(reconcile_histogram as fn() -> Histogram);
        let reconcile_errors = Family::<ControllerReason, Counter>::default();
        let status_writes = Family::<KindLabel, Counter>::default();
        let status_writes_deferred = Family::<KindLabel, Counter>::default();
        registry.register_with_unit(
            "open_duration",
            "Time to open a PowerShell remote session (runspace pool Opened, or the failure)",
            Unit::Seconds,
            open_duration.clone(),
        );
        registry.register_with_unit(
            "job_duration",
            "Run time of PSJobs that reached a final state, from start to completion",
            Unit::Seconds,
            job_duration.clone(),
        );
        registry.register_with_unit(
            "reconcile_duration",
            "Time one reconcile of a controller took",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        // Counters are registered without `_total`: the encoder adds it.
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error, by condition reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "status_writes",
            "Status writes sent to the API server",
            status_writes.clone(),
        );
        registry.register(
            "status_writes_deferred",
            "Status updates folded into a later write by coalescing instead of written at once",
            status_writes_deferred.clone(),
        );
        registry.register_collector(Box::new(StateCollector { counts }));
        Self {
            registry,
            open_duration,
            job_duration,
            reconcile_duration,
            reconcile_errors,
            status_writes,
            status_writes_deferred,
        }
    }

    /// A session open finished: `transport` `WSMan`/`SSH`, `result` e.g. `Opened` or the
    /// condition reason of the failure (`AuthFailed`, `HostUnreachable`).
    pub fn observe_open(&self, transport: &'static str, result: &'static str, took: Duration) {
        self.open_duration
            .get_or_create(&TransportResult { transport, result })
            .observe(took.as_secs_f64());
    }

    /// A job reached its final `state` (`Completed`, `Failed`, `Stopped`) after running `took`.
    pub fn observe_job(&self, state: &'static str, took: Duration) {
        self.job_duration
            .get_or_create(&StateLabel { state })
            .observe(took.as_secs_f64());
    }

    /// Times one reconcile: keep the guard for the reconcile's scope; it records when dropped,
    /// so every return path (errors and `?` included) is measured.
    pub fn reconcile_timer(&self, controller: &'static str) -> ReconcileTimer {
        ReconcileTimer {
            histogram: self
                .reconcile_duration
                .get_or_create_owned(&ControllerLabel { controller }),
            start: Instant::now(),
        }
    }

    /// One reconcile of `controller` took `took` (for callers that measure it themselves).
    pub fn observe_reconcile(&self, controller: &'static str, took: Duration) {
        self.reconcile_duration
            .get_or_create(&ControllerLabel { controller })
            .observe(took.as_secs_f64());
    }

    /// A reconcile of `controller` failed with `reason`, a CamelCase condition reason such as
    /// `SecretNotFound`.
    pub fn reconcile_error(&self, controller: &'static str, reason: &'static str) {
        self.reconcile_errors
            .get_or_create(&ControllerReason { controller, reason })
            .inc();
    }

    /// A status write of `kind` (`PSSession`, `PSJob`, or e.g. `ConfigMap` for job output) was sent.
    pub fn status_write(&self, kind: &'static str) {
        self.status_writes.get_or_create(&KindLabel { kind }).inc();
    }

    /// A status update of `kind` was held back by coalescing (a later write carries it).
    pub fn status_write_deferred(&self, kind: &'static str) {
        self.status_writes_deferred
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// Everything in the OpenMetrics text format (with its `# EOF`), as served with
    /// [`OPENMETRICS_CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; a collector can only by a bug in the encoder's
            // rules (e.g. a repeated label set). Scrapers then see the metrics up to there.
            tracing::error!(%error, "encoding metrics failed");
            let _ = writeln!(out, "# EOF");
        }
        out
    }

    /// Everything in the classic Prometheus text format 0.0.4, for scrapers that do not ask for
    /// OpenMetrics; served with [`PROMETHEUS_CONTENT_TYPE`].
    pub fn encode_prometheus(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "encoding metrics failed");
        }
        out
    }
}

pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Records the time since [`Metrics::reconcile_timer`] when dropped.
#[derive(Debug)]
#[must_use = "the reconcile is timed until this guard is dropped"]
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// The scrape-time gauges over [`StateCounts`].
struct StateCollector {
    counts: Arc<dyn StateCounts>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_state_gauge(
            &mut encoder,
            "sessions",
            "PSSessions by status.state, from the controller's watch cache",
            self.counts.sessions_by_state(),
        )?;
        encode_state_gauge(
            &mut encoder,
            "jobs",
            "PSJobs by status.state, from the controller's watch cache",
            self.counts.jobs_by_state(),
        )
    }
}

fn encode_state_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    mut counts: Vec<(String, i64)>,
) -> Result<(), std::fmt::Error> {
    // A repeated label set is invalid exposition: merge duplicates the source may hand over
    // (e.g. an empty state and "Unknown" both mapped by the controller to the same name).
    counts.sort_by(|a, b| a.0.cmp(&b.0));
    counts.dedup_by(|later, first| {
        let same = later.0 == first.0;
        if same {
            first.1 += later.1;
        }
        same
    });
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (state, count) in &counts {
        let labels = [("state", state.as_str())];
        metric.encode_family(&labels)?.encode_gauge(count)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Fixed {
        sessions: Mutex<Vec<(String, i64)>>,
        jobs: Mutex<Vec<(String, i64)>>,
    }

    impl StateCounts for Fixed {
        fn sessions_by_state(&self) -> Vec<(String, i64)> {
            self.sessions.lock().unwrap().clone()
        }
        fn jobs_by_state(&self) -> Vec<(String, i64)> {
            self.jobs.lock().unwrap().clone()
        }
    }

    fn metrics() -> (Arc<Fixed>, Metrics) {
        let counts = Arc::new(Fixed::default());
        let metrics = Metrics::new(counts.clone());
        (counts, metrics)
    }

    fn lines_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn state_gauges_are_read_at_scrape_time() {
        let (counts, metrics) = metrics();
        *counts.sessions.lock().unwrap() = vec![("Opened".into(), 3), ("Broken".into(), 1)];
        *counts.jobs.lock().unwrap() = vec![("Running".into(), 2)];
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE pssession_operator_sessions gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("pssession_operator_sessions{state=\"Opened\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("pssession_operator_sessions{state=\"Broken\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE pssession_operator_jobs gauge\n"), "{text}");
        assert!(
            text.contains("pssession_operator_jobs{state=\"Running\"} 2\n"),
            "{text}"
        );

        // The next scrape sees the cache as it is then, not as it was.
        *counts.sessions.lock().unwrap() = vec![("Opened".into(), 4)];
        counts.jobs.lock().unwrap().clear();
        let text = metrics.encode();
        assert_eq!(
            lines_with(&text, "pssession_operator_sessions{"),
            ["pssession_operator_sessions{state=\"Opened\"} 4"]
        );
        assert!(lines_with(&text, "pssession_operator_jobs{").is_empty(), "{text}");
    }

    #[test]
    fn repeated_states_are_summed_not_repeated() {
        let (counts, metrics) = metrics();
        *counts.sessions.lock().unwrap() = vec![("Opened".into(), 3), ("Opened".into(), 2)];
        let text = metrics.encode();
        assert_eq!(
            lines_with(&text, "pssession_operator_sessions{"),
            ["pssession_operator_sessions{state=\"Opened\"} 5"]
        );
    }

    #[test]
    fn open_duration_by_transport_and_result() {
        let (_, metrics) = metrics();
        metrics.observe_open("SSH", "Opened", Duration::from_millis(30));
        metrics.observe_open("SSH", "Opened", Duration::from_millis(50));
        metrics.observe_open("WSMan", "AuthFailed", Duration::from_secs(2));
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE pssession_operator_open_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("# UNIT pssession_operator_open_duration_seconds seconds\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "pssession_operator_open_duration_seconds_count{transport=\"SSH\",result=\"Opened\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "pssession_operator_open_duration_seconds_sum{transport=\"SSH\",result=\"Opened\"} 0.08"
            ),
            "{text}"
        );
        // 30 ms and 50 ms are both at most 0.08 s, the 4th bucket of 10 ms doubling.
        assert!(
            text.contains(
                "pssession_operator_open_duration_seconds_bucket{le=\"0.08\",transport=\"SSH\",result=\"Opened\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "pssession_operator_open_duration_seconds_count{transport=\"WSMan\",result=\"AuthFailed\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn job_duration_by_final_state() {
        let (_, metrics) = metrics();
        metrics.observe_job("Completed", Duration::from_secs(1));
        metrics.observe_job("Failed", Duration::from_millis(5));
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE pssession_operator_job_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("pssession_operator_job_duration_seconds_count{state=\"Completed\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pssession_operator_job_duration_seconds_count{state=\"Failed\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pssession_operator_job_duration_seconds_bucket{le=\"+Inf\",state=\"Failed\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn reconcile_timer_observes_on_drop() {
        let (_, metrics) = metrics();
        {
            let _timer = metrics.reconcile_timer(CONTROLLER_PSSESSION);
            // The series exists from the start of the reconcile, with nothing observed yet.
            let text = metrics.encode();
            assert!(
                text.contains(
                    "pssession_operator_reconcile_duration_seconds_count{controller=\"pssession\"} 0\n"
                ),
                "{text}"
            );
        }
        drop(metrics.reconcile_timer(CONTROLLER_PSJOB));
        drop(metrics.reconcile_timer(CONTROLLER_PSJOB));
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE pssession_operator_reconcile_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "pssession_operator_reconcile_duration_seconds_count{controller=\"pssession\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("pssession_operator_reconcile_duration_seconds_count{controller=\"psjob\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn reconcile_errors_by_controller_and_reason() {
        let (_, metrics) = metrics();
        metrics.reconcile_error(CONTROLLER_PSSESSION, "SecretNotFound");
        metrics.reconcile_error(CONTROLLER_PSSESSION, "SecretNotFound");
        metrics.reconcile_error(CONTROLLER_PSJOB, "SessionNotFound");
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE pssession_operator_reconcile_errors counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "pssession_operator_reconcile_errors_total{controller=\"pssession\",reason=\"SecretNotFound\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "pssession_operator_reconcile_errors_total{controller=\"psjob\",reason=\"SessionNotFound\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn status_writes_and_deferred_by_kind() {
        let (_, metrics) = metrics();
        metrics.status_write("PSSession");
        metrics.status_write("PSSession");
        metrics.status_write("PSJob");
        metrics.status_write_deferred("PSJob");
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE pssession_operator_status_writes counter\n"),
            "{text}"
        );
        assert!(
            text.contains("pssession_operator_status_writes_total{kind=\"PSSession\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("pssession_operator_status_writes_total{kind=\"PSJob\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE pssession_operator_status_writes_deferred counter\n"),
            "{text}"
        );
        assert!(
            text.contains("pssession_operator_status_writes_deferred_total{kind=\"PSJob\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn openmetrics_ends_with_eof_and_prometheus_text_does_not() {
        let (counts, metrics) = metrics();
        *counts.sessions.lock().unwrap() = vec![("Opened".into(), 1)];
        metrics.status_write("PSSession");
        let open = metrics.encode();
        assert!(open.ends_with("# EOF\n"), "{open}");
        let prom = metrics.encode_prometheus();
        assert!(!prom.contains("# EOF"), "{prom}");
        assert!(
            prom.contains("pssession_operator_status_writes_total{kind=\"PSSession\"} 1\n"),
            "{prom}"
        );
        assert!(
            prom.contains("pssession_operator_sessions{state=\"Opened\"} 1\n"),
            "{prom}"
        );
    }
}

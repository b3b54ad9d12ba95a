//! The PSSession and PSJob controllers, their shared context, and how they are started.
//!
//! Each reconcile reads what is there (watch caches and the session registry), decides, acts with
//! short calls only (long remote work runs in the registry's tasks, which trigger a reconcile when
//! they have news), and writes status by server-side apply under one field manager.

mod events;
mod psjob;
mod pssession;
pub mod status;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{PartialObjectMeta, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Recorder, Reporter},
        reflector,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{debug, info, warn};

use crate::{
    api::{PSJob, PSSession},
    registry::{JobPhase, ObjectKey, Observer, Registry, Transition},
};
use status::WriteGate;
pub use status::WriteLimits;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "pssession-operator";
/// Removed last, after the remote session is closed.
pub const FINALIZER: &str = "psremoting.dev/close-session";
/// How long a graceful stop waits for queued events to be written.
const EVENT_DRAIN: Duration = Duration::from_secs(5);
/// How often what is kept for deleted jobs is dropped ([`Context::forget_deleted_jobs`]).
const DELETED_JOB_SWEEP: Duration = Duration::from_secs(10);

/// Operator settings that the controllers read.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch only this namespace; `None`: all namespaces.
    pub namespace: Option<String>,
    pub writes: WriteLimits,
    /// Full job text kept in the output ConfigMap, all streams together (below the 1 MiB object limit).
    pub output_max_bytes: usize,
    /// How long deleting a PSSession waits for the remote side to confirm the close.
    pub close_timeout: Duration,
    /// This replica's name in events.
    pub instance: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace: None,
            writes: WriteLimits::default(),
            output_max_bytes: 900 * 1024,
            close_timeout: Duration::from_secs(30),
            instance: None,
        }
    }
}

/// Why a reconcile failed; it is retried with backoff, and the reason is a metric label.
#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot serialize {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("the object has no {0}")]
    MissingField(&'static str),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApiError",
            Error::Serialize(_) => "SerializeError",
            Error::MissingField(_) => "MissingField",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Hooks for metrics; the binary plugs its registry in.
pub trait Telemetry: Send + Sync + 'static {
    fn reconciled(&self, _controller: &'static str, _took: Duration) {}
    fn reconcile_error(&self, _controller: &'static str, _reason: &'static str) {}
    fn status_write(&self, _kind: &'static str) {}
    fn status_write_deferred(&self, _kind: &'static str) {}
    fn session_opened(&self, _transport: &'static str, _result: &'static str, _took: Duration) {}
    fn job_finished(&self, _phase: JobPhase, _took: Duration) {}
}

/// No metrics.
pub struct NoTelemetry;
impl Telemetry for NoTelemetry {}

impl Telemetry for crate::metrics::Metrics {
    fn reconciled(&self, controller: &'static str, took: Duration) {
        self.observe_reconcile(controller, took);
    }
    fn reconcile_error(&self, controller: &'static str, reason: &'static str) {
        crate::metrics::Metrics::reconcile_error(self, controller, reason);
    }
    fn status_write(&self, kind: &'static str) {
        crate::metrics::Metrics::status_write(self, kind);
    }
    fn status_write_deferred(&self, kind: &'static str) {
        crate::metrics::Metrics::status_write_deferred(self, kind);
    }
    fn session_opened(&self, transport: &'static str, result: &'static str, took: Duration) {
        self.observe_open(transport, result, took);
    }
    fn job_finished(&self, phase: JobPhase, took: Duration) {
        let state = match phase {
            JobPhase::Running => "Running",
            JobPhase::Completed => "Completed",
            JobPhase::Failed => "Failed",
            JobPhase::Stopped => "Stopped",
        };
        self.observe_job(state, took);
    }
}

type SessionStore = Store<DeserializeGuard<PSSession>>;
type JobStore = Store<DeserializeGuard<PSJob>>;

/// Sessions and jobs by state, counted from the watch caches when metrics are scraped.
#[derive(Default)]
pub struct CacheCounts {
    stores: std::sync::OnceLock<(SessionStore, JobStore)>,
}

impl crate::metrics::StateCounts for CacheCounts {
    fn sessions_by_state(&self) -> Vec<(String, i64)> {
        let Some((sessions, _)) = self.stores.get() else {
            return Vec::new();
        };
        count(
            sessions
                .state()
                .iter()
                .filter_map(|s| s.0.as_ref().ok())
                .map(|s| {
                    s.status
                        .as_ref()
                        .and_then(|st| st.state)
                        .map_or("Unknown".to_owned(), |st| format!("{st:?}"))
                }),
        )
    }

    fn jobs_by_state(&self) -> Vec<(String, i64)> {
        let Some((_, jobs)) = self.stores.get() else {
            return Vec::new();
        };
        count(jobs.state().iter().filter_map(|j| j.0.as_ref().ok()).map(|j| {
            j.status
                .as_ref()
                .and_then(|st| st.state)
                .map_or("Queued".to_owned(), |st| format!("{st:?}"))
        }))
    }
}

fn count(states: impl Iterator<Item = String>) -> Vec<(String, i64)> {
    let mut counts = std::collections::BTreeMap::<String, i64>::new();
    for state in states {
        *counts.entry(state).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub registry: Registry,
    pub sessions: Store<DeserializeGuard<PSSession>>,
    pub jobs: Store<DeserializeGuard<PSJob>>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    recorder: Recorder,
    events: mpsc::UnboundedSender<events::Queued>,
    gate: WriteGate,
    triggers: Triggers,
    telemetry: Arc<dyn Telemetry>,
    /// The output ConfigMap version last written, per job uid.
    written_output: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl Context {
    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Drops what this process keeps for a job (its run, its write intervals, the version of its
    /// output last written) once its report is final, or once the job is gone.
    fn forget_job(&self, uid: &str) {
        self.registry.forget_job(uid);
        self.written_output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
        self.gate.forget(uid);
        self.gate.forget(&psjob::output_gate_key(uid));
    }

    /// Jobs deleted while they ran (or before their final status was written) are never
    /// reconciled again: without a sweep their runs and bookkeeping would stay for the life of
    /// the process.
    fn forget_deleted_jobs(&self) {
        let live: std::collections::HashSet<String> =
            self.jobs.state().iter().filter_map(|j| j.uid()).collect();
        let mut gone: Vec<String> = self
            .registry
            .finished_jobs()
            .into_iter()
            .filter(|uid| !live.contains(uid))
            .collect();
        gone.extend(
            self.written_output
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .filter(|uid| !live.contains(*uid) && self.registry.job(uid).is_none())
                .cloned(),
        );
        for uid in gone {
            debug!(job_uid = %uid, "forgetting a deleted job");
            self.forget_job(&uid);
        }
    }

    /// Queues an event; it is written in order, within the write budget.
    fn emit(&self, subject: events::Subject, key: &ObjectKey, transition: Transition) {
        let _ = self.events.send(events::Queued {
            subject,
            key: key.clone(),
            transition,
        });
    }

    /// Waits for the write budget before a write that is not coalesced.
    async fn pace(&self) {
        let wait = self.gate.take();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// For a metadata write (finalizer, owner reference, delete) from a reconcile: `Some(wait)`
    /// when the budget says requeue instead of sleeping in the reconcile.
    fn defer_meta_write(&self, uid: &str) -> Option<Duration> {
        self.gate.admit(&format!("{uid}/meta")).err()
    }

    /// Applies a status by server-side apply, if the gate lets it go now; else says when to retry.
    async fn apply_status<K>(&self, obj: &K, status: impl Serialize) -> Result<Option<Duration>>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let kind = K::kind(&()).into_owned();
        let kind_label = if kind == "PSJob" { "PSJob" } else { "PSSession" };
        let uid = obj.uid().ok_or(Error::MissingField("metadata.uid"))?;
        if let Err(wait) = self.gate.admit(&uid) {
            self.telemetry.status_write_deferred(kind_label);
            return Ok(Some(wait));
        }
        let namespace = obj.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": kind,
            "status": status,
        });
        self.api::<K>(&namespace)
            .patch_status(
                &obj.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        self.telemetry.status_write(kind_label);
        Ok(None)
    }
}

/// Turns registry news into reconcile requests and events.
struct Triggers {
    sessions: mpsc::UnboundedSender<ObjectRef<DeserializeGuard<PSSession>>>,
    jobs: mpsc::UnboundedSender<ObjectRef<DeserializeGuard<PSJob>>>,
}

impl Triggers {
    fn session(&self, namespace: &str, name: &str) {
        let _ = self.sessions.send(ObjectRef::new(name).within(namespace));
    }

    fn job(&self, namespace: &str, name: &str) {
        let _ = self.jobs.send(ObjectRef::new(name).within(namespace));
    }
}

struct RegistryObserver {
    sessions: mpsc::UnboundedSender<ObjectRef<DeserializeGuard<PSSession>>>,
    jobs: mpsc::UnboundedSender<ObjectRef<DeserializeGuard<PSJob>>>,
    events: mpsc::UnboundedSender<events::Queued>,
    job_store: Store<DeserializeGuard<PSJob>>,
    telemetry: Arc<dyn Telemetry>,
}

impl Observer for RegistryObserver {
    fn session_changed(&self, session: &ObjectKey) {
        let _ = self
            .sessions
            .send(ObjectRef::new(&session.name).within(&session.namespace));
    }

    fn session_event(&self, session: &ObjectKey, transition: Transition) {
        let _ = self.events.send(events::Queued {
            subject: events::Subject::Session,
            key: session.clone(),
            transition,
        });
    }

    fn job_changed(&self, job: &ObjectKey) {
        let _ = self.jobs.send(ObjectRef::new(&job.name).within(&job.namespace));
    }

    fn job_exists(&self, job: &ObjectKey) -> bool {
        // Before the cache is ready nothing can be said: assume it exists.
        let reference = ObjectRef::new(&job.name).within(&job.namespace);
        match self.job_store.get(&reference) {
            Some(found) => {
                found.uid().as_deref() == Some(job.uid.as_str()) && found.meta().deletion_timestamp.is_none()
            }
            None => self.job_store.is_empty(),
        }
    }

    fn session_opened(&self, transport: &'static str, result: &'static str, took: Duration) {
        self.telemetry.session_opened(transport, result, took);
    }

    fn job_finished(&self, phase: JobPhase, took: Duration) {
        self.telemetry.job_finished(phase, took);
    }
}

fn api_all<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Waits until the API server serves both kinds (the CRDs are established). Uses discovery, which
/// needs no cluster-wide read of CustomResourceDefinitions.
pub async fn wait_for_crds(client: &Client, shutdown: &tokio_util::sync::CancellationToken) -> bool {
    let mut delay = Duration::from_millis(500);
    loop {
        let served = kube::discovery::pinned_group(
            client,
            &kube::core::GroupVersion::gv("psremoting.dev", "v1alpha1"),
        )
        .await;
        match served {
            Ok(group)
                if ["PSSession", "PSJob"]
                    .iter()
                    .all(|kind| group.recommended_kind(kind).is_some()) =>
            {
                return true;
            }
            Ok(_) => info!("waiting for the psremoting.dev CRDs to be established"),
            Err(error) => info!(error = %error, "waiting for the psremoting.dev API"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Runs both controllers until `shutdown` fires, then closes every session within the close bound.
pub async fn run(
    client: Client,
    config: Config,
    telemetry: Arc<dyn Telemetry>,
    counts: Arc<CacheCounts>,
    ready: impl Fn(bool) + Send + Sync + 'static,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let namespace = config.namespace.clone();
    let sessions_api: Api<DeserializeGuard<PSSession>> = api_all(&client, namespace.as_deref());
    let jobs_api: Api<DeserializeGuard<PSJob>> = api_all(&client, namespace.as_deref());
    let secrets_api: Api<PartialObjectMeta<Secret>> = api_all(&client, namespace.as_deref());

    let (session_store, session_writer) = reflector::store();
    let (job_store, job_writer) = reflector::store();
    let (secret_store, secret_writer) = reflector::store();
    let _ = counts.stores.set((session_store.clone(), job_store.clone()));

    let (session_tx, session_rx) = mpsc::unbounded_channel();
    let (job_tx, job_rx) = mpsc::unbounded_channel();
    let (event_tx, event_rx) = mpsc::unbounded_channel::<events::Queued>();

    let observer = RegistryObserver {
        sessions: session_tx.clone(),
        jobs: job_tx.clone(),
        events: event_tx.clone(),
        job_store: job_store.clone(),
        telemetry: telemetry.clone(),
    };
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: config.instance.clone(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        registry: Registry::new(Arc::new(observer)),
        sessions: session_store.clone(),
        jobs: job_store.clone(),
        secrets: secret_store.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        events: event_tx,
        gate: WriteGate::new(config.writes),
        triggers: Triggers {
            sessions: session_tx,
            jobs: job_tx,
        },
        telemetry,
        written_output: Default::default(),
        config,
    });

    let drain_events = tokio_util::sync::CancellationToken::new();
    let events = tokio::spawn(events::run(ctx.clone(), event_rx, drain_events.clone()));

    let watch_config = watcher::Config::default().any_semantic();
    let session_stream = watcher(sessions_api, watch_config.clone())
        .default_backoff()
        .reflect(session_writer)
        .applied_objects();
    let job_stream = watcher(jobs_api, watch_config.clone())
        .default_backoff()
        .reflect(job_writer)
        .applied_objects();
    // Only the metadata of Secrets is cached: enough to notice a change, without holding values.
    let secret_stream = watcher(secrets_api, watch_config)
        .default_backoff()
        .reflect(secret_writer)
        .touched_objects();
    let secret_sessions = session_store.clone();

    let ready_stores = {
        let (s, j, k) = (session_store.clone(), job_store.clone(), secret_store.clone());
        async move {
            let _ = s.wait_until_ready().await;
            let _ = j.wait_until_ready().await;
            let _ = k.wait_until_ready().await;
        }
    };

    let controller_config = kube::runtime::controller::Config::default().debounce(Duration::from_millis(200));
    let session_shutdown = shutdown.clone();
    let session_controller = Controller::for_stream(session_stream, session_store)
        .with_config(controller_config.clone())
        .watches_stream(secret_stream, move |secret: PartialObjectMeta<Secret>| {
            sessions_using_secret(&secret_sessions, &secret)
        })
        .reconcile_on(UnboundedReceiverStream::new(session_rx))
        .graceful_shutdown_on(async move { session_shutdown.cancelled().await })
        .run(pssession::reconcile, pssession::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let job_shutdown = shutdown.clone();
    let job_controller = Controller::for_stream(job_stream, job_store)
        .with_config(controller_config)
        .reconcile_on(UnboundedReceiverStream::new(job_rx))
        .graceful_shutdown_on(async move { job_shutdown.cancelled().await })
        .run(psjob::reconcile, psjob::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));

    let readiness = async {
        ready_stores.await;
        info!("watch caches are filled: ready");
        ready(true);
        let mut sweep = tokio::time::interval(DELETED_JOB_SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            sweep.tick().await;
            ctx.forget_deleted_jobs();
        }
    };
    tokio::select! {
        _ = futures::future::join(session_controller, job_controller) => {}
        _ = readiness => {}
    }
    ready(false);
    info!("stopping: closing sessions");
    ctx.registry.shutdown(ctx.config.close_timeout).await;
    // The events of the stop itself (Closing, Closed) are what `kubectl describe` shows next:
    // write what is queued, within a bound, so a stuck API server cannot hold the exit.
    drain_events.cancel();
    let mut events = events;
    if tokio::time::timeout(EVENT_DRAIN, &mut events).await.is_err() {
        warn!(within = ?EVENT_DRAIN, "events still queued at exit were dropped");
        events.abort();
    }
}

fn sessions_using_secret(
    sessions: &Store<DeserializeGuard<PSSession>>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<DeserializeGuard<PSSession>>> {
    let (Some(namespace), name) = (secret.namespace(), secret.name_any()) else {
        return Vec::new();
    };
    sessions
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()))
        .filter_map(|s| s.0.as_ref().ok())
        .filter(|s| {
            s.spec.credentials_secret_ref.name == name
                || s.spec
                    .known_hosts_secret_ref
                    .as_ref()
                    .is_some_and(|r| r.name == name)
        })
        .map(|s| ObjectRef::new(&s.name_any()).within(&namespace))
        .collect()
}

/// Runs one reconcile in a span named after its object, and times it.
async fn instrumented<K: Resource>(
    controller: &'static str,
    obj: &K,
    ctx: &Context,
    reconcile: impl std::future::Future<Output = Result<Action>>,
) -> Result<Action> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "reconcile",
        controller,
        namespace = %obj.namespace().unwrap_or_default(),
        name = %obj.name_any(),
    );
    let started = std::time::Instant::now();
    let result = reconcile.instrument(span).await;
    ctx.telemetry.reconciled(controller, started.elapsed());
    result
}

/// Adds the finalizer with a JSON patch that fails if someone changed the list meanwhile.
async fn add_finalizer<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = match obj.meta().finalizers.as_ref() {
        None => serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]),
        Some(list) => serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": list},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ]),
    };
    let patch: json_patch::Patch = serde_json::from_value(patch)?;
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await?;
    Ok(())
}

async fn remove_finalizer<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(list) = obj.meta().finalizers.as_ref() else {
        return Ok(());
    };
    let Some(index) = list.iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
    ]))?;
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// How the registry names an object.
fn key_of(obj: &impl ResourceExt) -> Result<ObjectKey> {
    Ok(ObjectKey::new(
        obj.namespace().ok_or(Error::MissingField("metadata.namespace"))?,
        obj.name_any(),
        obj.uid().ok_or(Error::MissingField("metadata.uid"))?,
    ))
}

/// A requeue after `base` with up to a fifth added, so objects that failed together spread out.
fn requeue(base: Duration) -> Action {
    Action::requeue(base.mul_f64(1.0 + 0.2 * crate::registry::backoff::jitter()))
}

/// How the controllers report a failed reconcile.
fn on_error(controller: &'static str, ctx: &Context, error: &Error, name: &str) -> Action {
    warn!(controller, name, reason = error.reason(), error = %error, "reconcile failed");
    ctx.telemetry.reconcile_error(controller, error.reason());
    requeue(Duration::from_secs(5))
}

/// The reason names used by both controllers for unreadable objects.
fn invalid_object_message(error: &kube::core::error_boundary::InvalidObject) -> String {
    format!(
        "the object does not match the schema this operator knows: {}",
        error.error
    )
}

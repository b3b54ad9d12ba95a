//! PSSession: resolve credentials, keep a worker with the right target, reflect it in status.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, ResourceExt,
    core::DeserializeGuard,
    runtime::{controller::Action, reflector::ObjectRef},
};
use tracing::info;

use super::{
    Context, Error, Result, add_finalizer, events, invalid_object_message, key_of, on_error,
    remove_finalizer, requeue,
};
use crate::{
    api::{
        Availability, DesiredState, JobState, PSJob, PSSession, PSSessionStatus, RunspaceState, Transport,
        conditions::{self, Conditions, Status},
    },
    credentials::{self, CredentialsError},
    reason::Reason,
    registry::{CloseOutcome, Connection, ObjectKey, SessionTarget, Transition, WorkerState},
};

const CONTROLLER: &str = "pssession";
/// A safety net: workers trigger reconciles on every change, so this only catches what was missed.
const RESYNC: Duration = Duration::from_secs(300);

pub(super) async fn reconcile(obj: Arc<DeserializeGuard<PSSession>>, ctx: Arc<Context>) -> Result<Action> {
    super::instrumented(CONTROLLER, obj.as_ref(), &ctx, reconcile_guarded(&obj, &ctx)).await
}

pub(super) fn error_policy(
    obj: Arc<DeserializeGuard<PSSession>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    on_error(CONTROLLER, &ctx, error, &obj.name_any())
}

async fn reconcile_guarded(obj: &DeserializeGuard<PSSession>, ctx: &Context) -> Result<Action> {
    match &obj.0 {
        Ok(session) => reconcile_session(session, ctx).await,
        Err(invalid) => {
            let key = key_of(obj)?;
            let message = invalid_object_message(invalid);
            let transition = Transition {
                reason: Reason::InvalidObject,
                warning: true,
                message: message.clone(),
            };
            ctx.emit(events::Subject::Session, &key, transition);
            let status = serde_json::json!({
                "state": "Broken",
                "availability": "None",
                "message": message,
            });
            // Without a readable spec there is nothing to open; the object stays until fixed.
            let api: Api<PSSession> = ctx.api(&key.namespace);
            let patch = serde_json::json!({"apiVersion": "psremoting.dev/v1alpha1", "kind": "PSSession", "status": status});
            api.patch_status(
                &key.name,
                &kube::api::PatchParams::apply(super::FIELD_MANAGER).force(),
                &kube::api::Patch::Apply(&patch),
            )
            .await?;
            Ok(Action::await_change())
        }
    }
}

/// What keeps a session from having a worker.
struct Blocker {
    reason: Reason,
    message: String,
}

impl From<CredentialsError> for Blocker {
    fn from(error: CredentialsError) -> Self {
        Blocker {
            reason: error.reason(),
            message: error.to_string(),
        }
    }
}

async fn reconcile_session(session: &PSSession, ctx: &Context) -> Result<Action> {
    let key = key_of(session)?;
    let api: Api<PSSession> = ctx.api(&key.namespace);
    if session.metadata.deletion_timestamp.is_some() {
        return cleanup(session, &key, &api, ctx).await;
    }
    // The first reconcile says at once that the object was seen (observedGeneration, Ready
    // Unknown): kstatus reads an object without a Ready condition as Current.
    if session.status.is_none() {
        let status = session_status(session, None, None, None, Vec::new());
        return Ok(match ctx.apply_status(session, &status).await? {
            Some(wait) => Action::requeue(wait),
            None => Action::await_change(),
        });
    }
    if !session.finalizers().iter().any(|f| f == super::FINALIZER) {
        if let Some(wait) = ctx.defer_meta_write(&key.uid) {
            return Ok(Action::requeue(wait));
        }
        add_finalizer(&api, session).await?;
        // The patch's watch event brings the next reconcile.
        return Ok(Action::await_change());
    }

    let blocker = ensure_worker(session, &key, ctx).await.err();
    let worker = ctx.registry.session_state(&key.uid);
    let (current, queued) = job_queue(ctx, &key);
    ctx.registry.set_queued(&key.uid, !queued.is_empty());
    ctx.registry
        .set_disconnected(&key.uid, session.spec.desired_state == DesiredState::Disconnected);
    // A session that has room for the next job tells it so.
    if worker
        .as_ref()
        .is_some_and(|w| w.availability == Availability::Available)
        || worker.is_none()
    {
        for job in &queued {
            ctx.triggers.job(&key.namespace, job);
        }
    }

    let status = session_status(session, worker.as_ref(), blocker.as_ref(), current, queued);
    if session.status.as_ref() == Some(&status) {
        return Ok(requeue(RESYNC));
    }
    match ctx.apply_status(session, &status).await? {
        Some(wait) => Ok(Action::requeue(wait)),
        None => Ok(requeue(RESYNC)),
    }
}

/// Starts (or restarts) the worker when the spec or a Secret changed. Reads Secrets only then.
async fn ensure_worker(session: &PSSession, key: &ObjectKey, ctx: &Context) -> Result<(), Blocker> {
    // The fingerprint reads Secret versions from the cache: before it is filled they would read as
    // missing, and the next reconcile would see a new fingerprint and replace the worker (closing
    // a WSMan shell just connected to).
    let _ = ctx.secrets.wait_until_ready().await;
    let spec = &session.spec;
    let secret_version = |name: &str| {
        ctx.secrets
            .get(&ObjectRef::new(name).within(&key.namespace))
            .and_then(|s| s.resource_version())
    };
    let credentials_version = secret_version(&spec.credentials_secret_ref.name);
    // The other Secret: known_hosts for SSH, the CA bundle for WSMan.
    let trust_version = spec
        .known_hosts_secret_ref
        .as_ref()
        .or(spec.ca_secret_ref.as_ref())
        .map(|r| secret_version(&r.name));
    // desiredState is left out: disconnecting and connecting again keep the session.
    let spec_version = {
        use std::hash::{Hash, Hasher};
        let mut spec = spec.clone();
        spec.desired_state = DesiredState::default();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(&spec).unwrap_or_default().hash(&mut hasher);
        hasher.finish()
    };
    let fingerprint = format!(
        "{spec_version:016x}/{}/{}",
        credentials_version.as_deref().unwrap_or("-"),
        trust_version.flatten().as_deref().unwrap_or("-"),
    );
    let running = ctx.registry.fingerprint(&key.uid);
    if running.as_deref() == Some(fingerprint.as_str()) {
        return Ok(());
    }
    let target = build_target(session, key, ctx, fingerprint).await;
    match target {
        Ok(target) => {
            info!(fingerprint = %target.fingerprint, replacing = running.is_some(), "starting the session worker");
            ctx.registry.start_session(key.clone(), target);
            Ok(())
        }
        // An open session keeps running on what it has; a new one waits for the fix.
        Err(blocker) if running.is_some() && blocker.reason == Reason::SecretNotFound => Ok(()),
        Err(blocker) => {
            if running.is_some() {
                ctx.registry
                    .remove_session(&key.uid, ctx.config.close_timeout)
                    .await;
            }
            Err(blocker)
        }
    }
}

async fn build_target(
    session: &PSSession,
    key: &ObjectKey,
    ctx: &Context,
    fingerprint: String,
) -> Result<SessionTarget, Blocker> {
    let spec = session.spec.clone();
    let secrets: Api<Secret> = ctx.api(&key.namespace);
    let fetch = |name: String| {
        let secrets = secrets.clone();
        async move {
            match secrets.get_opt(&name).await {
                Ok(Some(secret)) => Ok(secret),
                Ok(None) => Err(Blocker::from(CredentialsError::SecretNotFound { name })),
                Err(error) => Err(Blocker {
                    reason: Reason::SecretNotFound,
                    message: format!("cannot read Secret {name}: {error}"),
                }),
            }
        }
    };
    // attach: a disconnected shell made elsewhere, by its id (and the client session it was made
    // under, when known).
    let attach = match &spec.attach {
        Some(attach) => {
            let shell: uuid::Uuid = attach.shell_id.parse().map_err(|_| Blocker {
                reason: Reason::Unsupported,
                message: format!("attach.shellId {} is not a shell id (a GUID)", attach.shell_id),
            })?;
            let session_id = attach.session_id.as_deref().and_then(|id| id.parse().ok());
            Some((shell, session_id))
        }
        None => None,
    };
    let disconnected = spec.desired_state == DesiredState::Disconnected;
    let credentials = fetch(spec.credentials_secret_ref.name.clone()).await?;
    let options = credentials::session_options(&spec);
    let idle_timeout = spec.idle_timeout.map(Duration::from);
    let max_retries = u32::try_from(spec.max_connection_retry_count).unwrap_or(0);
    let connection = match spec.transport {
        Transport::Ssh => {
            let known_hosts = match &spec.known_hosts_secret_ref {
                Some(r) if !spec.skip_host_key_check.unwrap_or(false) => Some(fetch(r.name.clone()).await?),
                _ => None,
            };
            // Decoding an encrypted private key runs a bcrypt KDF: keep it off the async workers.
            let ssh = tokio::task::spawn_blocking(move || {
                credentials::ssh_config(&spec, &credentials, known_hosts.as_ref())
            })
            .await
            .map_err(|_| Blocker {
                reason: Reason::SecretInvalid,
                message: "reading the credentials failed".into(),
            })??;
            Connection::Ssh(ssh)
        }
        Transport::WSMan => {
            let ca = match &spec.ca_secret_ref {
                Some(r) => Some(fetch(r.name.clone()).await?),
                None => None,
            };
            let session_id = attach.and_then(|(_, id)| id).or_else(|| {
                ctx.registry
                    .session_state(&key.uid)
                    .and_then(|w| w.wsman_session_id)
                    .or_else(|| session.status.as_ref().and_then(|s| s.wsman_session_id.clone()))
                    .and_then(|id| id.parse().ok())
            });
            Connection::Wsman(credentials::wsman_session(
                &spec,
                &credentials,
                ca.as_ref(),
                session_id,
            )?)
        }
    };
    let previous_instance = ctx
        .registry
        .session_state(&key.uid)
        .and_then(|w| w.instance_id)
        .or_else(|| session.status.as_ref().and_then(|s| s.instance_id.clone()));
    // A WSMan shell that an earlier operator process had (no worker here yet): connect to it.
    let connect_to = match &connection {
        Connection::Wsman(_) if attach.is_some() => attach.map(|(shell, _)| shell),
        Connection::Wsman(_) if ctx.registry.session_state(&key.uid).is_none() => session
            .status
            .as_ref()
            .and_then(|s| s.shell_id.as_deref())
            .and_then(|id| id.parse().ok()),
        _ => None,
    };
    Ok(SessionTarget {
        connection,
        connect_to,
        attach: attach.is_some(),
        disconnected,
        options,
        idle_timeout,
        max_retries,
        fingerprint,
        previous_instance,
    })
}

/// The job running in the session and the ones waiting, in the order they will run.
pub(super) fn job_queue(ctx: &Context, session: &ObjectKey) -> (Option<String>, Vec<String>) {
    let mut current = None;
    let mut waiting: Vec<Arc<PSJob>> = Vec::new();
    for job in ctx.jobs.state() {
        let Ok(job) = &job.0 else { continue };
        if job.namespace().as_deref() != Some(session.namespace.as_str())
            || job.spec.session_ref.name != session.name
            || job.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        match job.status.as_ref().and_then(|s| s.state) {
            Some(JobState::Running) => current = Some(job.name_any()),
            None | Some(JobState::Queued) => waiting.push(Arc::new(job.clone())),
            Some(_) => {}
        }
    }
    waiting.sort_by(|a, b| super::psjob::queue_order(a, b));
    (current, waiting.iter().map(|j| j.name_any()).collect())
}

fn time(ts: Option<jiff::Timestamp>) -> Option<Time> {
    ts.map(conditions::time)
}

/// Status from what the worker reports (or what keeps it from running).
fn session_status(
    session: &PSSession,
    worker: Option<&WorkerState>,
    blocker: Option<&Blocker>,
    current_job: Option<String>,
    queued_jobs: Vec<String>,
) -> PSSessionStatus {
    let previous = session.status.clone().unwrap_or_default();
    let generation = session.metadata.generation;
    let now = conditions::now();
    let conditions = Conditions::new(&previous.conditions, generation, now);
    let mut status = PSSessionStatus {
        observed_generation: generation,
        shell_id: previous.shell_id.clone(),
        wsman_session_id: previous.wsman_session_id.clone(),
        ..PSSessionStatus::default()
    };
    let (state, reason, message) = match (blocker, worker) {
        (Some(blocker), _) => {
            let state = if blocker.reason.is_permanent() {
                RunspaceState::Broken
            } else {
                RunspaceState::Opening
            };
            status.instance_id = previous.instance_id.clone();
            (state, blocker.reason, blocker.message.clone())
        }
        (None, Some(w)) => {
            if w.shell_id.is_some() {
                status.shell_id = w.shell_id.clone();
                status.wsman_session_id = w.wsman_session_id.clone();
            }
            status.availability = Some(w.availability);
            status.instance_id = w.instance_id.clone().or(previous.instance_id.clone());
            status.protocol_version = w.protocol_version.clone();
            status.opened_at = time(w.opened_at);
            status.last_activity_time = time(w.last_activity);
            status.idle_expires_at = time(w.idle_expires_at);
            status.current_job = w.current_job.clone().or(current_job);
            (w.state, w.reason, w.message.clone())
        }
        (None, None) => (
            RunspaceState::BeforeOpen,
            Reason::Pending,
            "waiting for the operator to open it".into(),
        ),
    };
    status.state = Some(state);
    status.availability.get_or_insert(Availability::None);
    status.queued_jobs = queued_jobs;
    status.message = Some(message.clone());
    let reason_str = reason.as_str();
    status.conditions = match state {
        RunspaceState::Opened => conditions
            .set("Ready", true, reason_str, message)
            .set("Reconciling", false, reason_str, "")
            .set("Stalled", false, reason_str, ""),
        RunspaceState::Closed if reason == Reason::IdleClosed => conditions
            .set("Ready", true, reason_str, message)
            .set("Reconciling", false, reason_str, "")
            .set("Stalled", false, reason_str, ""),
        RunspaceState::Disconnected => conditions
            .set("Ready", true, Reason::Disconnected.as_str(), message)
            .set("Reconciling", false, reason_str, "")
            .set("Stalled", false, reason_str, ""),
        RunspaceState::Broken => conditions
            .set("Ready", false, reason_str, message.clone())
            .set("Reconciling", false, reason_str, "")
            .set("Stalled", true, reason_str, message),
        RunspaceState::BeforeOpen => conditions
            .set("Ready", Status::Unknown, reason_str, message.clone())
            .set("Reconciling", true, reason_str, message)
            .set("Stalled", false, reason_str, ""),
        _ => conditions
            .set("Ready", false, reason_str, message.clone())
            .set("Reconciling", true, reason_str, message)
            .set("Stalled", false, reason_str, ""),
    }
    .build();
    status
}

async fn cleanup(
    session: &PSSession,
    key: &ObjectKey,
    api: &Api<PSSession>,
    ctx: &Context,
) -> Result<Action> {
    if session.finalizers().iter().any(|f| f == super::FINALIZER) {
        let outcome = ctx
            .registry
            .remove_session(&key.uid, ctx.config.close_timeout)
            .await;
        let (warning, message) = match outcome {
            CloseOutcome::Closed => (false, "closed the remote session".to_owned()),
            CloseOutcome::Disconnected => (false, "left the session disconnected on the host".to_owned()),
            CloseOutcome::NotOpen => (false, "the session was not open; nothing to close".to_owned()),
            CloseOutcome::GaveUp => (
                true,
                format!(
                    "the remote side did not confirm the close within {}s; the connection was dropped",
                    ctx.config.close_timeout.as_secs()
                ),
            ),
        };
        info!(outcome = ?outcome, "session deleted");
        let transition = Transition {
            reason: Reason::Closing,
            warning,
            message,
        };
        ctx.emit(events::Subject::Session, key, transition);
        ctx.pace().await;
        remove_finalizer(api, session).await?;
    }
    ctx.gate.forget(&key.uid);
    Ok(Action::await_change())
}

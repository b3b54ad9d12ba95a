//! PSJob: queue in creation order, run in the session's worker, report output and outcome.

use std::{cmp::Ordering, collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    core::DeserializeGuard,
    runtime::{controller::Action, reflector::ObjectRef},
};
use tracing::info;

use super::{
    Context, Error, FIELD_MANAGER, Result, events, invalid_object_message, key_of, on_error, requeue,
};
use crate::{
    api::{
        Availability, JobState, PSJob, PSJobStatus, PSJobStreams, PSSession, RunspaceState,
        conditions::{self, Conditions},
    },
    reason::Reason,
    registry::{JobPhase, JobProgress, JobRequest, JobRun, ObjectKey, StreamKind, Transition},
};

const CONTROLLER: &str = "psjob";
const RESYNC: Duration = Duration::from_secs(300);

pub(super) async fn reconcile(obj: Arc<DeserializeGuard<PSJob>>, ctx: Arc<Context>) -> Result<Action> {
    super::instrumented(CONTROLLER, obj.as_ref(), &ctx, reconcile_guarded(&obj, &ctx)).await
}

pub(super) fn error_policy(obj: Arc<DeserializeGuard<PSJob>>, error: &Error, ctx: Arc<Context>) -> Action {
    on_error(CONTROLLER, &ctx, error, &obj.name_any())
}

/// Jobs of one session run in creation order, ties broken by name.
pub(super) fn queue_order(a: &PSJob, b: &PSJob) -> Ordering {
    let created = |j: &PSJob| j.metadata.creation_timestamp.as_ref().map(|t| t.0);
    created(a)
        .cmp(&created(b))
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

async fn reconcile_guarded(obj: &DeserializeGuard<PSJob>, ctx: &Context) -> Result<Action> {
    match &obj.0 {
        Ok(job) => reconcile_job(job, ctx).await,
        Err(invalid) => {
            let key = key_of(obj)?;
            let transition = Transition {
                reason: Reason::InvalidObject,
                warning: true,
                message: invalid_object_message(invalid),
            };
            ctx.emit(events::Subject::Job, &key, transition);
            Ok(Action::await_change())
        }
    }
}

fn is_final(state: Option<JobState>) -> bool {
    matches!(
        state,
        Some(JobState::Completed | JobState::Failed | JobState::Stopped)
    )
}

async fn reconcile_job(job: &PSJob, ctx: &Context) -> Result<Action> {
    let key = key_of(job)?;
    if job.metadata.deletion_timestamp.is_some() {
        if let Some(run) = ctx.registry.job(&key.uid) {
            run.request_stop();
        }
        return Ok(Action::await_change());
    }
    let status = job.status.clone().unwrap_or_default();
    if is_final(status.state) {
        return finished(job, &key, &status, ctx).await;
    }
    if let Some(run) = ctx.registry.job(&key.uid) {
        return running(job, &key, &run, ctx).await;
    }
    if status.state == Some(JobState::Running) {
        return session_lost(job, &key, ctx).await;
    }
    queued(job, &key, ctx).await
}

/// A PowerShell parameter name: what `-Name` can bind to.
fn invalid_parameter(parameters: &BTreeMap<String, serde_json::Value>) -> Option<&str> {
    parameters.keys().map(String::as_str).find(|name| {
        let mut chars = name.chars();
        !matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
            || !chars.all(|c| c.is_alphanumeric() || c == '_')
    })
}

async fn queued(job: &PSJob, key: &ObjectKey, ctx: &Context) -> Result<Action> {
    if let Some(bad) = invalid_parameter(&job.spec.parameters) {
        let message =
            format!("parameter name {bad:?} is not a PowerShell parameter name (letters, digits, _)");
        return write_final_without_run(job, key, Reason::InvalidParameters, message, ctx).await;
    }
    let session_ref = ObjectRef::new(&job.spec.session_ref.name).within(&key.namespace);
    let session = ctx
        .sessions
        .get(&session_ref)
        .and_then(|s| s.0.as_ref().ok().cloned())
        .filter(|s| s.metadata.deletion_timestamp.is_none());
    let Some(session) = session else {
        let message = format!(
            "PSSession {} does not exist; the job waits for it",
            job.spec.session_ref.name
        );
        return write_queued(job, key, None, Reason::SessionNotFound, message, ctx).await;
    };
    let session_key = key_of(&session)?;
    if !job.owner_references().iter().any(|o| o.uid == session_key.uid) {
        if let Some(wait) = ctx.defer_meta_write(&key.uid) {
            return Ok(Action::requeue(wait));
        }
        own(job, &session, ctx).await?;
        return Ok(Action::await_change());
    }
    let (current, waiting) = super::pssession::job_queue(ctx, &session_key);
    let position = waiting
        .iter()
        .position(|n| *n == key.name)
        .map_or(waiting.len() + 1, |i| i + 1);
    let worker = ctx.registry.session_state(&session_key.uid);
    let open_and_free = worker
        .as_ref()
        .is_some_and(|w| w.state == RunspaceState::Opened && w.availability == Availability::Available);
    if position == 1 && current.is_none() && open_and_free {
        match ctx
            .registry
            .start_job(&session_key.uid, request(job, key, ctx))
            .await
        {
            Ok(_) => {
                info!(session = %session_key.name, "job dispatched");
                ctx.triggers.session(&session_key.namespace, &session_key.name);
                // The first status and output writes (and the session's) wait one interval: a
                // short job is then written once, complete, instead of Running then Completed,
                // and its session once, Available again, instead of Busy then Available.
                ctx.gate.hold(&key.uid);
                ctx.gate.hold(&output_gate_key(&key.uid));
                ctx.gate.hold(&session_key.uid);
                return Ok(Action::requeue(ctx.config.writes.per_object_interval));
            }
            Err(error) => info!(error = %error, "job not started yet"),
        }
    }
    if position == 1 {
        ctx.registry.set_queued(&session_key.uid, true);
    }
    let waiting_for = match (&current, worker.as_ref().map(|w| w.state)) {
        (Some(current), _) => format!("job {current} runs in the session"),
        (None, Some(RunspaceState::Opened)) if position > 1 => format!("{} job(s) ahead", position - 1),
        (None, Some(state)) => format!("the session is {state:?}"),
        (None, None) => "the session is not open yet".to_owned(),
    };
    let message = format!("queued at position {position}: {waiting_for}");
    write_queued(job, key, Some(position), Reason::Queued, message, ctx).await
}

fn request(job: &PSJob, key: &ObjectKey, ctx: &Context) -> JobRequest {
    JobRequest {
        key: key.clone(),
        script: job.spec.script.clone(),
        parameters: job
            .spec
            .parameters
            .iter()
            .map(|(name, value)| (name.clone(), psrp::session::value_from_json(value)))
            .collect(),
        timeout: job.spec.timeout.map(Duration::from),
        tail_limit: usize::try_from(job.spec.output_limit_bytes).unwrap_or(4096),
        full_limit: ctx.config.output_max_bytes,
    }
}

/// Makes the job a child of its session, so deleting the session deletes it.
async fn own(job: &PSJob, session: &PSSession, ctx: &Context) -> Result<()> {
    let owner = OwnerReference {
        api_version: PSSession::api_version(&()).into_owned(),
        kind: PSSession::kind(&()).into_owned(),
        name: session.name_any(),
        uid: session.uid().ok_or(Error::MissingField("metadata.uid"))?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut owners = job.owner_references().to_vec();
    owners.push(owner);
    let patch = serde_json::json!({"metadata": {"ownerReferences": owners, "resourceVersion": job.resource_version()}});
    let api: Api<PSJob> = ctx.api(&job.namespace().unwrap_or_default());
    api.patch(&job.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

fn job_conditions(
    previous: &PSJobStatus,
    generation: Option<i64>,
    state: JobState,
    reason: Reason,
    message: &str,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let now = conditions::now();
    let c = Conditions::new(&previous.conditions, generation, now);
    let r = reason.as_str();
    match state {
        JobState::Completed => c
            .set("Complete", true, r, message)
            .set("Reconciling", false, r, "")
            .set("Stalled", false, r, ""),
        JobState::Failed | JobState::Stopped => c
            .set("Failed", true, r, message)
            .set("Reconciling", false, r, "")
            .set("Stalled", true, r, message),
        _ => c
            .set("Reconciling", true, r, message)
            .set("Stalled", false, r, ""),
    }
    .build()
}

async fn write_queued(
    job: &PSJob,
    key: &ObjectKey,
    position: Option<usize>,
    reason: Reason,
    message: String,
    ctx: &Context,
) -> Result<Action> {
    let previous = job.status.clone().unwrap_or_default();
    let status = PSJobStatus {
        state: Some(JobState::Queued),
        queue_position: position.and_then(|p| i32::try_from(p).ok()),
        conditions: job_conditions(
            &previous,
            job.metadata.generation,
            JobState::Queued,
            reason,
            &message,
        ),
        observed_generation: job.metadata.generation,
        ..PSJobStatus::default()
    };
    let event = JobEvent {
        reason,
        warning: reason == Reason::SessionNotFound,
        message,
    };
    write(job, key, &previous, status, event, ctx).await
}

/// Writes status when it changed; requeues when the gate says wait.
/// An event that goes out once the status that tells the same is written.
struct JobEvent {
    reason: Reason,
    warning: bool,
    message: String,
}

/// Writes status when it changed; requeues when the gate says wait. A state change also sends its
/// event (once: only with the write that records it) and tells the session.
async fn write(
    job: &PSJob,
    key: &ObjectKey,
    previous: &PSJobStatus,
    status: PSJobStatus,
    event: JobEvent,
    ctx: &Context,
) -> Result<Action> {
    if *previous == status {
        return Ok(requeue(RESYNC));
    }
    let state_changed = previous.state != status.state;
    match ctx.apply_status(job, &status).await? {
        Some(wait) => Ok(Action::requeue(wait)),
        None => {
            if state_changed {
                let transition = Transition {
                    reason: event.reason,
                    warning: event.warning,
                    message: event.message,
                };
                ctx.emit(events::Subject::Job, key, transition);
                ctx.triggers.session(&key.namespace, &job.spec.session_ref.name);
            }
            Ok(requeue(RESYNC))
        }
    }
}

fn duration_text(from: jiff::Timestamp, to: jiff::Timestamp) -> String {
    let secs = to.duration_since(from).as_secs().max(0);
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

fn config_map_name(job: &str) -> String {
    const SUFFIX: &str = "-output";
    let keep = 253 - SUFFIX.len();
    let base: String = job.chars().take(keep).collect();
    format!("{}{SUFFIX}", base.trim_end_matches(['-', '.']))
}

fn job_state(phase: JobPhase) -> JobState {
    match phase {
        JobPhase::Running => JobState::Running,
        JobPhase::Completed => JobState::Completed,
        JobPhase::Failed => JobState::Failed,
        JobPhase::Stopped => JobState::Stopped,
    }
}

fn tail(progress: &JobProgress, kind: StreamKind) -> Option<String> {
    Some(progress.stream(kind).tail.clone()).filter(|t| !t.is_empty())
}

fn progress_status(
    job: &PSJob,
    previous: &PSJobStatus,
    progress: &JobProgress,
    config_map: Option<String>,
) -> PSJobStatus {
    let state = job_state(progress.phase);
    let message = progress.message.clone().unwrap_or_else(|| match progress.phase {
        JobPhase::Running => "the script runs".into(),
        _ => "the script completed".into(),
    });
    let end = progress.finished_at.unwrap_or_else(jiff::Timestamp::now);
    PSJobStatus {
        state: Some(state),
        queue_position: None,
        start_time: Some(conditions::time(progress.started_at)),
        completion_time: progress.finished_at.map(conditions::time),
        duration: progress
            .finished_at
            .map(|_| duration_text(progress.started_at, end)),
        had_errors: Some(progress.had_errors),
        output: tail(progress, StreamKind::Output),
        streams: Some(PSJobStreams {
            error: tail(progress, StreamKind::Error),
            warning: tail(progress, StreamKind::Warning),
            verbose: tail(progress, StreamKind::Verbose),
            debug: tail(progress, StreamKind::Debug),
            information: tail(progress, StreamKind::Information),
            progress: tail(progress, StreamKind::Progress),
        })
        .filter(|s| *s != PSJobStreams::default()),
        output_config_map: config_map,
        truncated: Some(progress.truncated),
        conditions: job_conditions(
            previous,
            job.metadata.generation,
            state,
            progress.reason,
            &message,
        ),
        observed_generation: job.metadata.generation,
    }
}

/// The output ConfigMap's own write interval, separate from the job's status.
pub(super) fn output_gate_key(job_uid: &str) -> String {
    format!("{job_uid}/output")
}

/// The full text, in a ConfigMap the job owns. Returns how long to wait when the gate said so.
async fn write_output(
    job: &PSJob,
    key: &ObjectKey,
    progress: &JobProgress,
    version: u64,
    ctx: &Context,
) -> Result<Option<Duration>> {
    let written = ctx
        .written_output
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key.uid)
        .copied();
    if written == Some(version) {
        return Ok(None);
    }
    if let Err(wait) = ctx.gate.admit(&output_gate_key(&key.uid)) {
        ctx.telemetry.status_write_deferred("ConfigMap");
        return Ok(Some(wait));
    }
    let data: BTreeMap<String, String> = StreamKind::ALL
        .iter()
        .map(|k| (k.key().to_owned(), progress.stream(*k).full.clone()))
        .filter(|(_, text)| !text.is_empty())
        .collect();
    let owner = OwnerReference {
        api_version: PSJob::api_version(&()).into_owned(),
        kind: PSJob::kind(&()).into_owned(),
        name: key.name.clone(),
        uid: key.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let config_map = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(config_map_name(&key.name)),
            namespace: Some(key.namespace.clone()),
            owner_references: Some(vec![owner]),
            labels: Some(BTreeMap::from([(
                "psremoting.dev/job".to_owned(),
                job.name_any(),
            )])),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    let api: Api<ConfigMap> = ctx.api(&key.namespace);
    api.patch(
        &config_map_name(&key.name),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&config_map),
    )
    .await?;
    ctx.telemetry.status_write("ConfigMap");
    ctx.written_output
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.uid.clone(), version);
    Ok(None)
}

async fn running(job: &PSJob, key: &ObjectKey, run: &JobRun, ctx: &Context) -> Result<Action> {
    let (progress, version) = run.snapshot();
    let previous = job.status.clone().unwrap_or_default();
    let has_text = progress.streams.iter().any(|s| !s.full.is_empty());
    let config_map = if has_text {
        if let Some(wait) = write_output(job, key, &progress, version, ctx).await? {
            return Ok(Action::requeue(wait));
        }
        Some(config_map_name(&key.name))
    } else {
        previous.output_config_map.clone()
    };
    let status = progress_status(job, &previous, &progress, config_map);
    let (reason, warning) = match progress.phase {
        JobPhase::Running => (Reason::Running, false),
        _ => (progress.reason, progress.phase != JobPhase::Completed),
    };
    let message = progress
        .message
        .clone()
        .unwrap_or_else(|| format!("the script is {:?}", progress.phase));
    let event = JobEvent {
        reason,
        warning,
        message,
    };
    let action = write(job, key, &previous, status, event, ctx).await?;
    Ok(if progress.is_final() {
        Action::requeue(Duration::from_millis(200))
    } else {
        action
    })
}

async fn session_lost(job: &PSJob, key: &ObjectKey, ctx: &Context) -> Result<Action> {
    let message = "the operator restarted (or another replica took over) while the script ran; an SSH \
                   session cannot be reconnected, so the script's end is unknown; output written until \
                   then is kept";
    write_final_without_run(job, key, Reason::SessionLost, message.to_owned(), ctx).await
}

/// Fails a job this process has no run for: one that could not start, or whose run was lost.
/// What an earlier run wrote (start time, output) is kept.
async fn write_final_without_run(
    job: &PSJob,
    key: &ObjectKey,
    reason: Reason,
    message: String,
    ctx: &Context,
) -> Result<Action> {
    let previous = job.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let status = PSJobStatus {
        state: Some(JobState::Failed),
        queue_position: None,
        completion_time: Some(conditions::time(now)),
        duration: previous.start_time.as_ref().map(|s| duration_text(s.0, now)),
        had_errors: Some(true),
        conditions: job_conditions(
            &previous,
            job.metadata.generation,
            JobState::Failed,
            reason,
            &message,
        ),
        observed_generation: job.metadata.generation,
        ..previous.clone()
    };
    let event = JobEvent {
        reason,
        warning: true,
        message,
    };
    write(job, key, &previous, status, event, ctx).await
}

async fn finished(job: &PSJob, key: &ObjectKey, status: &PSJobStatus, ctx: &Context) -> Result<Action> {
    if let Some(run) = ctx.registry.job(&key.uid) {
        // The final status may have been written before the last text: write what remains.
        let (progress, version) = run.snapshot();
        if progress.is_final() {
            let written = ctx
                .written_output
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key.uid)
                .copied();
            let has_text = progress.streams.iter().any(|s| !s.full.is_empty());
            if (has_text && written != Some(version))
                || progress_status(job, status, &progress, status.output_config_map.clone()) != *status
            {
                return running(job, key, &run, ctx).await;
            }
            ctx.forget_job(&key.uid);
        }
    }
    let Some(ttl) = job.spec.ttl_seconds_after_finished else {
        return Ok(Action::await_change());
    };
    let finished_at = status
        .completion_time
        .as_ref()
        .map_or_else(jiff::Timestamp::now, |t| t.0);
    let expires = finished_at + jiff::SignedDuration::from_secs(ttl);
    let now = jiff::Timestamp::now();
    if expires > now {
        return Ok(Action::requeue(expires.duration_since(now).unsigned_abs()));
    }
    info!(ttl, "deleting the finished job (ttlSecondsAfterFinished)");
    let api: Api<PSJob> = ctx.api(&key.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(key.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    if let Some(wait) = ctx.defer_meta_write(&key.uid) {
        return Ok(Action::requeue(wait));
    }
    match api.delete(&key.name, &params).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
            Ok(Action::await_change())
        }
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_names_must_be_powershell_names() {
        let ok = BTreeMap::from([
            ("Name".to_owned(), serde_json::json!(1)),
            ("_x9".to_owned(), serde_json::json!(1)),
        ]);
        assert_eq!(invalid_parameter(&ok), None);
        let bad = BTreeMap::from([("a b".to_owned(), serde_json::json!(1))]);
        assert_eq!(invalid_parameter(&bad), Some("a b"));
        let bad = BTreeMap::from([("9lives".to_owned(), serde_json::json!(1))]);
        assert_eq!(invalid_parameter(&bad), Some("9lives"));
    }

    #[test]
    fn durations_read_like_kubectl() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().expect("timestamp");
        assert_eq!(
            duration_text(t("2026-01-01T00:00:00Z"), t("2026-01-01T00:00:07Z")),
            "7s"
        );
        assert_eq!(
            duration_text(t("2026-01-01T00:00:00Z"), t("2026-01-01T00:02:05Z")),
            "2m5s"
        );
        assert_eq!(
            duration_text(t("2026-01-01T00:00:00Z"), t("2026-01-01T03:04:05Z")),
            "3h4m"
        );
    }

    #[test]
    fn config_map_names_stay_valid() {
        assert_eq!(config_map_name("hello"), "hello-output");
        assert!(config_map_name(&"a".repeat(253)).len() <= 253);
    }
}

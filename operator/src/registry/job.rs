//! One PSJob's pipeline: runs in its own task, keeps what it produced, and says when it changed.
//!
//! The task writes into a [`JobRun`] behind a mutex; the PSJob reconciler reads a snapshot of it to
//! write status and the output ConfigMap, at the pace the status writer allows. So a script that
//! prints 10 MB costs appends to a buffer, not API writes.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use jiff::Timestamp;
use psrp::{
    clixml::{PsValue, to_text},
    session::{PipelineEvent, Session, SessionError},
    state::PipelineState,
};
use tokio::sync::Notify;
use tracing::{Instrument, debug, info_span};

use super::{ObjectKey, Observer};
use crate::reason::Reason;

/// How often a running job checks that its PSJob still exists (deleting it stops the pipeline).
const EXISTS_CHECK: Duration = Duration::from_secs(2);

/// What the job controller asks the session to run.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub key: ObjectKey,
    pub script: String,
    /// Bound as PowerShell parameters, typed; never spliced into the script text.
    pub parameters: Vec<(String, PsValue)>,
    pub timeout: Option<Duration>,
    /// Bytes of each stream's tail kept for status.
    pub tail_limit: usize,
    /// Bytes of full text kept for the ConfigMap, all streams together.
    pub full_limit: usize,
}

/// The streams a job's text is kept for, in the order the ConfigMap lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Output,
    Error,
    Warning,
    Verbose,
    Debug,
    Information,
    Progress,
}

impl StreamKind {
    pub const ALL: [StreamKind; 7] = [
        StreamKind::Output,
        StreamKind::Error,
        StreamKind::Warning,
        StreamKind::Verbose,
        StreamKind::Debug,
        StreamKind::Information,
        StreamKind::Progress,
    ];

    /// The ConfigMap key and status field name.
    pub fn key(self) -> &'static str {
        match self {
            StreamKind::Output => "output",
            StreamKind::Error => "error",
            StreamKind::Warning => "warning",
            StreamKind::Verbose => "verbose",
            StreamKind::Debug => "debug",
            StreamKind::Information => "information",
            StreamKind::Progress => "progress",
        }
    }
}

/// Where the job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobPhase {
    Running,
    Completed,
    Failed,
    Stopped,
}

/// One stream's text: the head (up to the shared full limit) and a tail of the latest lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamText {
    pub full: String,
    pub tail: String,
}

/// What a job produced so far, and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobProgress {
    pub phase: JobPhase,
    pub reason: Reason,
    pub message: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub had_errors: bool,
    /// The full text stopped growing at the limit.
    pub truncated: bool,
    pub streams: [StreamText; 7],
}

impl JobProgress {
    pub fn stream(&self, kind: StreamKind) -> &StreamText {
        &self.streams[kind as usize]
    }

    pub fn is_final(&self) -> bool {
        self.phase != JobPhase::Running
    }
}

/// A running (or just finished) job, shared by its task and the reconcilers.
#[derive(Debug)]
pub struct JobRun {
    pub key: ObjectKey,
    pub session: ObjectKey,
    progress: Mutex<JobProgress>,
    /// Bumped on every change: the reconciler writes the ConfigMap only when it moved.
    version: AtomicU64,
    stop: Notify,
    stop_requested: AtomicBool,
    tail_limit: usize,
    full_limit: usize,
}

impl JobRun {
    fn new(request: &JobRequest, session: ObjectKey) -> Self {
        JobRun {
            key: request.key.clone(),
            session,
            progress: Mutex::new(JobProgress {
                phase: JobPhase::Running,
                reason: Reason::Running,
                message: None,
                started_at: Timestamp::now(),
                finished_at: None,
                had_errors: false,
                truncated: false,
                streams: Default::default(),
            }),
            version: AtomicU64::new(0),
            stop: Notify::new(),
            stop_requested: AtomicBool::new(false),
            tail_limit: request.tail_limit.max(1),
            full_limit: request.full_limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, JobProgress> {
        // A panic while holding the lock cannot leave the text half-written in a way that matters
        // more than losing the job's report: keep serving what is there.
        self.progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> (JobProgress, u64) {
        let progress = self.lock().clone();
        (progress, self.version.load(Ordering::Acquire))
    }

    pub fn is_final(&self) -> bool {
        self.lock().is_final()
    }

    /// Stops the pipeline (`Stop-Job`); the job ends Stopped.
    pub fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::Release);
        self.stop.notify_one();
    }

    fn append(&self, kind: StreamKind, text: &str) {
        let mut progress = self.lock();
        let used: usize = progress.streams.iter().map(|s| s.full.len()).sum();
        let line_len = text.len() + 1;
        if used + line_len <= self.full_limit {
            let full = &mut progress.streams[kind as usize].full;
            full.push_str(text);
            full.push('\n');
        } else {
            progress.truncated = true;
        }
        let tail = &mut progress.streams[kind as usize].tail;
        tail.push_str(text);
        tail.push('\n');
        // Trim rarely (at twice the limit) so a long stream of short lines costs O(1) per line.
        if tail.len() > self.tail_limit * 2 {
            trim_to_tail(tail, self.tail_limit);
        }
        if kind == StreamKind::Error {
            progress.had_errors = true;
        }
        drop(progress);
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    fn finish(&self, phase: JobPhase, reason: Reason, message: Option<String>) {
        let mut progress = self.lock();
        progress.phase = phase;
        progress.reason = reason;
        progress.message = message;
        progress.finished_at = Some(Timestamp::now());
        if phase == JobPhase::Failed {
            progress.had_errors = true;
        }
        for stream in &mut progress.streams {
            trim_to_tail(&mut stream.tail, self.tail_limit);
        }
        drop(progress);
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// Keeps the last `limit` bytes, starting at a line (or at least a character) boundary.
pub fn trim_to_tail(text: &mut String, limit: usize) {
    if text.len() <= limit {
        return;
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    if let Some(newline) = text[start..].find('\n').filter(|&i| i + 1 < text.len() - start) {
        start += newline + 1;
    }
    text.drain(..start);
}

/// The text a pipeline event adds, and to which stream.
fn render(event: &PipelineEvent) -> Option<(StreamKind, String)> {
    Some(match event {
        // PowerShell's formatter prints nothing for a null in the pipeline.
        PipelineEvent::Output(PsValue::Nil) => return None,
        PipelineEvent::Output(value) => (StreamKind::Output, to_text(value)),
        PipelineEvent::Error(record) => (StreamKind::Error, record.message().to_owned()),
        PipelineEvent::Warning(record) => (StreamKind::Warning, record.message.clone()),
        PipelineEvent::Verbose(record) => (StreamKind::Verbose, record.message.clone()),
        PipelineEvent::Debug(record) => (StreamKind::Debug, record.message.clone()),
        PipelineEvent::Information(record) => (StreamKind::Information, record.message()),
        PipelineEvent::Progress(record) => (
            StreamKind::Progress,
            match record.percent_complete {
                p if p >= 0 => format!("{}: {} ({p}%)", record.activity, record.status_description),
                _ => format!("{}: {}", record.activity, record.status_description),
            },
        ),
        PipelineEvent::HostCall(call) => (
            StreamKind::Verbose,
            format!(
                "the script called the host's {} (a non-interactive session answers what it can)",
                call.method_name.as_deref().unwrap_or("method")
            ),
        ),
        PipelineEvent::State { .. } | PipelineEvent::Lost(_) => return None,
    })
}

/// Starts the job's pipeline in its own task. `ended` runs once, after the final state is recorded.
pub(super) fn spawn(
    session: Arc<Session>,
    session_key: ObjectKey,
    request: JobRequest,
    observer: Arc<dyn Observer>,
    ended: impl FnOnce(&JobRun) + Send + 'static,
) -> Arc<JobRun> {
    let run = Arc::new(JobRun::new(&request, session_key));
    let span = info_span!("psjob", namespace = %request.key.namespace, name = %request.key.name);
    let task_run = run.clone();
    tokio::spawn(
        async move {
            let (phase, reason, message) = drive(&session, &request, &task_run, observer.as_ref()).await;
            debug!(phase = ?phase, reason = %reason, "pipeline ended");
            task_run.finish(phase, reason, message);
            ended(&task_run);
            observer.job_changed(&task_run.key);
        }
        .instrument(span),
    );
    run
}

async fn drive(
    session: &Session,
    request: &JobRequest,
    run: &JobRun,
    observer: &dyn Observer,
) -> (JobPhase, Reason, Option<String>) {
    let mut handle = match session
        .run_script(request.script.clone(), request.parameters.clone())
        .await
    {
        Ok(handle) => handle,
        Err(error) => return lost(&error),
    };
    observer.job_changed(&run.key);
    let deadline = request.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut exists_check = tokio::time::interval(EXISTS_CHECK);
    exists_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping: Option<Reason> = None;
    loop {
        let event = tokio::select! {
            event = handle.next_event() => event,
            _ = sleep_until(deadline), if stopping.is_none() => {
                stopping = Some(Reason::DeadlineExceeded);
                stop(&handle).await;
                continue;
            }
            _ = run.stop.notified(), if stopping.is_none() => {
                stopping = Some(Reason::Stopped);
                stop(&handle).await;
                continue;
            }
            _ = exists_check.tick(), if stopping.is_none() => {
                if !observer.job_exists(&run.key) || run.stop_requested.load(Ordering::Acquire) {
                    stopping = Some(Reason::Stopped);
                    stop(&handle).await;
                }
                continue;
            }
        };
        let Some(event) = event else {
            return lost(&SessionError::Closed);
        };
        if let Some((kind, text)) = render(&event) {
            run.append(kind, &text);
            observer.job_changed(&run.key);
        }
        match event {
            PipelineEvent::State { state, error } if state.is_final() => {
                let message = error.map(|e| e.message().to_owned());
                return match (state, stopping) {
                    (PipelineState::Completed, _) => (JobPhase::Completed, Reason::Completed, None),
                    (_, Some(Reason::DeadlineExceeded)) => (
                        JobPhase::Failed,
                        Reason::DeadlineExceeded,
                        Some(format!(
                            "the script ran past its timeout of {:?} and was stopped",
                            request.timeout.unwrap_or_default()
                        )),
                    ),
                    (PipelineState::Stopped, _) => (
                        JobPhase::Stopped,
                        Reason::Stopped,
                        Some("the pipeline was stopped".into()),
                    ),
                    _ => (JobPhase::Failed, Reason::ScriptFailed, message),
                };
            }
            PipelineEvent::Lost(error) => return lost(&error),
            _ => {}
        }
    }
}

fn lost(error: &SessionError) -> (JobPhase, Reason, Option<String>) {
    (
        JobPhase::Failed,
        Reason::SessionLost,
        Some(format!(
            "the session was lost while the script ran ({}: {error}); output up to then is kept",
            error.reason()
        )),
    )
}

async fn stop(handle: &psrp::session::PipelineHandle) {
    // A failed stop means the session is going away; the pipeline then ends Lost on its own.
    if let Err(error) = handle.stop().await {
        debug!(reason = error.reason(), "stop failed");
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tail: usize, full: usize) -> JobRun {
        let key = ObjectKey::new("ns", "job", "uid");
        JobRun::new(
            &JobRequest {
                key: key.clone(),
                script: String::new(),
                parameters: vec![],
                timeout: None,
                tail_limit: tail,
                full_limit: full,
            },
            key,
        )
    }

    #[test]
    fn tail_keeps_the_latest_lines_and_full_text_stops_at_the_limit() {
        let run = run(16, 40);
        for i in 0..20 {
            run.append(StreamKind::Output, &format!("line {i}"));
        }
        run.finish(JobPhase::Completed, Reason::Completed, None);
        let (progress, version) = run.snapshot();
        let output = progress.stream(StreamKind::Output);
        assert!(output.tail.len() <= 16, "{:?}", output.tail);
        assert!(output.tail.ends_with("line 19\n"), "{:?}", output.tail);
        assert!(output.tail.starts_with("line"), "{:?}", output.tail);
        assert!(output.full.len() <= 40);
        assert!(output.full.starts_with("line 0\nline 1\n"));
        assert!(progress.truncated);
        assert_eq!(version, 21);
    }

    #[test]
    fn errors_set_had_errors_and_tail_trims_on_char_boundaries() {
        let run = run(5, 1000);
        run.append(StreamKind::Error, "ééééé");
        let (progress, _) = run.snapshot();
        assert!(progress.had_errors);
        let mut text = "ééééé\n".to_string();
        trim_to_tail(&mut text, 5);
        assert!(text.len() <= 5 && text.ends_with('\n'), "{text:?}");
    }
}

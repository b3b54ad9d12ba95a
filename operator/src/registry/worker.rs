//! One session's life: open with retries, serve jobs, close when idle, recover from faults.
//!
//! PowerShell's rules (DESIGN.md): after a fault the client retries before the runspace is Broken;
//! Broken is final for a runspace, so the operator keeps trying (at most every 5 minutes) and a
//! success is a NEW runspace whose state is gone. An SSH runspace never survives its connection.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use jiff::{SignedDuration, Timestamp};
use psrp::session::{Session, SessionError};
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tracing::{debug, info, warn};

use super::{
    CloseOutcome, Connection, JobRequest, JobRun, ObjectKey, Observer, SessionTarget, StartError, Transition,
    backoff::{self, BROKEN_RETRY_CAP},
    job, lock,
};
use crate::{
    api::{Availability, RunspaceState},
    reason::Reason,
};

/// How long a disconnected WSMan shell waits for a client when the session has no idleTimeout:
/// WinRM's default IdleTimeout.
const SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);

/// First retry delay exponent for failures a retry cannot fix soon (credentials, host key): 32 s.
const PERMANENT_BACKOFF_OFFSET: u32 = 5;

/// What the controllers see of a session.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerState {
    pub state: RunspaceState,
    pub availability: Availability,
    pub reason: Reason,
    pub message: String,
    /// Failed opens since the session was last open.
    pub attempts: u32,
    pub instance_id: Option<String>,
    /// The WS-Management shell and client session (what a later Connect needs), published
    /// before the open so that a crash during it leaves them on record.
    pub shell_id: Option<String>,
    pub wsman_session_id: Option<String>,
    pub protocol_version: Option<String>,
    pub opened_at: Option<Timestamp>,
    pub last_activity: Option<Timestamp>,
    pub idle_expires_at: Option<Timestamp>,
    pub current_job: Option<String>,
    /// The runspace the current one replaced: its state (variables, modules) is gone.
    pub replaced_instance: Option<String>,
}

impl WorkerState {
    fn opening() -> Self {
        WorkerState {
            state: RunspaceState::Opening,
            availability: Availability::None,
            reason: Reason::Opening,
            message: "opening the session".into(),
            attempts: 0,
            instance_id: None,
            shell_id: None,
            wsman_session_id: None,
            protocol_version: None,
            opened_at: None,
            last_activity: None,
            idle_expires_at: None,
            current_job: None,
            replaced_instance: None,
        }
    }
}

pub(super) enum Command {
    SetQueued(bool),
    /// `spec.desiredState`: true for Disconnected.
    SetDisconnected(bool),
    StartJob {
        request: JobRequest,
        reply: oneshot::Sender<Result<Arc<JobRun>, StartError>>,
    },
    Shutdown {
        close_within: Duration,
        /// Disconnect a WSMan session instead of closing it (the operator stops, not the session).
        disconnect: bool,
        done: oneshot::Sender<CloseOutcome>,
    },
}

struct Shutdown {
    close_within: Duration,
    disconnect: bool,
    done: Option<oneshot::Sender<CloseOutcome>>,
}

enum Next {
    Open,
    Serve,
    /// Disconnected because the spec asks it; the host keeps the shell.
    Disconnected,
    IdleClosed,
    Stop(Shutdown),
}

struct RunningJob {
    run: Arc<JobRun>,
    done: oneshot::Receiver<()>,
}

pub(super) struct Worker {
    key: ObjectKey,
    target: SessionTarget,
    commands: mpsc::UnboundedReceiver<Command>,
    state: watch::Sender<WorkerState>,
    observer: Arc<dyn Observer>,
    jobs: Arc<Mutex<HashMap<String, Arc<JobRun>>>>,
    session: Option<Arc<Session>>,
    job: Option<RunningJob>,
    queued: bool,
    /// `desiredState: Disconnected` (WSMan).
    want_disconnected: bool,
    /// The runspace that was open before, when the next open replaces it.
    previous_instance: Option<String>,
}

impl Worker {
    pub(super) fn new(
        key: ObjectKey,
        target: SessionTarget,
        commands: mpsc::UnboundedReceiver<Command>,
        observer: Arc<dyn Observer>,
        jobs: Arc<Mutex<HashMap<String, Arc<JobRun>>>>,
    ) -> (Self, watch::Receiver<WorkerState>) {
        let (state, receiver) = watch::channel(WorkerState::opening());
        let previous_instance = target.previous_instance.clone();
        let want_disconnected = target.disconnected;
        let worker = Worker {
            key,
            target,
            commands,
            state,
            observer,
            jobs,
            session: None,
            job: None,
            queued: false,
            want_disconnected,
            previous_instance,
        };
        (worker, receiver)
    }

    pub(super) async fn run(mut self) {
        let mut next = Next::Open;
        loop {
            next = match next {
                Next::Open => self.open().await,
                Next::Serve => self.serve().await,
                Next::IdleClosed => self.wait_while_closed().await,
                Next::Disconnected => self.wait_while_disconnected().await,
                Next::Stop(shutdown) => {
                    self.stop(shutdown).await;
                    return;
                }
            };
        }
    }

    fn publish(&self, change: impl FnOnce(&mut WorkerState)) {
        let changed = self.state.send_if_modified(|state| {
            let before = state.clone();
            change(state);
            *state != before
        });
        if changed {
            self.observer.session_changed(&self.key);
        }
    }

    fn event(&self, reason: Reason, warning: bool, message: String) {
        self.observer.session_event(
            &self.key,
            Transition {
                reason,
                warning,
                message,
            },
        );
    }

    /// Opens the session, retrying as PowerShell does, then (Broken) at a capped pace.
    async fn open(&mut self) -> Next {
        let mut attempt: u32 = 0;
        let mut broken = false;
        loop {
            let reconnecting = self.previous_instance.is_some() && !broken;
            self.publish(|s| {
                if !broken {
                    s.state = if reconnecting {
                        RunspaceState::Connecting
                    } else {
                        RunspaceState::Opening
                    };
                    if attempt == 0 {
                        s.reason = Reason::Opening;
                        s.message = format!("opening a session to {}", self.target.connection.address());
                    }
                }
                s.availability = Availability::None;
                s.idle_expires_at = None;
                s.current_job = None;
            });
            // A shell an earlier operator left: connecting keeps its state; only if that fails is a
            // new one opened. A shell to adopt (`attach`) is connected to on every attempt, and
            // nothing else is opened in its place.
            let connect_to = if self.target.attach {
                self.target.connect_to
            } else {
                self.target.connect_to.take()
            };
            let mut failed_connect = None;
            if let Some(shell) = connect_to {
                let started = Instant::now();
                let (connection, options) = (self.target.connection.clone(), self.target.options.clone());
                let connect = async move { connection.connect(shell, options).await };
                match self.while_down(connect).await {
                    Err(stop) => return Next::Stop(stop),
                    Ok(Ok(session)) => {
                        self.observer.session_opened(
                            self.target.connection.transport(),
                            "Connected",
                            started.elapsed(),
                        );
                        self.opened(session);
                        return Next::Serve;
                    }
                    Ok(Err(error)) if self.target.attach => failed_connect = Some((error, started)),
                    Ok(Err(error)) => {
                        info!(shell_id = %shell, reason = error.reason(), "could not connect to the shell left before; opening a new one");
                    }
                }
            }
            let (result, started) = match failed_connect {
                Some((error, started)) => (Err(error), started),
                None => {
                    // A WSMan shell's id is chosen here and on record before the Create goes out.
                    let shell_id = match &self.target.connection {
                        Connection::Wsman(wsman) => {
                            let shell_id = uuid::Uuid::new_v4();
                            let session_id = wsman.session_id.map(|id| id.to_string());
                            self.publish(|s| {
                                s.shell_id = Some(shell_id.to_string());
                                s.wsman_session_id = session_id;
                            });
                            Some(shell_id)
                        }
                        Connection::Ssh(_) => None,
                    };
                    let started = Instant::now();
                    let (connection, options) = (self.target.connection.clone(), self.target.options.clone());
                    let open = async move { connection.open(shell_id, options).await };
                    match self.while_down(open).await {
                        Ok(result) => (result, started),
                        Err(stop) => return Next::Stop(stop),
                    }
                }
            };
            match result {
                Ok(session) => {
                    self.observer.session_opened(
                        self.target.connection.transport(),
                        "Opened",
                        started.elapsed(),
                    );
                    self.opened(session);
                    return Next::Serve;
                }
                Err(error) => {
                    let reason = Reason::of_session_error(&error);
                    self.observer.session_opened(
                        self.target.connection.transport(),
                        reason.as_str(),
                        started.elapsed(),
                    );
                    attempt += 1;
                    let now_broken = reason.is_permanent() || attempt > self.target.max_retries;
                    let wait = if reason.is_permanent() {
                        backoff::delay(attempt + PERMANENT_BACKOFF_OFFSET, BROKEN_RETRY_CAP)
                    } else if now_broken {
                        backoff::delay(attempt, BROKEN_RETRY_CAP)
                    } else {
                        backoff::retry_delay(attempt)
                    };
                    self.failed_open(&error, reason, attempt, now_broken, broken, wait);
                    broken = now_broken;
                    let sleep = tokio::time::sleep(wait);
                    if let Err(stop) = self.while_down(sleep).await {
                        return Next::Stop(stop);
                    }
                }
            }
        }
    }

    fn failed_open(
        &self,
        error: &SessionError,
        reason: Reason,
        attempt: u32,
        now_broken: bool,
        was_broken: bool,
        wait: Duration,
    ) {
        let detail = format!("{error} ({})", error.reason());
        let retry = format!("next attempt in {}s", wait.as_secs().max(1));
        if now_broken {
            let shown = if reason.is_permanent() {
                reason
            } else {
                Reason::Broken
            };
            let message = if reason.is_permanent() {
                format!("{detail}; fix the cause; {retry}")
            } else {
                format!("{} attempts failed, the last: {detail}; {retry}", attempt)
            };
            warn!(reason = %shown, attempt, error = %error, "session broken");
            if !was_broken {
                self.event(shown, true, message.clone());
            }
            self.publish(|s| {
                s.state = RunspaceState::Broken;
                s.reason = shown;
                s.message = message;
                s.attempts = attempt;
            });
        } else {
            let message = format!(
                "attempt {attempt} of {} failed: {detail}; {retry}",
                self.target.max_retries + 1
            );
            info!(reason = %reason, attempt, error = %error, "open failed, retrying");
            self.event(reason, true, message.clone());
            self.publish(|s| {
                s.reason = reason;
                s.message = message;
                s.attempts = attempt;
            });
        }
    }

    /// Answers a command as a session that is not open does; `Some` when the worker must stop.
    /// A job asking to start means one is queued.
    fn answer_while_down(&mut self, command: Option<Command>) -> Option<Shutdown> {
        match command {
            None => Some(Shutdown {
                close_within: Duration::ZERO,
                disconnect: false,
                done: None,
            }),
            Some(Command::Shutdown {
                close_within,
                disconnect,
                done,
            }) => Some(Shutdown {
                close_within,
                disconnect,
                done: Some(done),
            }),
            Some(Command::SetQueued(queued)) => {
                self.queued = queued;
                None
            }
            Some(Command::SetDisconnected(wanted)) => {
                self.want_disconnected = wanted;
                None
            }
            Some(Command::StartJob { reply, .. }) => {
                self.queued = true;
                let _ = reply.send(Err(StartError::NotOpen));
                None
            }
        }
    }

    /// Runs `work` while answering commands as a session that is not open does.
    async fn while_down<T>(&mut self, work: impl Future<Output = T>) -> Result<T, Shutdown> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                result = &mut work => return Ok(result),
                command = self.commands.recv() => {
                    if let Some(stop) = self.answer_while_down(command) {
                        return Err(stop);
                    }
                }
            }
        }
    }

    fn opened(&mut self, session: Session) {
        let instance = session.instance_id().to_string();
        // Connected to the shell it had (WSMan): the same runspace, its state kept.
        let kept = self.previous_instance.as_deref() == Some(instance.as_str());
        let replaced = self.previous_instance.take().filter(|old| *old != instance);
        let now = Timestamp::now();
        info!(instance_id = %instance, replaced = ?replaced, "session opened");
        match &replaced {
            Some(old) => self.event(
                Reason::StateLost,
                true,
                format!(
                    "opened a new runspace {instance}; it replaces {old}, whose variables, functions and \
                     modules are gone"
                ),
            ),
            None if kept => self.event(
                Reason::Opened,
                false,
                format!("connected to runspace {instance}, which kept its state"),
            ),
            None => self.event(Reason::Opened, false, format!("opened runspace {instance}")),
        }
        let protocol_version = session.protocol_version();
        let (shell_id, wsman_session_id) = (
            session.shell_id().map(|id| id.to_string()),
            session.wsman_session_id().map(|id| id.to_string()),
        );
        self.session = Some(Arc::new(session));
        self.publish(|s| {
            s.state = RunspaceState::Opened;
            s.availability = Availability::Available;
            s.reason = Reason::Opened;
            s.message = match &replaced {
                Some(old) => format!(
                    "open; StateLost: runspace {instance} replaced {old}, whose state (variables, modules) is gone"
                ),
                None => "open".into(),
            };
            s.attempts = 0;
            s.instance_id = Some(instance.clone());
            if shell_id.is_some() {
                s.shell_id = shell_id;
                s.wsman_session_id = wsman_session_id;
            }
            s.protocol_version = protocol_version;
            s.opened_at = Some(now);
            s.last_activity = Some(now);
            s.replaced_instance = replaced;
        });
    }

    fn idle_deadline(&self) -> Option<(Instant, Timestamp)> {
        let idle = self.target.idle_timeout?;
        if self.job.is_some() || self.queued {
            return None;
        }
        let last = self.state.borrow().last_activity.unwrap_or_else(Timestamp::now);
        let at = last.checked_add(SignedDuration::try_from(idle).ok()?).ok()?;
        let from_now = at.duration_since(Timestamp::now()).unsigned_abs();
        let when = if at > Timestamp::now() {
            Instant::now() + from_now
        } else {
            Instant::now()
        };
        Some((when, at))
    }

    /// The open session: jobs, the idle rule, faults.
    async fn serve(&mut self) -> Next {
        let Some(session) = self.session.clone() else {
            return Next::Open;
        };
        let mut status = session.status();
        loop {
            // A running job finishes first; queued ones wait for Connected.
            if self.want_disconnected
                && self.job.is_none()
                && let Some(next) = self.disconnect_for_spec().await
            {
                return next;
            }
            let idle = self.idle_deadline();
            self.publish(|s| s.idle_expires_at = idle.map(|(_, at)| at));
            let job_done = async {
                match self.job.as_mut() {
                    Some(job) => {
                        let _ = (&mut job.done).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = status.changed() => {
                    // Only an end counts: a session just connected to may still pass through
                    // Connecting on its way to Opened.
                    let ended = changed.is_err() || {
                        use psrp::state::RunspacePoolState as Pool;
                        matches!(
                            status.borrow().state,
                            Pool::Broken | Pool::Closed | Pool::Closing | Pool::Disconnected
                        )
                    };
                    if ended {
                        let error = status.borrow().error.clone().unwrap_or(SessionError::ConnectionClosed);
                        self.lost(error);
                        return Next::Open;
                    }
                }
                _ = sleep_until(idle.map(|(at, _)| at)) => {
                    self.close_idle().await;
                    return Next::IdleClosed;
                }
                _ = job_done => self.job_ended(),
                command = self.commands.recv() => match command {
                    None => return Next::Stop(Shutdown { close_within: Duration::ZERO, disconnect: false, done: None }),
                    Some(Command::Shutdown { close_within, disconnect, done }) => {
                        return Next::Stop(Shutdown { close_within, disconnect, done: Some(done) });
                    }
                    Some(Command::SetQueued(queued)) => self.queued = queued,
                    Some(Command::SetDisconnected(wanted)) => self.want_disconnected = wanted,
                    Some(Command::StartJob { request, reply }) => {
                        let result = if self.want_disconnected {
                            Err(StartError::NotOpen)
                        } else {
                            self.start_job(&session, request)
                        };
                        let _ = reply.send(result);
                    }
                },
            }
        }
    }

    fn start_job(&mut self, session: &Arc<Session>, request: JobRequest) -> Result<Arc<JobRun>, StartError> {
        if self.job.is_some() {
            return Err(StartError::Busy);
        }
        let name = request.key.name.clone();
        let uid = request.key.uid.clone();
        let (done_tx, done) = oneshot::channel();
        let observer = self.observer.clone();
        let run = job::spawn(
            session.clone(),
            self.key.clone(),
            request,
            self.observer.clone(),
            move |run| {
                let (progress, _) = run.snapshot();
                let took = progress
                    .finished_at
                    .map(|end| end.duration_since(progress.started_at).unsigned_abs())
                    .unwrap_or_default();
                observer.job_finished(progress.phase, took);
                let _ = done_tx.send(());
            },
        );
        lock(&self.jobs).insert(uid, run.clone());
        info!(job = %name, "job started");
        self.job = Some(RunningJob {
            run: run.clone(),
            done,
        });
        self.publish(|s| {
            s.availability = Availability::Busy;
            s.current_job = Some(name);
            s.last_activity = Some(Timestamp::now());
        });
        Ok(run)
    }

    fn job_ended(&mut self) {
        self.job = None;
        self.publish(|s| {
            s.availability = Availability::Available;
            s.current_job = None;
            s.last_activity = Some(Timestamp::now());
        });
    }

    fn lost(&mut self, error: SessionError) {
        let reason = Reason::of_session_error(&error);
        warn!(reason = %reason, error = %error, "session lost");
        self.previous_instance = self.state.borrow().instance_id.clone();
        self.session = None;
        // The job's own task sees the loss and ends the job SessionLost.
        self.job = None;
        self.event(
            reason,
            true,
            format!(
                "the connection was lost: {error} ({}); reconnecting",
                error.reason()
            ),
        );
        self.publish(|s| {
            s.state = RunspaceState::Connecting;
            s.availability = Availability::None;
            s.reason = reason;
            s.message = format!("connection lost: {error}; reconnecting");
            s.current_job = None;
            s.idle_expires_at = None;
        });
    }

    /// Disconnect-PSSession: the host keeps the shell (and what it buffers) for the server-side
    /// idle timeout; the next operator connects to it by the shellId in status. SSH has no
    /// disconnect: its session is closed.
    async fn disconnect_session(&mut self, within: Duration) -> CloseOutcome {
        let Connection::Wsman(wsman) = &self.target.connection else {
            return self.close_session(within).await;
        };
        let Some(session) = self.session.take() else {
            return CloseOutcome::NotOpen;
        };
        let idle = self
            .target
            .idle_timeout
            .unwrap_or(SERVER_IDLE_TIMEOUT)
            .max(psrp::session::wsman::MIN_IDLE_TIMEOUT);
        match tokio::time::timeout(within, session.disconnect(idle, wsman.buffer_mode)).await {
            Ok(Ok(())) => {
                info!(idle_timeout = ?idle, "session disconnected for the next operator");
                CloseOutcome::Disconnected
            }
            Ok(Err(error)) => {
                warn!(
                    reason = error.reason(),
                    "disconnect failed; the shell is left as it is"
                );
                CloseOutcome::GaveUp
            }
            Err(_) => CloseOutcome::GaveUp,
        }
    }

    async fn close_session(&mut self, within: Duration) -> CloseOutcome {
        let Some(session) = self.session.take() else {
            return CloseOutcome::NotOpen;
        };
        match Arc::try_unwrap(session) {
            Ok(session) => match tokio::time::timeout(within, session.close()).await {
                Ok(Ok(())) => CloseOutcome::Closed,
                Ok(Err(error)) => {
                    debug!(reason = error.reason(), "close failed");
                    CloseOutcome::GaveUp
                }
                Err(_) => CloseOutcome::GaveUp,
            },
            // A job task still holds it: dropping ours ends the connection once it lets go.
            Err(_) => CloseOutcome::GaveUp,
        }
    }

    /// Disconnect-PSSession because the spec says `desiredState: Disconnected`. `None` when the
    /// session cannot be disconnected (SSH: admission refuses that spec) and goes on serving.
    async fn disconnect_for_spec(&mut self) -> Option<Next> {
        let Connection::Wsman(wsman) = &self.target.connection else {
            self.want_disconnected = false;
            return None;
        };
        let session = self.session.clone()?;
        let idle = self
            .target
            .idle_timeout
            .unwrap_or(SERVER_IDLE_TIMEOUT)
            .max(psrp::session::wsman::MIN_IDLE_TIMEOUT);
        self.publish(|s| {
            s.availability = Availability::None;
            s.idle_expires_at = None;
        });
        let within = self.target.options.operation_timeout;
        match tokio::time::timeout(within, session.disconnect(idle, wsman.buffer_mode)).await {
            Ok(Ok(())) => {
                info!(idle_timeout = ?idle, "session disconnected as the spec asks");
                self.event(
                    Reason::Disconnected,
                    false,
                    format!(
                        "disconnected (desiredState: Disconnected); the host keeps the shell for {}s",
                        idle.as_secs()
                    ),
                );
                self.publish(|s| {
                    s.state = RunspaceState::Disconnected;
                    s.reason = Reason::Disconnected;
                    s.message =
                        "disconnected as desiredState asks; the host keeps the shell and its state".into();
                });
                Some(Next::Disconnected)
            }
            Ok(Err(error)) => {
                self.lost(error);
                Some(Next::Open)
            }
            Err(_) => {
                self.lost(SessionError::OperationTimeout {
                    what: "Disconnect",
                    timeout: within,
                });
                Some(Next::Open)
            }
        }
    }

    /// Disconnected as the spec asks: waits for Connected (Connect-PSSession from this same
    /// client: the shell's state and buffered output come back) or for the end.
    async fn wait_while_disconnected(&mut self) -> Next {
        loop {
            if !self.want_disconnected {
                let Some(session) = self.session.clone() else {
                    return Next::Open;
                };
                self.publish(|s| {
                    s.state = RunspaceState::Connecting;
                    s.reason = Reason::Opening;
                    s.message = "connecting again (desiredState: Connected)".into();
                });
                let within = self.target.options.operation_timeout;
                return match tokio::time::timeout(within, session.reconnect()).await {
                    Ok(Ok(())) => {
                        info!("session connected again as the spec asks");
                        self.event(
                            Reason::Opened,
                            false,
                            "connected again (desiredState: Connected)".into(),
                        );
                        self.publish(|s| {
                            s.state = RunspaceState::Opened;
                            s.availability = Availability::Available;
                            s.reason = Reason::Opened;
                            s.message = "open".into();
                            s.last_activity = Some(Timestamp::now());
                        });
                        Next::Serve
                    }
                    Ok(Err(error)) => {
                        self.lost(error);
                        Next::Open
                    }
                    Err(_) => {
                        self.lost(SessionError::OperationTimeout {
                            what: "Reconnect",
                            timeout: within,
                        });
                        Next::Open
                    }
                };
            }
            let command = self.commands.recv().await;
            if let Some(stop) = self.answer_while_down(command) {
                return Next::Stop(stop);
            }
        }
    }

    async fn close_idle(&mut self) {
        let idle = self.target.idle_timeout.unwrap_or_default();
        self.publish(|s| {
            s.state = RunspaceState::Closing;
            s.availability = Availability::None;
            s.idle_expires_at = None;
        });
        self.previous_instance = self.state.borrow().instance_id.clone();
        let within = self.target.options.operation_timeout;
        let outcome = self.close_session(within).await;
        let message = format!(
            "closed after {}s without jobs (idleTimeout); the next PSJob reopens it in a new runspace",
            idle.as_secs()
        );
        info!(outcome = ?outcome, "closed by the idle rule");
        self.event(Reason::IdleClosed, false, message.clone());
        self.publish(|s| {
            s.state = RunspaceState::Closed;
            s.reason = Reason::IdleClosed;
            s.message = message;
        });
    }

    /// Closed by the idle rule: reopens when a job is queued.
    async fn wait_while_closed(&mut self) -> Next {
        loop {
            if self.queued {
                return Next::Open;
            }
            let command = self.commands.recv().await;
            if let Some(stop) = self.answer_while_down(command) {
                return Next::Stop(stop);
            }
        }
    }

    /// Stops a running job, then closes the session politely within the bound (or, when the
    /// operator itself stops, disconnects a WSMan session for the next one), then ends.
    async fn stop(&mut self, shutdown: Shutdown) {
        let started = Instant::now();
        if let Some(job) = self.job.take() {
            job.run.request_stop();
            let _ = tokio::time::timeout(shutdown.close_within / 2, job.done).await;
        }
        let left = shutdown.close_within.saturating_sub(started.elapsed());
        let outcome = if left.is_zero() {
            self.session = None;
            CloseOutcome::GaveUp
        } else if shutdown.disconnect && self.state.borrow().state == RunspaceState::Disconnected {
            // Already disconnected as the spec asked: leave it so.
            self.session = None;
            CloseOutcome::Disconnected
        } else if shutdown.disconnect {
            self.disconnect_session(left).await
        } else {
            self.close_session(left).await
        };
        self.publish(|s| {
            if outcome == CloseOutcome::Disconnected {
                s.state = RunspaceState::Disconnected;
                s.reason = Reason::Disconnected;
            } else {
                s.state = RunspaceState::Closed;
                s.reason = Reason::Closing;
            }
            s.availability = Availability::None;
            s.current_job = None;
            s.idle_expires_at = None;
        });
        if let Some(done) = shutdown.done {
            let _ = done.send(outcome);
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

//! The live remote sessions, keyed by their PSSession's uid.
//!
//! Each session is a worker task ([`worker`]) that opens, keeps, retries and closes one remoting
//! session and runs the jobs it is given ([`job`]). Reconcilers never wait on the remote host: they
//! read a worker's last published state and send it short commands; workers and jobs tell the
//! controllers that something changed through an [`Observer`]. This module knows Kubernetes objects
//! only by namespace, name and uid.

pub mod backoff;
pub mod job;
mod worker;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use psrp::{
    session::{Session, SessionError, SessionOptions, WsmanSessionConfig},
    transport::ssh::SshConfig,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, info_span, warn};

pub use job::{JobPhase, JobProgress, JobRequest, JobRun, StreamKind};
pub use worker::WorkerState;

use crate::reason::Reason;
use worker::{Command, Worker};

/// A namespaced object, as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, uid: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }
}

/// Something that happened to a session that a person may want to read about (an Event).
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub reason: Reason,
    pub warning: bool,
    pub message: String,
}

/// How workers and jobs tell the controllers about changes. Calls must not block.
pub trait Observer: Send + Sync + 'static {
    fn session_changed(&self, session: &ObjectKey);
    fn session_event(&self, session: &ObjectKey, transition: Transition);
    fn job_changed(&self, job: &ObjectKey);
    /// Whether the PSJob still exists (from the watch cache): a deleted job's pipeline is stopped.
    fn job_exists(&self, job: &ObjectKey) -> bool;
    fn session_opened(&self, _transport: &'static str, _result: &'static str, _took: Duration) {}
    fn job_finished(&self, _phase: JobPhase, _took: Duration) {}
}

/// How a session reaches its host.
#[derive(Clone, Debug)]
pub enum Connection {
    /// The `powershell` subsystem of an SSH server: every open is a new runspace.
    Ssh(SshConfig),
    /// A WS-Management shell (WinRM).
    Wsman(WsmanSessionConfig),
}

impl Connection {
    /// Where, for messages.
    pub fn address(&self) -> String {
        match self {
            Connection::Ssh(ssh) => ssh.address(),
            Connection::Wsman(wsman) => wsman.transport.url(),
        }
    }

    /// The transport's name, as the API spells it (and metrics label it).
    pub fn transport(&self) -> &'static str {
        match self {
            Connection::Ssh(_) => "SSH",
            Connection::Wsman(_) => "WSMan",
        }
    }

    /// Connects to a WSMan shell left by an earlier client (Connect-PSSession). Pipelines still
    /// running there are dropped, which stops them.
    async fn connect(&self, shell_id: uuid::Uuid, options: SessionOptions) -> Result<Session, SessionError> {
        match self {
            Connection::Ssh(_) => Err(SessionError::Unsupported("connecting to an SSH session")),
            Connection::Wsman(wsman) => {
                let (session, left_running) = Session::connect_wsman(wsman, shell_id, options).await?;
                drop(left_running);
                Ok(session)
            }
        }
    }

    /// Opens a new runspace. Over WSMan the shell gets `shell_id`, which the caller published
    /// before, so a crash during the open still leaves a trace of the shell.
    async fn open(
        &self,
        shell_id: Option<uuid::Uuid>,
        options: SessionOptions,
    ) -> Result<Session, SessionError> {
        match self {
            Connection::Ssh(ssh) => Session::open_ssh(ssh, options).await,
            Connection::Wsman(wsman) => {
                let mut wsman = wsman.clone();
                wsman.shell_id = shell_id;
                Session::open_wsman(&wsman, options).await
            }
        }
    }
}

/// What a worker needs to open its session.
#[derive(Clone, Debug)]
pub struct SessionTarget {
    pub connection: Connection,
    pub options: SessionOptions,
    pub idle_timeout: Option<Duration>,
    pub max_retries: u32,
    /// Identifies the spec and Secret versions this target was built from.
    pub fingerprint: String,
    /// The runspace a previous operator (or worker) had open: the next open replaces it.
    pub previous_instance: Option<String>,
    /// A WSMan shell an earlier operator left (disconnected, or dropped by a crash): the first
    /// attempt connects to it, keeping its state, before opening a new one.
    pub connect_to: Option<uuid::Uuid>,
    /// `attach`: `connect_to` is a shell made elsewhere to adopt; nothing else is opened instead.
    pub attach: bool,
    /// `desiredState: Disconnected` when the worker starts (later changes: [`Registry::set_disconnected`]).
    pub disconnected: bool,
}

/// Why a job could not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StartError {
    #[error("the session is not known to the operator")]
    NoSession,
    #[error("the session is not open")]
    NotOpen,
    #[error("another job runs in the session")]
    Busy,
}

/// What happened when a session was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    Closed,
    /// A WSMan shell left on the host, disconnected, for the next operator to connect to.
    Disconnected,
    /// The remote side did not confirm within the bound; the connection was dropped.
    GaveUp,
    NotOpen,
}

struct Entry {
    fingerprint: String,
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<WorkerState>,
}

/// The sessions and jobs this operator process runs. No global state: one per process (or test).
pub struct Registry {
    observer: Arc<dyn Observer>,
    sessions: Mutex<HashMap<String, Entry>>,
    jobs: Arc<Mutex<HashMap<String, Arc<JobRun>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    pub fn new(observer: Arc<dyn Observer>) -> Self {
        Registry {
            observer,
            sessions: Mutex::new(HashMap::new()),
            jobs: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The fingerprint of the running worker's target, if a worker runs for `uid`.
    pub fn fingerprint(&self, uid: &str) -> Option<String> {
        lock(&self.sessions).get(uid).map(|e| e.fingerprint.clone())
    }

    /// Starts a worker for the session with this target, replacing one that ran with another.
    /// The replaced worker closes its session in the background.
    pub fn start_session(&self, key: ObjectKey, target: SessionTarget) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let fingerprint = target.fingerprint.clone();
        let span = info_span!("pssession", namespace = %key.namespace, name = %key.name);
        let (worker, state) = Worker::new(
            key.clone(),
            target,
            receiver,
            self.observer.clone(),
            self.jobs.clone(),
        );
        tokio::spawn(worker.run().instrument(span));
        let old = lock(&self.sessions).insert(
            key.uid.clone(),
            Entry {
                fingerprint,
                commands,
                state,
            },
        );
        if let Some(old) = old {
            let (done, _) = oneshot::channel();
            let _ = old.commands.send(Command::Shutdown {
                close_within: Duration::from_secs(10),
                disconnect: false,
                done,
            });
        }
    }

    /// The worker's last published state.
    pub fn session_state(&self, uid: &str) -> Option<WorkerState> {
        lock(&self.sessions).get(uid).map(|e| e.state.borrow().clone())
    }

    fn send(&self, uid: &str, command: Command) -> bool {
        lock(&self.sessions)
            .get(uid)
            .is_some_and(|e| e.commands.send(command).is_ok())
    }

    /// Tells the worker whether jobs wait for it (the idle rule must not close it then) and
    /// reopens a session the idle rule closed when they do.
    pub fn set_queued(&self, uid: &str, queued: bool) {
        self.send(uid, Command::SetQueued(queued));
    }

    /// `spec.desiredState`: a WSMan session is disconnected (once no job runs) or connected again.
    /// Not part of the target's fingerprint, so a change never reopens the session.
    pub fn set_disconnected(&self, uid: &str, disconnected: bool) {
        self.send(uid, Command::SetDisconnected(disconnected));
    }

    /// Starts a job in the session: only when it is open and no other job runs.
    pub async fn start_job(&self, session_uid: &str, request: JobRequest) -> Result<Arc<JobRun>, StartError> {
        let (reply, answer) = oneshot::channel();
        if !self.send(session_uid, Command::StartJob { request, reply }) {
            return Err(StartError::NoSession);
        }
        answer.await.unwrap_or(Err(StartError::NoSession))
    }

    /// The job's run, while this process has it.
    pub fn job(&self, job_uid: &str) -> Option<Arc<JobRun>> {
        lock(&self.jobs).get(job_uid).cloned()
    }

    /// The uids of the runs that have ended (their pipelines are done; only the report remains).
    pub fn finished_jobs(&self) -> Vec<String> {
        lock(&self.jobs)
            .iter()
            .filter(|(_, run)| run.is_final())
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// Drops a finished job's run once its final status is written.
    pub fn forget_job(&self, job_uid: &str) {
        lock(&self.jobs).remove(job_uid);
    }

    /// Closes the remote session and ends its worker: a running job is stopped first. Waits at most
    /// `within` for the remote side, then drops the connection.
    pub async fn remove_session(&self, uid: &str, within: Duration) -> CloseOutcome {
        self.end_session(uid, within, false).await
    }

    /// Ends the worker; `disconnect`: a WSMan session is disconnected instead of closed (the
    /// operator is stopping, not the session: the next one connects to it).
    async fn end_session(&self, uid: &str, within: Duration, disconnect: bool) -> CloseOutcome {
        let Some(entry) = lock(&self.sessions).remove(uid) else {
            return CloseOutcome::NotOpen;
        };
        let (done, outcome) = oneshot::channel();
        if entry
            .commands
            .send(Command::Shutdown {
                close_within: within,
                disconnect,
                done,
            })
            .is_err()
        {
            return CloseOutcome::NotOpen;
        }
        // The worker bounds its own wait; this bound only guards against a worker that is gone.
        match tokio::time::timeout(within + Duration::from_secs(5), outcome).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => CloseOutcome::NotOpen,
            Err(_) => {
                warn!(uid, "session worker did not confirm its shutdown");
                CloseOutcome::GaveUp
            }
        }
    }

    /// Closes every session (graceful stop), each bounded by `within`, all at once.
    /// The operator stops: SSH sessions are closed (they cannot outlive their connection), WSMan
    /// sessions disconnected, so the next operator (a restart, a new leader) connects to them.
    pub async fn shutdown(&self, within: Duration) {
        let uids: Vec<String> = lock(&self.sessions).keys().cloned().collect();
        let ending = uids.iter().map(|uid| self.end_session(uid, within, true));
        futures::future::join_all(ending).await;
    }

    /// Sessions by their state, for metrics.
    pub fn count(&self) -> usize {
        lock(&self.sessions).len()
    }
}

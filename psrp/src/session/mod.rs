//! The async facade the controllers use: one runspace pool over one connection.
//!
//! A [`Session`] joins the sans-IO [`RunspacePool`] to the out-of-process
//! framing ([`crate::transport::outofproc`]) over any `AsyncRead + AsyncWrite` byte stream, or over
//! the SSH `powershell` subsystem ([`Session::open_ssh`]), or to a WS-Management shell
//! ([`Session::open_wsman`], [`Session::connect_wsman`]; see [`wsman`] for what differs there:
//! disconnect and connect, persist-before-acknowledge with [`PipelineHandle::next_batch`]). One
//! background task per session owns the pool and the stream; the [`Session`] and its
//! [`PipelineHandle`]s talk to it over channels. There is no global state: every session is its
//! own task, its own connection and its own pool.
//!
//! # What runs when
//!
//! - One pipeline at a time, as PowerShell runs one command per runspace. [`Session::invoke`] waits
//!   its turn: calls are served in the order they were made, each once the pipeline before it has
//!   ended. Dropping an `invoke` future gives up its place in the queue.
//! - [`SessionStatus::availability`] is `Available` while the pool is open and idle, `Busy` from the
//!   moment a pipeline is being created until its final state arrives, `None` otherwise.
//! - `open_timeout` bounds [`Session::open_ssh`] / [`Session::open_stream`] as a whole;
//!   `operation_timeout` bounds each exchange that waits for the server's acknowledgement (Data,
//!   Command, Signal, Close) and the wait for a stopped pipeline's final state. A running script is
//!   not bounded: that is the caller's business ([`PipelineHandle::stop`]). A missed acknowledgement
//!   leaves the connection in an unknown state, so the session ends with
//!   [`SessionError::OperationTimeout`].
//!
//! # Lifetimes and cancellation
//!
//! - Dropping the [`Session`] ends the task and drops the connection at once (over SSH the remote
//!   runspace dies with it); a pipeline still running then ends with
//!   [`PipelineEvent::Lost`]`(`[`SessionError::Closed`]`)`. [`Session::close`] closes politely: the
//!   server stops what runs, closes the pool, then the transport is closed.
//! - Dropping a [`PipelineHandle`] of a running pipeline stops it (OutOfProc `<Signal>`); its
//!   remaining records are discarded.
//! - When the connection fails, the pipeline's handle gets [`PipelineEvent::Lost`] with the typed
//!   reason after every record received before; [`PipelineHandle::collect`] returns them in
//!   [`CollectError::partial`].
//!
//! # Out-of-process rules followed (PowerShell's `OutOfProcTransportManager`)
//!
//! Pool data goes as `<Data PSGuid='00000000-…'>` and the server answers it before its `<DataAck>`. A
//! pipeline is announced with `<Command PSGuid=id/>` and its CREATE_PIPELINE follows in `<Data
//! PSGuid=id>` once `<CommandAck>` arrived; its output follows that Data's `<DataAck>`. Each Data
//! packet holds whole fragments (at most `max_fragment_size` bytes of them), and, as PowerShell does,
//! the next Data packet of a pool or pipeline goes once the previous one was acknowledged. Stop is
//! `<Signal PSGuid=id/>` → `<SignalAck>`; an ended pipeline is closed with `<Close PSGuid=id/>` →
//! `<CloseAck>`; the pool with `<Close PSGuid='00000000-…'/>` → `<CloseAck>`. Host call answers go
//! on `Stream='PromptResponse'`. The server's Data for the pool and for pipelines share one
//! defragmenter: servers send whole fragments per packet, which is what makes that safe.

mod actor;
#[cfg(test)]
mod tests;
pub mod wsman;

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use thiserror::Error;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    sync::{Notify, mpsc, oneshot, watch},
    time::Instant,
};
use uuid::Uuid;

use crate::{
    clixml::{ErrorRecord, InformationRecord, InformationalRecord, ProgressRecord, PsObject, PsValue},
    messages::{Command, CreatePipeline, HostCall},
    pool::{PoolError, PoolOptions, RunspacePool, Stream},
    state::{Availability, PipelineState, RunspacePoolState},
    transport::{
        outofproc::{PacketError, PacketKind},
        ssh::{SshConfig, SshError, SshSubsystem, open_subsystem},
    },
    wsman::BufferMode,
};

use actor::{Actor, Closer, Request};

pub use wsman::{WsmanFailure, WsmanSessionConfig, delete_shell, list_shells};

/// How a session opens and how long it waits.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    pub pool: PoolOptions,
    /// Bounds the whole open: SSH connect and authentication included, up to the pool's Opened.
    pub open_timeout: Duration,
    /// Bounds each wait for an acknowledgement from the server (not a running script).
    pub operation_timeout: Duration,
}

impl Default for SessionOptions {
    /// New-PSSessionOption's defaults: 3 minutes each.
    fn default() -> Self {
        SessionOptions {
            pool: PoolOptions::default(),
            open_timeout: Duration::from_secs(180),
            operation_timeout: Duration::from_secs(180),
        }
    }
}

/// What a watcher sees of a session.
#[derive(Debug, Clone)]
pub struct SessionStatus {
    /// PowerShell's runspace state (the negotiation states show as `Opening`).
    pub state: RunspacePoolState,
    pub availability: Availability,
    /// Why the session ended, when it failed.
    pub error: Option<SessionError>,
    /// WS-Management: the shell's id (the runspace pool's id), known from the Create (or Connect)
    /// on, before any command. `None` over SSH.
    pub shell_id: Option<Uuid>,
    /// WS-Management: the `wsmv:SessionId` every request of this client carries; what a
    /// Reconnect needs besides the shell id. `None` over SSH.
    pub wsman_session_id: Option<Uuid>,
}

impl SessionStatus {
    fn opening() -> Self {
        SessionStatus {
            state: RunspacePoolState::Opening,
            availability: Availability::None,
            error: None,
            shell_id: None,
            wsman_session_id: None,
        }
    }

    fn same_as(&self, other: &SessionStatus) -> bool {
        self.state == other.state
            && self.availability == other.availability
            && self.shell_id == other.shell_id
            && self.wsman_session_id == other.wsman_session_id
            && self.error.as_ref().map(SessionError::reason) == other.error.as_ref().map(SessionError::reason)
    }
}

/// Why a session could not open, or why it (or an operation on it) ended. Cheap to clone: it is
/// also the [`SessionStatus::error`] every watcher sees.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The SSH transport failed (its [`SshError::reason`] is kept).
    #[error(transparent)]
    Transport(SshError),
    /// Reading or writing the byte stream failed (a stream that is not SSH).
    #[error("the connection failed: {0}")]
    Io(Arc<io::Error>),
    /// The server ended the byte stream: the PowerShell process (or SSH subsystem) is gone.
    #[error("the server ended the connection: the remote PowerShell process exited")]
    ConnectionClosed,
    /// The server sent a line that is not an out-of-process packet.
    #[error("the server broke the out-of-process framing: {0}")]
    Framing(#[from] PacketError),
    /// The server sent a packet only a client sends.
    #[error("the server sent <{0}>, which only a client sends")]
    UnexpectedPacket(PacketKind),
    /// The server's messages do not fit the protocol.
    #[error("the server broke the PowerShell Remoting Protocol: {0}")]
    Protocol(Arc<PoolError>),
    #[error("the runspace pool did not open within {0:?}")]
    OpenTimeout(Duration),
    #[error("no {what} from the server within {timeout:?}")]
    OperationTimeout { what: &'static str, timeout: Duration },
    /// The server reported the runspace pool Broken; `message` is its error record's.
    #[error("the runspace pool is broken: {message}")]
    Broken { message: String },
    /// The server closed the runspace pool without being asked.
    #[error("the server closed the runspace pool")]
    ClosedByServer,
    /// This client closed (or dropped) the session.
    #[error("the session is closed")]
    Closed,
    /// The WS-Management transport failed (HTTP, authentication, TLS) or the server answered with
    /// a fault; [`WsmanFailure::reason`] names which.
    #[error(transparent)]
    Wsman(WsmanFailure),
    /// The transport cannot do what was asked (a Disconnect over SSH, which has none).
    #[error("{0}")]
    Unsupported(&'static str),
    /// The operation does not fit the session's state now (a Reconnect of a connected session).
    #[error("the session is {state}, which does not allow {action}")]
    InvalidState {
        state: RunspacePoolState,
        action: &'static str,
    },
}

impl SessionError {
    /// A stable CamelCase name: what condition reasons, events and metric labels use. For
    /// [`SessionError::Transport`], the SSH error's own ([`SshError::reason`]).
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::Transport(e) => e.reason(),
            SessionError::Io(_) => "ConnectionFailed",
            SessionError::ConnectionClosed => "ConnectionClosed",
            SessionError::Framing(_) | SessionError::UnexpectedPacket(_) => "FramingError",
            SessionError::Protocol(_) => "ProtocolError",
            SessionError::OpenTimeout(_) => "OpenTimeout",
            SessionError::OperationTimeout { .. } => "OperationTimeout",
            SessionError::Broken { .. } => "Broken",
            SessionError::ClosedByServer => "ClosedByServer",
            SessionError::Closed => "Closed",
            SessionError::Wsman(e) => e.reason(),
            SessionError::Unsupported(_) => "Unsupported",
            SessionError::InvalidState { .. } => "InvalidState",
        }
    }

    /// True when opening again with the same configuration cannot help (host key, credentials).
    /// A WS-Management quota (`QuotaExceeded`) is not permanent: shells end, and a retry opens.
    pub fn is_permanent(&self) -> bool {
        match self {
            SessionError::Transport(e) => e.is_permanent(),
            SessionError::Wsman(e) => e.is_permanent(),
            SessionError::Unsupported(_) => true,
            _ => false,
        }
    }

    /// The error a failed read or write of the stream means.
    fn from_io(error: io::Error) -> Self {
        match SshError::from_io(&error) {
            Some(ssh) => SessionError::Transport(ssh.clone()),
            None => SessionError::Io(Arc::new(error)),
        }
    }
}

impl From<SshError> for SessionError {
    fn from(error: SshError) -> Self {
        SessionError::Transport(error)
    }
}

impl From<PoolError> for SessionError {
    fn from(error: PoolError) -> Self {
        SessionError::Protocol(Arc::new(error))
    }
}

/// What happens to a pipeline, in order. After a final [`PipelineEvent::State`] or a
/// [`PipelineEvent::Lost`], nothing more comes.
#[derive(Debug, Clone)]
pub enum PipelineEvent {
    /// An object on the output stream, as sent.
    Output(PsValue),
    /// A record on the error stream (`Write-Error`, a statement-terminating error).
    Error(ErrorRecord),
    Warning(InformationalRecord),
    Verbose(InformationalRecord),
    Debug(InformationalRecord),
    Information(InformationRecord),
    Progress(ProgressRecord),
    /// The pipeline changed state; `error` is the record of a Failed (or Stopped) pipeline.
    State {
        state: PipelineState,
        error: Option<ErrorRecord>,
    },
    /// The server called a host method; it was answered already (a prompt is refused with an
    /// error record: this host is not interactive).
    HostCall(HostCall),
    /// The session failed or was closed under the pipeline: its end is unknown here. Over SSH the
    /// remote runspace dies with the connection.
    Lost(SessionError),
}

impl PipelineEvent {
    /// A record of `stream`, read leniently: a record that is not the object PowerShell sends is
    /// kept as a record whose message is the value's text.
    pub fn record(stream: Stream, value: PsValue) -> Self {
        let fallback = |value: &PsValue| PsObject {
            to_string: Some(crate::clixml::to_text(value)),
            ..PsObject::default()
        };
        let informational = |value: &PsValue| {
            InformationalRecord::from_value(value)
                .unwrap_or_else(|_| InformationalRecord::from_object(&fallback(value)))
        };
        match stream {
            Stream::Output => PipelineEvent::Output(value),
            Stream::Error => PipelineEvent::Error(error_record(&value)),
            Stream::Warning => PipelineEvent::Warning(informational(&value)),
            Stream::Verbose => PipelineEvent::Verbose(informational(&value)),
            Stream::Debug => PipelineEvent::Debug(informational(&value)),
            Stream::Information => {
                PipelineEvent::Information(InformationRecord::from_value(&value).unwrap_or_else(|_| {
                    InformationRecord {
                        message_data: value.clone(),
                        source: None,
                        time_generated: None,
                        tags: Vec::new(),
                        user: None,
                        computer: None,
                        process_id: None,
                        native_thread_id: None,
                        managed_thread_id: None,
                    }
                }))
            }
            Stream::Progress => {
                PipelineEvent::Progress(ProgressRecord::from_value(&value).unwrap_or_else(|_| {
                    ProgressRecord {
                        activity: crate::clixml::to_text(&value),
                        ..ProgressRecord::default()
                    }
                }))
            }
        }
    }

    /// Whether nothing comes after this event.
    pub fn is_last(&self) -> bool {
        match self {
            PipelineEvent::State { state, .. } => state.is_final(),
            PipelineEvent::Lost(_) => true,
            _ => false,
        }
    }
}

/// An error record from the server, read leniently: anything that is not the object PowerShell
/// sends becomes a record whose message is the value's text.
fn error_record(value: &PsValue) -> ErrorRecord {
    ErrorRecord::from_value(value).unwrap_or_else(|_| {
        ErrorRecord::from_object(&PsObject {
            to_string: Some(crate::clixml::to_text(value)),
            ..PsObject::default()
        })
    })
}

/// Everything a pipeline produced, by stream, and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOutcome {
    /// The final state; in [`CollectError::partial`], the last state known.
    pub state: PipelineState,
    /// The record of a Failed (or Stopped) pipeline.
    pub error: Option<ErrorRecord>,
    pub output: Vec<PsValue>,
    pub errors: Vec<ErrorRecord>,
    pub warnings: Vec<InformationalRecord>,
    pub verbose: Vec<InformationalRecord>,
    pub debug: Vec<InformationalRecord>,
    pub information: Vec<InformationRecord>,
    pub progress: Vec<ProgressRecord>,
    pub host_calls: Vec<HostCall>,
}

impl Default for PipelineOutcome {
    fn default() -> Self {
        PipelineOutcome {
            state: PipelineState::NotStarted,
            error: None,
            output: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            verbose: Vec::new(),
            debug: Vec::new(),
            information: Vec::new(),
            progress: Vec::new(),
            host_calls: Vec::new(),
        }
    }
}

impl PipelineOutcome {
    /// PowerShell's `HadErrors`: the pipeline failed or wrote to the error stream.
    pub fn had_errors(&self) -> bool {
        self.state == PipelineState::Failed || !self.errors.is_empty()
    }

    /// Adds one event; returns the session error of a [`PipelineEvent::Lost`].
    fn add(&mut self, event: PipelineEvent) -> Option<SessionError> {
        match event {
            PipelineEvent::Output(v) => self.output.push(v),
            PipelineEvent::Error(r) => self.errors.push(r),
            PipelineEvent::Warning(r) => self.warnings.push(r),
            PipelineEvent::Verbose(r) => self.verbose.push(r),
            PipelineEvent::Debug(r) => self.debug.push(r),
            PipelineEvent::Information(r) => self.information.push(r),
            PipelineEvent::Progress(r) => self.progress.push(r),
            PipelineEvent::HostCall(call) => self.host_calls.push(call),
            PipelineEvent::State { state, error } => {
                self.state = state;
                if error.is_some() {
                    self.error = error;
                }
            }
            PipelineEvent::Lost(e) => return Some(e),
        }
        None
    }
}

/// A pipeline that did not end on its own: the session failed under it. What it produced until
/// then is in `partial`.
#[derive(Debug, Clone, Error)]
#[error("{error}")]
pub struct CollectError {
    pub error: SessionError,
    pub partial: Box<PipelineOutcome>,
}

/// One runspace pool over one connection. `Send + Sync`: share it behind an `Arc`.
#[derive(Debug)]
pub struct Session {
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<SessionStatus>,
    instance_id: Uuid,
    protocol_version: Option<String>,
}

impl Session {
    /// Opens the SSH `powershell` subsystem and a runspace pool in it, within
    /// `options.open_timeout` (the SSH config's own `connect_timeout` applies too).
    pub async fn open_ssh(ssh: &SshConfig, options: SessionOptions) -> Result<Session, SessionError> {
        let deadline = Instant::now() + options.open_timeout;
        let stream = match tokio::time::timeout_at(deadline, open_subsystem(ssh)).await {
            Ok(stream) => stream?,
            Err(_) => return Err(SessionError::OpenTimeout(options.open_timeout)),
        };
        let closer: Closer<SshSubsystem> = Box::new(|stream| {
            Box::pin(async move {
                if let Err(error) = stream.close().await {
                    tracing::debug!(reason = error.reason(), %error, "SSH close after the pool closed");
                }
            })
        });
        Self::start(stream, closer, options, deadline).await
    }

    /// Opens a runspace pool over a byte stream that speaks the out-of-process framing (a `pwsh -s`
    /// process's stdio, a socket to a server), within `options.open_timeout`. A polite close ends
    /// with the stream's `shutdown`.
    pub async fn open_stream<S>(stream: S, options: SessionOptions) -> Result<Session, SessionError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let deadline = Instant::now() + options.open_timeout;
        let closer: Closer<S> = Box::new(|mut stream| {
            Box::pin(async move {
                let _ = stream.shutdown().await;
            })
        });
        Self::start(stream, closer, options, deadline).await
    }

    async fn start<S>(
        stream: S,
        closer: Closer<S>,
        options: SessionOptions,
        deadline: Instant,
    ) -> Result<Session, SessionError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let pool = RunspacePool::new(options.pool.clone());
        let instance_id = pool.id();
        let (requests, requests_rx) = mpsc::channel(16);
        let (status_tx, status) = watch::channel(SessionStatus::opening());
        let (opened_tx, opened_rx) = oneshot::channel();
        let actor = Actor::new(
            pool,
            options,
            deadline,
            requests_rx,
            requests.downgrade(),
            status_tx,
            opened_tx,
        );
        // The task ends when `requests` (held here until the Session exists) is dropped, so an
        // abandoned open leaves nothing behind.
        let span = tracing::debug_span!("psrp_session", pool = %instance_id);
        tokio::spawn(tracing::Instrument::instrument(actor.run(stream, closer), span));
        match opened_rx.await {
            Ok(Ok(protocol_version)) => Ok(Session {
                requests,
                status,
                instance_id,
                protocol_version,
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(SessionError::Closed),
        }
    }

    /// The runspace pool's id (PowerShell's `InstanceId`; a WS-Management ShellId).
    pub fn instance_id(&self) -> Uuid {
        self.instance_id
    }

    /// The PSRP protocol version the server announced (`2.3` for PowerShell 5.1 and 7).
    pub fn protocol_version(&self) -> Option<String> {
        self.protocol_version.clone()
    }

    /// State, availability and the error that ended the session, as they change.
    pub fn status(&self) -> watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    /// Creates a pipeline once the ones before it have ended (see the module documentation);
    /// resolves when the server has accepted it. Its records come through the handle.
    pub async fn invoke(&self, pipeline: CreatePipeline) -> Result<PipelineHandle, SessionError> {
        let (reply, answer) = oneshot::channel();
        if self
            .requests
            .send(Request::Invoke { pipeline, reply })
            .await
            .is_err()
        {
            return Err(self.ended_error());
        }
        answer.await.unwrap_or_else(|_| Err(self.ended_error()))
    }

    /// Runs a script (`AddScript`, dot-sourced as PowerShell does, so its variables stay in the
    /// session) with named parameters.
    pub async fn run_script<N: Into<String>>(
        &self,
        script: impl Into<String>,
        parameters: impl IntoIterator<Item = (N, PsValue)>,
    ) -> Result<PipelineHandle, SessionError> {
        let mut command = Command::script(script);
        for (name, value) in parameters {
            command = command.parameter(name, value);
        }
        self.invoke(CreatePipeline {
            commands: vec![command],
            no_input: true,
        })
        .await
    }

    /// WS-Management: the shell's id (= [`Self::instance_id`]); `None` over SSH.
    pub fn shell_id(&self) -> Option<Uuid> {
        self.status.borrow().shell_id
    }

    /// WS-Management: the `wsmv:SessionId` of this client; `None` over SSH.
    pub fn wsman_session_id(&self) -> Option<Uuid> {
        self.status.borrow().wsman_session_id
    }

    /// WS-Management Disconnect (Disconnect-PSSession): the server keeps the shell, its running
    /// pipeline and that pipeline's output, buffered by `buffer_mode`, for `idle_timeout` (at least
    /// 60 s: less is refused here with [`WsmanFailure::IdleTimeoutTooShort`], as Windows refuses
    /// it). The pool and the running pipeline become Disconnected; new pipelines wait in the queue
    /// until [`Self::reconnect`]. Waits for a pipeline being created to be created first, and
    /// returns once the Receives that were pending have come back: the output they carried is
    /// then in the pipeline's handle, before its `State { Disconnected }`. Read (and save) the
    /// handle up to that event before dropping it, or that output is lost. Over SSH:
    /// [`SessionError::Unsupported`].
    pub async fn disconnect(
        &self,
        idle_timeout: Duration,
        buffer_mode: BufferMode,
    ) -> Result<(), SessionError> {
        self.ask(|reply| Request::Disconnect {
            idle_timeout,
            buffer_mode,
            reply,
        })
        .await
    }

    /// WS-Management Reconnect (Connect-PSSession from the client that disconnected): the pool and
    /// its pipeline are Opened and Running again, and the output the server buffered meanwhile
    /// arrives through the pipeline's handle. Over SSH: [`SessionError::Unsupported`].
    pub async fn reconnect(&self) -> Result<(), SessionError> {
        self.ask(|reply| Request::Reconnect { reply }).await
    }

    async fn ask(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<(), SessionError>>) -> Request,
    ) -> Result<(), SessionError> {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(request(reply)).await.is_err() {
            return Err(self.ended_error());
        }
        answer.await.unwrap_or_else(|_| Err(self.ended_error()))
    }

    /// Closes politely: the server stops a running pipeline and closes the pool, then the
    /// transport closes. Returns the error that had ended the session, if one had.
    pub async fn close(self) -> Result<(), SessionError> {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(Request::Close { reply }).await.is_err() {
            return self.ended_result();
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => self.ended_result(),
        }
    }

    fn ended_error(&self) -> SessionError {
        self.status.borrow().error.clone().unwrap_or(SessionError::Closed)
    }

    fn ended_result(&self) -> Result<(), SessionError> {
        match self.status.borrow().error.clone() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// How many undelivered events of a pipeline make the task stop reading from the server (the
/// server then waits: backpressure down to the TCP connection). It reads on at half of it.
const HIGH_WATER: usize = 512;

/// Events queued for a handle and not yet taken: backpressure between the handle and the task.
#[derive(Debug, Default)]
struct Flow {
    queued: AtomicUsize,
    notify: Notify,
}

impl Flow {
    fn full(&self) -> bool {
        self.queued.load(Ordering::Acquire) >= HIGH_WATER
    }

    fn taken(&self) {
        if self.queued.fetch_sub(1, Ordering::AcqRel) == HIGH_WATER / 2 {
            self.notify.notify_one();
        }
    }
}

/// What the session task hands a pipeline's handle: events, and over WS-Management a checkpoint
/// after the events of each ReceiveResponse, which the next Receive of that pipeline waits for.
#[derive(Debug)]
// Events are nearly every item: boxing them to shrink the rare checkpoint costs an allocation each.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Delivery {
    Event(PipelineEvent),
    /// The events before it are everything one ReceiveResponse carried: once the consumer
    /// acknowledges them, the next Receive goes out.
    Checkpoint(Receipt),
}

/// The acknowledgement of the events before a [`Delivery::Checkpoint`], sent back to the task.
#[derive(Debug)]
pub(crate) struct Receipt {
    pipeline: Uuid,
    acks: mpsc::UnboundedSender<Uuid>,
    /// The OperationID the pipeline's next Receive will carry.
    next_operation: Uuid,
}

impl Receipt {
    fn acknowledge(self) {
        let _ = self.acks.send(self.pipeline);
    }
}

/// The events of one server response (over WS-Management: one ReceiveResponse), for a consumer
/// that saves them before more is asked of the server. See [`PipelineHandle::next_batch`].
#[derive(Debug)]
pub struct EventBatch {
    /// The events, in order; the last may be the pipeline's last ([`PipelineEvent::is_last`]).
    pub events: Vec<PipelineEvent>,
    receipt: Option<Receipt>,
}

impl EventBatch {
    /// Says the events are saved: the next Receive of this pipeline may go out (and with it the
    /// server discards what it handed out). Dropping the batch without this does NOT acknowledge:
    /// that pipeline receives nothing more until its handle is dropped (which stops it) or the
    /// session ends; a process that dies before acknowledging leaves the output with the server.
    pub fn acknowledge(mut self) {
        if let Some(receipt) = self.receipt.take() {
            receipt.acknowledge();
        }
    }

    /// Whether the next Receive waits for [`Self::acknowledge`] (WS-Management). Over SSH a
    /// batch is just the events queued at the time: there is nothing to acknowledge.
    pub fn needs_acknowledgement(&self) -> bool {
        self.receipt.is_some()
    }

    /// WS-Management: the `wsmv:OperationID` the pipeline's next Receive will carry. Save it with
    /// the batch: if the process dies after that Receive went out and before its events were
    /// saved, a new process passes it to [`Session::connect_wsman_resuming`], whose first Receive
    /// of the pipeline is then a retransmission of it, and a server that kept the response
    /// (robust connections, MS-WSMV 3.1.4.1.39) hands that output out again.
    pub fn next_receive_operation(&self) -> Option<Uuid> {
        self.receipt.as_ref().map(|r| r.next_operation)
    }
}

/// One pipeline's events, and its stop. Dropping it stops the pipeline if it still runs.
#[derive(Debug)]
pub struct PipelineHandle {
    id: Uuid,
    events: mpsc::UnboundedReceiver<Delivery>,
    flow: Arc<Flow>,
    requests: mpsc::WeakSender<Request>,
    finished: bool,
    /// The task closes every run of events with a [`Delivery::Checkpoint`] (WS-Management).
    checkpoints: bool,
}

impl PipelineHandle {
    /// The pipeline's id (PowerShell's `InstanceId` of the PowerShell object; a WSMan CommandId).
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The next event; `None` after the last one ([`PipelineEvent::is_last`]). Cancellation safe.
    ///
    /// Over WS-Management, taking the events of one ReceiveResponse acknowledges them: the next
    /// Receive goes out once the last of them was taken and this is called again. A consumer that
    /// must save output before the server forgets it uses [`Self::next_batch`] instead.
    pub async fn next_event(&mut self) -> Option<PipelineEvent> {
        loop {
            if self.finished {
                return None;
            }
            match self.events.recv().await {
                Some(Delivery::Event(event)) => return Some(self.took(event)),
                Some(Delivery::Checkpoint(receipt)) => receipt.acknowledge(),
                // The task ended without a last event for this pipeline: the session was dropped.
                None => {
                    self.finished = true;
                    return Some(PipelineEvent::Lost(SessionError::Closed));
                }
            }
        }
    }

    fn took(&mut self, event: PipelineEvent) -> PipelineEvent {
        self.flow.taken();
        self.finished = event.is_last();
        event
    }

    /// The next events as one batch, for a consumer that persists output before the server is
    /// asked for more (persist-before-acknowledge); `None` after the last event. Waits for at least
    /// one event. Over WS-Management a batch is exactly what one ReceiveResponse carried, and the
    /// pipeline's next Receive (which tells the server it may discard those) goes out only once
    /// [`EventBatch::acknowledge`] is called: a crash between receiving and saving loses nothing the
    /// server still has. Over SSH there is no acknowledgement (the runspace dies with the
    /// connection): a batch is the events queued at the time. Cancellation safe while waiting for
    /// the first event; once it has come, the rest of its response is already on its way (the
    /// task queues a response's events and checkpoint at once), so the wait after it is short: do
    /// not cancel it there, or those events are lost to this handle.
    pub async fn next_batch(&mut self) -> Option<EventBatch> {
        if self.finished {
            return None;
        }
        let mut events = Vec::new();
        let first = self.events.recv().await;
        let mut item = first;
        loop {
            match item {
                Some(Delivery::Event(event)) => {
                    events.push(self.took(event));
                    if self.finished {
                        // A checkpoint right after the last event still belongs to this batch
                        // (over WS-Management one follows every run of events but a loss).
                        let lost = matches!(events.last(), Some(PipelineEvent::Lost(_)));
                        let next = if self.checkpoints && !lost {
                            self.events.recv().await
                        } else {
                            self.events.try_recv().ok()
                        };
                        if let Some(Delivery::Checkpoint(receipt)) = next {
                            return Some(EventBatch {
                                events,
                                receipt: Some(receipt),
                            });
                        }
                        break;
                    }
                }
                Some(Delivery::Checkpoint(receipt)) => {
                    if events.is_empty() {
                        // Nothing before it: nothing to save.
                        receipt.acknowledge();
                    } else {
                        return Some(EventBatch {
                            events,
                            receipt: Some(receipt),
                        });
                    }
                }
                None => {
                    self.finished = true;
                    events.push(PipelineEvent::Lost(SessionError::Closed));
                    break;
                }
            }
            item = match self.events.try_recv() {
                Ok(next) => Some(next),
                // Over WS-Management the checkpoint closing this batch is on its way.
                Err(mpsc::error::TryRecvError::Empty) if events.is_empty() || self.checkpoints => {
                    self.events.recv().await
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            };
        }
        Some(EventBatch {
            events,
            receipt: None,
        })
    }

    /// Stops the pipeline (OutOfProc `<Signal>`) and waits until the server said it ended, within
    /// the operation timeout. Stopping a pipeline that has ended already succeeds.
    pub async fn stop(&self) -> Result<(), SessionError> {
        let Some(requests) = self.requests.upgrade() else {
            return Err(SessionError::Closed);
        };
        let (reply, answer) = oneshot::channel();
        let request = Request::Stop {
            pipeline: self.id,
            reply,
        };
        if requests.send(request).await.is_err() {
            return Err(SessionError::Closed);
        }
        drop(requests);
        answer.await.unwrap_or(Err(SessionError::Closed))
    }

    /// Reads every event to the end: records by stream, the final state and its error record.
    pub async fn collect(mut self) -> Result<PipelineOutcome, CollectError> {
        let mut outcome = PipelineOutcome::default();
        while let Some(event) = self.next_event().await {
            if let Some(error) = outcome.add(event) {
                return Err(CollectError {
                    error,
                    partial: Box::new(outcome),
                });
            }
        }
        Ok(outcome)
    }
}

/// A JSON value (a PSJob parameter) as the PowerShell value it binds as: strings, `Int32` (or
/// `Int64`, or `Double` for fractions and larger numbers), `Boolean`, `$null`, arrays
/// (`System.Object[]`) and hashtables.
pub fn value_from_json(json: &serde_json::Value) -> PsValue {
    use serde_json::Value as J;
    match json {
        J::Null => PsValue::Nil,
        J::Bool(b) => PsValue::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => i32::try_from(i).map_or(PsValue::I64(i), PsValue::I32),
            None => PsValue::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => PsValue::Str(s.clone()),
        J::Array(items) => PsValue::array(items.iter().map(value_from_json)),
        J::Object(map) => PsValue::hashtable(map.iter().map(|(k, v)| (k.as_str(), value_from_json(v)))),
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

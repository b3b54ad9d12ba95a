//! The task behind a [`Session`](super::Session): it owns the runspace pool and the byte stream,
//! moves packets both ways in one `select!` loop (every branch cancellation safe: reads and writes
//! of the halves, channel receives, timers), and answers the handles' requests.

use std::{collections::VecDeque, io, sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use uuid::Uuid;

use super::{
    BoxFuture, Delivery, Flow, PipelineEvent, PipelineHandle, SessionError, SessionOptions, SessionStatus,
    error_record,
};
use crate::{
    fragment::{FragmentHeader, HEADER_LEN},
    messages::CreatePipeline,
    pool::{Event, Outbound, RunspacePool},
    state::{Availability, RunspacePoolState},
    transport::outofproc::{Packet, PacketKind, PacketReader, Stream as DataStream},
};

/// Closes the stream politely once the pool is closed (SSH: end of input, channel close,
/// disconnect).
pub(super) type Closer<S> = Box<dyn FnOnce(S) -> BoxFuture + Send>;

/// The answer to an open: the protocol version the server announced.
pub(super) type OpenReply = oneshot::Sender<Result<Option<String>, SessionError>>;

/// The most one read takes from the stream. Over SSH a read returns at most one channel data
/// message, which russh caps at 32 KiB. The buffer is filled through `read_buf`, never zeroed, so
/// its pages become resident only as far as reads reach: an idle session costs a page or two, not
/// the whole buffer.
const READ_BUFFER: usize = 32 * 1024;
/// See [`Actor::let_caller_run_first`].
const SKIP_AFTER_MISS: u32 = 16;
/// The polite close of the transport, after the pool's CloseAck, gets at most this long.
const TRANSPORT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

pub(in crate::session) enum Request {
    Invoke {
        pipeline: CreatePipeline,
        reply: oneshot::Sender<Result<PipelineHandle, SessionError>>,
    },
    Stop {
        pipeline: Uuid,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    Close {
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    /// WS-Management only.
    Disconnect {
        idle_timeout: Duration,
        buffer_mode: crate::wsman::BufferMode,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    /// WS-Management only.
    Reconnect {
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Invoke { .. } => f.write_str("Invoke"),
            Request::Stop { pipeline, .. } => write!(f, "Stop({pipeline})"),
            Request::Close { .. } => f.write_str("Close"),
            Request::Disconnect { .. } => f.write_str("Disconnect"),
            Request::Reconnect { .. } => f.write_str("Reconnect"),
        }
    }
}

/// Data waiting to go to one target (the pool, or a pipeline), one packet in flight at a time.
struct Target {
    pipeline: Option<Uuid>,
    packets: VecDeque<(Bytes, DataStream)>,
    in_flight: bool,
    /// A pipeline's data waits for its `<CommandAck>`.
    announced: bool,
}

/// An acknowledgement the server owes.
struct Wait {
    ack: PacketKind,
    pipeline: Option<Uuid>,
    deadline: Instant,
    what: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// `<Command>` sent; CREATE_PIPELINE goes after its ack, the handle after the Data's ack.
    Creating,
    Running,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Signal {
    None,
    /// Asked for while the pipeline was still being created.
    Wanted,
    Sent,
}

struct Current {
    id: Uuid,
    phase: Phase,
    reply: Option<oneshot::Sender<Result<PipelineHandle, SessionError>>>,
    handle: Option<PipelineHandle>,
    events: mpsc::UnboundedSender<Delivery>,
    flow: Arc<Flow>,
    /// The handle is gone: events are dropped.
    handle_gone: bool,
    signal: Signal,
    stop_waiters: Vec<oneshot::Sender<Result<(), SessionError>>>,
    /// When the stop waiters give up on the final state.
    stop_deadline: Option<Instant>,
}

impl Current {
    /// Queues an event for the handle, counted for backpressure; dropped when the handle is gone.
    fn send(&mut self, event: PipelineEvent) {
        if self.handle_gone {
            return;
        }
        self.flow.queued.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if self.events.send(Delivery::Event(event)).is_err() {
            self.flow.queued.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            self.handle_gone = true;
        }
    }
}

/// How the loop ended.
enum End {
    /// The pool is closed (CloseAck): close the transport politely.
    Polite,
    /// Failed, or the session was dropped: drop the transport.
    Abrupt,
}

enum Wake {
    Request(Option<Request>),
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
    Deadline,
    HandleGone,
    Resume,
}

pub(super) struct Actor {
    pool: RunspacePool,
    options: SessionOptions,
    requests: mpsc::Receiver<Request>,
    weak_requests: mpsc::WeakSender<Request>,
    status: watch::Sender<SessionStatus>,
    packets: PacketReader,
    /// Encoded packets not yet written.
    out: Vec<u8>,
    out_pos: usize,
    needs_flush: bool,
    targets: Vec<Target>,
    waits: Vec<Wait>,
    /// Who waits for the open (with the protocol version), and until when.
    opening: Option<(OpenReply, Instant)>,
    protocol_version: Option<String>,
    queue: VecDeque<(
        CreatePipeline,
        oneshot::Sender<Result<PipelineHandle, SessionError>>,
    )>,
    current: Option<Current>,
    closing: Option<oneshot::Sender<Result<(), SessionError>>>,
    failed: Option<SessionError>,
    end: Option<End>,
    /// A pipeline just ended while its `<Close>` waits to be written: see [`Actor::run`].
    let_caller_run: bool,
    /// Pipeline ends to pass without that yield: set after a yield the caller did not use.
    skip_yields: u32,
}

impl Actor {
    pub(super) fn new(
        pool: RunspacePool,
        options: SessionOptions,
        open_deadline: Instant,
        requests: mpsc::Receiver<Request>,
        weak_requests: mpsc::WeakSender<Request>,
        status: watch::Sender<SessionStatus>,
        opened: OpenReply,
    ) -> Self {
        Actor {
            pool,
            options,
            requests,
            weak_requests,
            status,
            packets: PacketReader::new(),
            out: Vec::new(),
            out_pos: 0,
            needs_flush: false,
            targets: Vec::new(),
            waits: Vec::new(),
            opening: Some((opened, open_deadline)),
            protocol_version: None,
            queue: VecDeque::new(),
            current: None,
            closing: None,
            failed: None,
            end: None,
            let_caller_run: false,
            skip_yields: 0,
        }
    }

    pub(super) async fn run<S>(mut self, stream: S, closer: Closer<S>)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut buf = Vec::with_capacity(READ_BUFFER);
        if let Err(error) = self.pool.open() {
            self.fail(error.into());
        }
        // One timer for the whole loop, moved only when the next deadline changes: a new `Sleep`
        // per iteration registers with and leaves the runtime's timer wheel (a lock each) on every
        // packet, and nearly every iteration has a deadline (an ack is almost always awaited).
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let end = loop {
            self.pump();
            self.publish();
            if let Some(end) = self.end.take() {
                break end;
            }
            if std::mem::take(&mut self.let_caller_run) && self.out_pos < self.out.len() {
                if self.skip_yields == 0 {
                    self.let_caller_run_first().await;
                    continue;
                }
                self.skip_yields -= 1;
            }
            let deadline = self.next_deadline();
            if let Some(deadline) = deadline
                && armed != Some(deadline)
            {
                timer.as_mut().reset(deadline);
                armed = Some(deadline);
            }
            let paused = self.read_paused();
            let pending = &self.out[self.out_pos..];
            let current = self.current.as_ref();
            let watched = current.filter(|c| c.phase == Phase::Running && !c.handle_gone);
            let wake = tokio::select! {
                request = self.requests.recv() => Wake::Request(request),
                read = reader.read_buf(&mut buf), if !paused => Wake::Read(read),
                wrote = write_some(&mut writer, pending), if !pending.is_empty() || self.needs_flush => {
                    Wake::Wrote(wrote)
                }
                () = &mut timer, if deadline.is_some() => Wake::Deadline,
                () = handle_gone(watched.map(|c| &c.events)) => Wake::HandleGone,
                () = resumed(current.map(|c| &*c.flow)), if paused => Wake::Resume,
            };
            match wake {
                Wake::Request(Some(request)) => self.on_request(request),
                Wake::Request(None) => self.dropped(),
                Wake::Read(Ok(0)) => self.fail(SessionError::ConnectionClosed),
                Wake::Read(Ok(_)) => {
                    self.on_bytes(&buf);
                    buf.clear();
                }
                Wake::Read(Err(error)) => self.fail(SessionError::from_io(error)),
                Wake::Wrote(Ok(n)) => self.wrote(n),
                Wake::Wrote(Err(error)) => self.fail(SessionError::from_io(error)),
                Wake::Deadline => self.expire(),
                Wake::HandleGone => self.on_handle_gone(),
                Wake::Resume => {}
            }
        };
        if let End::Polite = end {
            let stream = reader.unsplit(writer);
            if tokio::time::timeout(TRANSPORT_CLOSE_TIMEOUT, closer(stream))
                .await
                .is_err()
            {
                tracing::debug!(pool = %self.pool.id(), "closing the transport timed out");
            }
        }
        let result = match &self.failed {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        };
        if let Some(reply) = self.closing.take() {
            let _ = reply.send(result);
        }
        tracing::debug!(pool = %self.pool.id(), "session task ends");
    }

    /// Called when a pipeline has just ended and its `<Close>` waits to be written. The handle's
    /// owner was just woken with the final state and usually asks for the next pipeline (or the
    /// close) at once: this lets it run first, so that its `<Command>` goes in the same packet as the
    /// `<Close>` (one SSH message, one send, and the server's two acks come back together).
    ///
    /// The yield is tokio's deferred one: the task runs again once the worker has run what is
    /// ready. The request channel's waker is replaced by a no-op meanwhile: a request woken into
    /// the worker's LIFO slot would make the chain "russh, this task, the caller, this task, russh"
    /// long enough for tokio to push russh's task to the run queue and wake its other thread
    /// (two context switches per pipeline) instead of running it next. Nothing is missed: the
    /// deferred wake comes regardless, and the queued requests are taken right after it.
    ///
    /// A caller that is not back by then (one on another thread, such as a `block_on`, or one
    /// with other work between pipelines) gains nothing and the yield costs a wake of the
    /// runtime's other thread: after such a miss the next [`SKIP_AFTER_MISS`] pipeline ends
    /// write at once.
    async fn let_caller_run_first(&mut self) {
        let queued = {
            let mut noop = std::task::Context::from_waker(std::task::Waker::noop());
            self.requests.poll_recv(&mut noop)
        };
        if let std::task::Poll::Ready(request) = queued {
            match request {
                Some(request) => self.on_request(request),
                None => self.dropped(),
            }
            return;
        }
        tokio::task::yield_now().await;
        let mut taken = false;
        while self.end.is_none()
            && let Ok(request) = self.requests.try_recv()
        {
            taken = true;
            self.on_request(request);
        }
        if !taken {
            self.skip_yields = SKIP_AFTER_MISS;
        }
    }

    // ---- requests -------------------------------------------------------------------------------

    fn on_request(&mut self, request: Request) {
        match request {
            Request::Invoke { pipeline, reply } => {
                if let Some(error) = self.refusal() {
                    let _ = reply.send(Err(error));
                    return;
                }
                self.queue.push_back((pipeline, reply));
                self.start_next();
            }
            Request::Stop { pipeline, reply } => self.stop(pipeline, Some(reply)),
            Request::Close { reply } => self.close(reply),
            Request::Disconnect { reply, .. } | Request::Reconnect { reply } => {
                let _ = reply.send(Err(SessionError::Unsupported(
                    "the SSH transport has no disconnect: PowerShell's runspace ends with the connection",
                )));
            }
        }
    }

    /// Why nothing new can start, if so.
    fn refusal(&self) -> Option<SessionError> {
        match (&self.failed, &self.closing) {
            (Some(error), _) => Some(error.clone()),
            (None, Some(_)) => Some(SessionError::Closed),
            (None, None) => None,
        }
    }

    fn close(&mut self, reply: oneshot::Sender<Result<(), SessionError>>) {
        if self.closing.is_some() {
            let _ = reply.send(Err(SessionError::Closed));
            return;
        }
        self.closing = Some(reply);
        if self.failed.is_some() {
            self.end = Some(End::Abrupt);
            return;
        }
        for (_, reply) in self.queue.drain(..) {
            let _ = reply.send(Err(SessionError::Closed));
        }
        // The server stops what runs (its Stopped states come first), closes the pool, then acks.
        self.pool.begin_close();
        self.send_control(PacketKind::Close, None, "CloseAck for the runspace pool");
    }

    /// Every Session is gone: drop the connection.
    fn dropped(&mut self) {
        tracing::debug!(pool = %self.pool.id(), "session dropped; dropping the connection");
        self.lose(SessionError::Closed);
        self.pool.closed(false);
        while self.pool.next_event().is_some() {}
        self.end = Some(End::Abrupt);
    }

    // ---- pipelines ------------------------------------------------------------------------------

    fn start_next(&mut self) {
        if self.current.is_some()
            || self.pool.state() != RunspacePoolState::Opened
            || self.refusal().is_some()
        {
            return;
        }
        while let Some((pipeline, reply)) = self.queue.pop_front() {
            if reply.is_closed() {
                continue; // the caller gave up waiting
            }
            let id = match self.pool.create_pipeline(&pipeline) {
                Ok(id) => id,
                Err(error) => {
                    let _ = reply.send(Err(error.into()));
                    continue;
                }
            };
            let (events, events_rx) = mpsc::unbounded_channel();
            let flow = Arc::new(Flow::default());
            let handle = PipelineHandle {
                id,
                events: events_rx,
                flow: Arc::clone(&flow),
                requests: self.weak_requests.clone(),
                finished: false,
                checkpoints: false,
            };
            self.targets.push(Target {
                pipeline: Some(id),
                packets: VecDeque::new(),
                in_flight: false,
                announced: false,
            });
            self.current = Some(Current {
                id,
                phase: Phase::Creating,
                reply: Some(reply),
                handle: Some(handle),
                events,
                flow,
                handle_gone: false,
                signal: Signal::None,
                stop_waiters: Vec::new(),
                stop_deadline: None,
            });
            self.send_control(PacketKind::Command, Some(id), "CommandAck for a new pipeline");
            return;
        }
    }

    /// The server has CREATE_PIPELINE: hand the handle over.
    fn created(&mut self) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        if current.phase != Phase::Creating {
            return;
        }
        current.phase = Phase::Running;
        if let (Some(reply), Some(handle)) = (current.reply.take(), current.handle.take()) {
            // If the caller is gone, the handle drops here and the pipeline is stopped next.
            let _ = reply.send(Ok(handle));
        }
        if current.signal == Signal::Wanted {
            self.signal();
        }
    }

    fn stop(&mut self, pipeline: Uuid, reply: Option<oneshot::Sender<Result<(), SessionError>>>) {
        if let Some(error) = &self.failed {
            if let Some(reply) = reply {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
        let Some(current) = self.current.as_mut().filter(|c| c.id == pipeline) else {
            // Ended already (or never known here): nothing to stop.
            if let Some(reply) = reply {
                let _ = reply.send(Ok(()));
            }
            return;
        };
        current.stop_waiters.extend(reply);
        match (current.phase, current.signal) {
            (Phase::Creating, Signal::None) => current.signal = Signal::Wanted,
            (Phase::Running, Signal::None) => self.signal(),
            _ => {}
        }
    }

    fn signal(&mut self) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        current.signal = Signal::Sent;
        let id = current.id;
        self.send_control(PacketKind::Signal, Some(id), "SignalAck for a pipeline stop");
    }

    fn on_handle_gone(&mut self) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        current.handle_gone = true;
        let id = current.id;
        tracing::debug!(pipeline = %id, "pipeline handle dropped; stopping the pipeline");
        self.stop(id, None);
    }

    /// The pipeline reached its final state: it is closed on the server (`<Close>`, whose ack is
    /// awaited on the side, as PowerShell disposes a pipeline) and the next one may start.
    fn ended(&mut self) {
        let Some(mut current) = self.current.take() else {
            return;
        };
        if let (Some(reply), Some(handle)) = (current.reply.take(), current.handle.take()) {
            let _ = reply.send(Ok(handle));
        }
        for waiter in current.stop_waiters.drain(..) {
            let _ = waiter.send(Ok(()));
        }
        self.send_control(
            PacketKind::Close,
            Some(current.id),
            "CloseAck for an ended pipeline",
        );
        self.let_caller_run = true;
        self.start_next();
    }

    fn deliver(&mut self, pipeline: Uuid, event: PipelineEvent) {
        let Some(current) = self.current.as_mut().filter(|c| c.id == pipeline) else {
            tracing::debug!(%pipeline, "dropping an event of a pipeline that is not the current one");
            return;
        };
        current.send(event);
    }

    // ---- what the server sent -------------------------------------------------------------------

    fn on_bytes(&mut self, bytes: &[u8]) {
        self.packets.feed(bytes);
        while self.failed.is_none() && self.end.is_none() {
            match self.packets.next_packet() {
                Ok(Some(packet)) => self.on_packet(packet),
                Ok(None) => break,
                Err(error) => self.fail(error.into()),
            }
        }
    }

    fn on_packet(&mut self, packet: Packet) {
        match packet {
            Packet::Data { data, .. } => {
                if let Err(error) = self.pool.receive(&data) {
                    self.fail(error.into());
                    return;
                }
                self.drain_events();
            }
            Packet::DataAck { pipeline_id } => {
                self.acknowledged(PacketKind::DataAck, pipeline_id);
                if let Some(target) = self.targets.iter_mut().find(|t| t.pipeline == pipeline_id) {
                    target.in_flight = false;
                    let idle = target.packets.is_empty();
                    if idle && pipeline_id.is_some() && self.current.as_ref().map(|c| c.id) == pipeline_id {
                        self.created();
                    }
                }
            }
            Packet::CommandAck { pipeline_id } => {
                self.acknowledged(PacketKind::CommandAck, pipeline_id);
                if let Some(target) = self.targets.iter_mut().find(|t| t.pipeline == pipeline_id) {
                    target.announced = true;
                }
            }
            Packet::SignalAck { pipeline_id } => {
                self.acknowledged(PacketKind::SignalAck, pipeline_id);
                let timeout = self.options.operation_timeout;
                if let Some(current) = self.current.as_mut().filter(|c| Some(c.id) == pipeline_id)
                    && !current.stop_waiters.is_empty()
                {
                    current.stop_deadline = Some(Instant::now() + timeout);
                }
            }
            Packet::CloseAck { pipeline_id: None } => {
                self.acknowledged(PacketKind::CloseAck, None);
                if self.closing.is_some() {
                    self.pool.closed(false);
                    self.drain_events();
                    self.lose(SessionError::Closed);
                    self.end = Some(End::Polite);
                }
            }
            Packet::CloseAck { pipeline_id } => {
                self.acknowledged(PacketKind::CloseAck, pipeline_id);
                self.targets.retain(|t| t.pipeline != pipeline_id);
            }
            Packet::Command { .. } | Packet::Signal { .. } | Packet::Close { .. } => {
                self.fail(SessionError::UnexpectedPacket(packet.kind()));
            }
        }
    }

    fn acknowledged(&mut self, ack: PacketKind, pipeline: Option<Uuid>) {
        match self
            .waits
            .iter()
            .position(|w| w.ack == ack && w.pipeline == pipeline)
        {
            Some(i) => {
                self.waits.remove(i);
            }
            None => tracing::debug!(%ack, ?pipeline, "an acknowledgement nobody waited for; ignored"),
        }
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.pool.next_event() {
            if self.failed.is_some() {
                continue; // what the pool says about itself after a failure is moot
            }
            match event {
                Event::SessionCapability(capability) => {
                    self.protocol_version = Some(capability.protocol_version.to_string());
                }
                Event::PoolState { state, error } => self.pool_state(state, error),
                Event::Record {
                    pipeline,
                    stream,
                    value,
                } => self.deliver(pipeline, PipelineEvent::record(stream, value)),
                Event::PipelineState {
                    pipeline,
                    state,
                    error,
                } => {
                    let error = error.map(|e| error_record(&e));
                    self.deliver(pipeline, PipelineEvent::State { state, error });
                    if state.is_final() && self.current.as_ref().is_some_and(|c| c.id == pipeline) {
                        self.ended();
                    }
                }
                Event::HostCall {
                    pipeline: Some(pipeline),
                    call,
                } => self.deliver(pipeline, PipelineEvent::HostCall(call)),
                Event::HostCall { pipeline: None, call } => {
                    tracing::debug!(method = ?call.method_name, "runspace pool host call answered");
                }
                other => tracing::trace!(?other, "server event"),
            }
        }
    }

    fn pool_state(&mut self, state: RunspacePoolState, error: Option<crate::clixml::PsValue>) {
        match state {
            RunspacePoolState::Opened => {
                if let Some((reply, _)) = self.opening.take() {
                    let _ = reply.send(Ok(self.protocol_version.clone()));
                }
                self.start_next();
            }
            RunspacePoolState::Broken => {
                let message = error
                    .map(|e| error_record(&e).message().to_owned())
                    .unwrap_or_default();
                let message = if message.is_empty() {
                    "the server reported the runspace pool as Broken".to_owned()
                } else {
                    message
                };
                self.fail(SessionError::Broken { message });
            }
            RunspacePoolState::Closed if self.closing.is_none() => self.fail(SessionError::ClosedByServer),
            _ => {}
        }
    }

    // ---- sending --------------------------------------------------------------------------------

    /// Moves the pool's outbound data into the targets' queues, and writes the next Data packet of
    /// every target that has nothing unacknowledged.
    fn pump(&mut self) {
        if self.failed.is_some() {
            return;
        }
        let max_packet = self.options.pool.max_fragment_size.max(HEADER_LEN + 1);
        while let Some(Outbound {
            pipeline_id,
            data,
            prompt_response,
        }) = self.pool.take_outbound()
        {
            let stream = if prompt_response {
                DataStream::PromptResponse
            } else {
                DataStream::Default
            };
            let index = match self.targets.iter().position(|t| t.pipeline == pipeline_id) {
                Some(index) => index,
                None => {
                    self.targets.push(Target {
                        pipeline: pipeline_id,
                        packets: VecDeque::new(),
                        in_flight: false,
                        announced: true,
                    });
                    self.targets.len() - 1
                }
            };
            let packets = &mut self.targets[index].packets;
            packets.extend(
                whole_fragment_packets(data, max_packet)
                    .into_iter()
                    .map(|p| (p, stream)),
            );
        }
        let deadline = self.ack_deadline();
        for target in &mut self.targets {
            if target.in_flight || !target.announced {
                continue;
            }
            // Host call answers overtake other queued data.
            let next = match target
                .packets
                .iter()
                .position(|(_, s)| *s == DataStream::PromptResponse)
            {
                Some(i) => target.packets.remove(i),
                None => target.packets.pop_front(),
            };
            let Some((data, stream)) = next else { continue };
            Packet::data(stream, target.pipeline, data).encode_into(&mut self.out);
            target.in_flight = true;
            self.waits.push(Wait {
                ack: PacketKind::DataAck,
                pipeline: target.pipeline,
                deadline,
                what: if target.pipeline.is_some() {
                    "DataAck for pipeline data"
                } else {
                    "DataAck for runspace pool data"
                },
            });
        }
    }

    fn send_control(&mut self, kind: PacketKind, pipeline: Option<Uuid>, what: &'static str) {
        let Some(packet) = Packet::control(kind, pipeline) else {
            return;
        };
        packet.encode_into(&mut self.out);
        let deadline = self.ack_deadline();
        let ack = match kind {
            PacketKind::Command => PacketKind::CommandAck,
            PacketKind::Signal => PacketKind::SignalAck,
            _ => PacketKind::CloseAck,
        };
        self.waits.push(Wait {
            ack,
            pipeline,
            deadline,
            what,
        });
    }

    /// Until the pool is open, the open deadline bounds every exchange; then the operation timeout.
    fn ack_deadline(&self) -> Instant {
        match &self.opening {
            Some((_, deadline)) => *deadline,
            None => Instant::now() + self.options.operation_timeout,
        }
    }

    fn wrote(&mut self, n: usize) {
        if self.out_pos == self.out.len() {
            // That was a flush.
            self.needs_flush = false;
            return;
        }
        if n == 0 {
            self.fail(SessionError::from_io(io::ErrorKind::WriteZero.into()));
            return;
        }
        self.out_pos += n;
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            self.needs_flush = true;
        }
    }

    // ---- time -----------------------------------------------------------------------------------

    fn next_deadline(&self) -> Option<Instant> {
        let waits = self.waits.iter().map(|w| w.deadline);
        let open = self.opening.as_ref().map(|(_, deadline)| *deadline);
        let stop = self.current.as_ref().and_then(|c| c.stop_deadline);
        waits.chain(open).chain(stop).min()
    }

    fn expire(&mut self) {
        let now = Instant::now();
        if let Some((_, deadline)) = &self.opening
            && *deadline <= now
        {
            return self.fail(SessionError::OpenTimeout(self.options.open_timeout));
        }
        if let Some(wait) = self.waits.iter().find(|w| w.deadline <= now) {
            let error = match self.opening {
                Some(_) => SessionError::OpenTimeout(self.options.open_timeout),
                None => SessionError::OperationTimeout {
                    what: wait.what,
                    timeout: self.options.operation_timeout,
                },
            };
            return self.fail(error);
        }
        let timeout = self.options.operation_timeout;
        if let Some(current) = self.current.as_mut()
            && current.stop_deadline.is_some_and(|d| d <= now)
        {
            // The server acknowledged the stop but the pipeline runs on: the stop failed, the
            // session does not.
            current.stop_deadline = None;
            for waiter in current.stop_waiters.drain(..) {
                let _ = waiter.send(Err(SessionError::OperationTimeout {
                    what: "final state of a stopped pipeline",
                    timeout,
                }));
            }
        }
    }

    /// Reading pauses while the current pipeline's handle lags far behind, unless the server owes
    /// an acknowledgement (a stop, say, must not wait for the reader).
    fn read_paused(&self) -> bool {
        self.waits.is_empty()
            && self.opening.is_none()
            && self.closing.is_none()
            && self
                .current
                .as_ref()
                .is_some_and(|c| !c.handle_gone && c.flow.full())
    }

    // ---- endings --------------------------------------------------------------------------------

    /// The session has failed: everyone waiting learns why, and the connection is dropped.
    fn fail(&mut self, error: SessionError) {
        if self.failed.is_some() {
            return;
        }
        tracing::debug!(pool = %self.pool.id(), reason = error.reason(), %error, "session failed");
        self.failed = Some(error.clone());
        if let Some((reply, _)) = self.opening.take() {
            let _ = reply.send(Err(error.clone()));
        }
        self.lose(error);
        self.pool.closed(true);
        while self.pool.next_event().is_some() {}
        self.end = Some(End::Abrupt);
    }

    /// Ends the current pipeline (if it had not ended) and the queue with `error`.
    fn lose(&mut self, error: SessionError) {
        if let Some(mut current) = self.current.take() {
            if let Some(reply) = current.reply.take() {
                let _ = reply.send(Err(error.clone()));
            }
            for waiter in current.stop_waiters.drain(..) {
                let _ = waiter.send(Err(error.clone()));
            }
            current.send(PipelineEvent::Lost(error.clone()));
        }
        for (_, reply) in self.queue.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
    }

    fn publish(&self) {
        let state = match self.pool.state() {
            RunspacePoolState::NegotiationSent | RunspacePoolState::NegotiationSucceeded => {
                RunspacePoolState::Opening
            }
            state => state,
        };
        let availability = match (state, &self.current) {
            (RunspacePoolState::Opened, Some(_)) => Availability::Busy,
            (RunspacePoolState::Opened, _) if self.closing.is_none() => Availability::Available,
            _ => Availability::None,
        };
        let next = SessionStatus {
            state,
            availability,
            error: self.failed.clone(),
            shell_id: None,
            wsman_session_id: None,
        };
        self.status.send_if_modified(|status| {
            if status.same_as(&next) {
                false
            } else {
                *status = next;
                true
            }
        });
    }
}

/// Cuts fragment bytes into packets of whole fragments, each at most `max_packet` bytes unless one
/// fragment alone is larger.
pub(in crate::session) fn whole_fragment_packets(data: Vec<u8>, max_packet: usize) -> Vec<Bytes> {
    let data = Bytes::from(data);
    let mut packets = Vec::new();
    let (mut start, mut pos) = (0, 0);
    while pos < data.len() {
        let Some(header) = FragmentHeader::parse(&data[pos..]) else {
            // Not our fragmenter's output: send the rest as it is.
            pos = data.len();
            break;
        };
        let len = HEADER_LEN + header.blob_len as usize;
        if pos > start && pos + len - start > max_packet {
            packets.push(data.slice(start..pos));
            start = pos;
        }
        pos = (pos + len).min(data.len());
    }
    if pos > start {
        packets.push(data.slice(start..pos));
    }
    packets
}

/// Writes some of `pending`, or flushes when there is nothing left to write. Cancellation safe:
/// `write` writes nothing when it does not complete, and a repeated flush is harmless.
async fn write_some<W: AsyncWrite + Unpin>(writer: &mut W, pending: &[u8]) -> io::Result<usize> {
    if pending.is_empty() {
        writer.flush().await.map(|()| 0)
    } else {
        writer.write(pending).await
    }
}

async fn handle_gone(events: Option<&mpsc::UnboundedSender<Delivery>>) {
    match events {
        Some(events) => events.closed().await,
        None => std::future::pending().await,
    }
}

async fn resumed(flow: Option<&Flow>) {
    match flow {
        Some(flow) => flow.notify.notified().await,
        None => std::future::pending().await,
    }
}

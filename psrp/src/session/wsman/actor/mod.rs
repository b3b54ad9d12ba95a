//! The task behind a WS-Management [`Session`](crate::session::Session): it owns the runspace pool
//! and the shell, keeps the pool's Receive and each pipeline's Receive going, and answers the
//! handles' requests. Every request to the server is its own task (the HTTP transport carries
//! several at once over its pooled connections); their answers come back to one `select!` loop, so
//! the pool is only ever touched here.
//!
//! Beside this file: [`pipe`] (one pipeline's state), [`outgoing`] (what is sent when),
//! [`receive`] (what a Receive brought), [`disconnect`] (Disconnect and Reconnect).

use std::{collections::VecDeque, sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinSet,
    time::Instant,
};
use uuid::Uuid;

mod disconnect;
mod outgoing;
mod pipe;
mod receive;

use self::pipe::{Loop, Phase, Pipe, StopSignal};
use super::{error::WsmanFailure, exchange::Exchange};
use crate::{
    fragment::HEADER_LEN,
    messages::CreatePipeline,
    pool::{Event, RunspacePool},
    session::{
        Delivery, PipelineEvent, PipelineHandle, SessionError, SessionOptions, SessionStatus,
        actor::{Request, whole_fragment_packets},
        error_record,
    },
    state::{Availability, RunspacePoolState},
    wsman::{
        BufferMode, ReceiveResponse, Response, Signal, namespaces::action, parse_command_response,
        parse_connect_response, parse_empty_response,
    },
};

/// What an open (or a connect) hands back once the pool is Opened.
pub(super) struct Opened {
    pub protocol_version: Option<String>,
    /// The handles of the pipelines a connect took over, in the order the server listed them.
    pub adopted: Vec<PipelineHandle>,
}

pub(super) type OpenReply = oneshot::Sender<Result<Opened, SessionError>>;

type Reply = oneshot::Sender<Result<(), SessionError>>;

/// A request in flight, by what its answer means.
#[derive(Debug, Clone, Copy)]
enum Op {
    PoolReceive,
    Command(Uuid),
    ConnectCommand(Uuid),
    Send(Option<Uuid>),
    Receive(Uuid),
    Signal(Uuid),
    Delete,
    Disconnect,
    Reconnect,
}

enum Answer {
    Receive(Result<Response<ReceiveResponse>, WsmanFailure>),
    Done(Result<(), WsmanFailure>),
}

pub(super) struct Actor {
    pool: RunspacePool,
    shell_id: Uuid,
    exchange: Exchange,
    options: SessionOptions,
    requests: mpsc::Receiver<Request>,
    weak_requests: mpsc::WeakSender<Request>,
    status: watch::Sender<SessionStatus>,
    acks: mpsc::UnboundedSender<Uuid>,
    acks_rx: mpsc::UnboundedReceiver<Uuid>,
    ops: JoinSet<(Op, Answer)>,
    /// Who waits for the open, and until when.
    opening: Option<(OpenReply, Instant)>,
    protocol_version: Option<String>,
    pool_receive: Loop,
    pool_receives: u64,
    pool_sends: VecDeque<(&'static str, Bytes)>,
    pool_send_in_flight: bool,
    queue: VecDeque<(
        CreatePipeline,
        oneshot::Sender<Result<PipelineHandle, SessionError>>,
    )>,
    pipes: Vec<Pipe>,
    /// Handles of adopted pipelines, until the open's reply takes them.
    adopted: Vec<PipelineHandle>,
    closing: Option<Reply>,
    delete_sent: bool,
    disconnecting: Option<Reply>,
    /// A Disconnect asked for, sent once nothing is being created or sent.
    pending_disconnect: Option<(Duration, BufferMode)>,
    /// The server's answer to the Disconnect, applied once the pending Receives are back.
    disconnect_answer: Option<Result<(), WsmanFailure>>,
    reconnecting: Option<Reply>,
    failed: Option<SessionError>,
    end: bool,
    /// The largest Command payload and the largest Send payload under MaxEnvelopeSize.
    command_capacity: usize,
    send_capacity: usize,
}

impl Actor {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        pool: RunspacePool,
        shell_id: Uuid,
        exchange: Exchange,
        options: SessionOptions,
        open_deadline: Instant,
        requests: mpsc::Receiver<Request>,
        weak_requests: mpsc::WeakSender<Request>,
        status: watch::Sender<SessionStatus>,
        opened: OpenReply,
        adopt: &[(Uuid, Option<Uuid>)],
    ) -> Self {
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let command_capacity = exchange
            .client
            .command(shell_id, Uuid::max(), &[])
            .payload_capacity()
            .max(HEADER_LEN + 1);
        let send_capacity = exchange.client.max_send_payload(shell_id).max(HEADER_LEN + 1);
        let mut actor = Actor {
            pool,
            shell_id,
            exchange,
            options,
            requests,
            weak_requests,
            status,
            acks,
            acks_rx,
            ops: JoinSet::new(),
            opening: Some((opened, open_deadline)),
            protocol_version: None,
            pool_receive: Loop::Ready,
            pool_receives: 0,
            pool_sends: VecDeque::new(),
            pool_send_in_flight: false,
            queue: VecDeque::new(),
            pipes: Vec::new(),
            adopted: Vec::new(),
            closing: None,
            delete_sent: false,
            disconnecting: None,
            pending_disconnect: None,
            disconnect_answer: None,
            reconnecting: None,
            failed: None,
            end: false,
            command_capacity,
            send_capacity,
        };
        for &(id, resume) in adopt {
            let (mut pipe, handle) = Pipe::new(id, Phase::Adopted, actor.weak_requests.clone());
            if let Some(operation) = resume {
                pipe.next_operation = operation;
                pipe.resume = true;
            }
            actor.pipes.push(pipe);
            actor.adopted.push(handle);
        }
        actor
    }

    pub(super) async fn run(mut self) {
        loop {
            self.pump();
            self.publish();
            if self.end {
                break;
            }
            let deadline = self.next_deadline();
            let watched = self
                .pipes
                .iter()
                .find(|p| p.phase == Phase::Running && !p.handle_gone && p.reply.is_none())
                .map(|p| p.events.clone());
            tokio::select! {
                request = self.requests.recv() => match request {
                    Some(request) => self.on_request(request),
                    None => self.dropped(),
                },
                Some(done) = self.ops.join_next(), if !self.ops.is_empty() => match done {
                    Ok((op, answer)) => self.on_answer(op, answer),
                    // Only a bug panics a request task: the session cannot know where it is.
                    Err(error) => self.fail(SessionError::Io(Arc::new(std::io::Error::other(format!(
                        "a WS-Management request task failed: {error}"
                    ))))),
                },
                Some(pipeline) = self.acks_rx.recv() => {
                    if let Some(pipe) = self.pipes.iter_mut().find(|p| p.id == pipeline) {
                        pipe.unacknowledged = pipe.unacknowledged.saturating_sub(1);
                    }
                },
                () = sleep_until(deadline), if deadline.is_some() => self.expire(),
                () = closed(watched.as_ref()), if watched.is_some() => self.on_handles_gone(),
            }
        }
        let result = match &self.failed {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        };
        if let Some(reply) = self.closing.take() {
            let _ = reply.send(result);
        }
        // Requests still in flight are aborted with the JoinSet: a dropped session leaves its shell
        // to the server's idle timeout, as a vanished WinRM client does.
        self.ops.abort_all();
        tracing::debug!(shell = %self.shell_id, "WSMan session task ends");
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
            }
            Request::Stop { pipeline, reply } => self.stop(pipeline, Some(reply)),
            Request::Close { reply } => self.close(reply),
            Request::Disconnect {
                idle_timeout,
                buffer_mode,
                reply,
            } => self.disconnect(idle_timeout, buffer_mode, reply),
            Request::Reconnect { reply } => self.reconnect(reply),
        }
    }

    fn refusal(&self) -> Option<SessionError> {
        match (&self.failed, &self.closing) {
            (Some(error), _) => Some(error.clone()),
            (None, Some(_)) => Some(SessionError::Closed),
            (None, None) => None,
        }
    }

    fn close(&mut self, reply: Reply) {
        if self.closing.is_some() {
            let _ = reply.send(Err(SessionError::Closed));
            return;
        }
        self.closing = Some(reply);
        if self.failed.is_some() {
            self.end = true;
            return;
        }
        for (_, reply) in self.queue.drain(..) {
            let _ = reply.send(Err(SessionError::Closed));
        }
        for reply in [self.disconnecting.take(), self.reconnecting.take()]
            .into_iter()
            .flatten()
        {
            let _ = reply.send(Err(SessionError::Closed));
        }
        // Delete closes the pool: the server stops what runs (MS-PSRP 3.1.5.3.11).
        self.pool.begin_close();
        self.pool_receive = Loop::Finished;
        self.delete_sent = true;
        let exchange = self.exchange.clone();
        let envelope = exchange.client.delete(self.shell_id);
        self.ops.spawn(async move {
            let result = exchange
                .call(&envelope, |b| parse_empty_response(b, action::DELETE_RESPONSE))
                .await
                .map(|_| ());
            (Op::Delete, Answer::Done(result))
        });
    }

    /// Every Session is gone: stop asking, leave the shell to the server (its idle timeout), as a
    /// WinRM client that goes away does. A disconnected shell stays for a later connect.
    fn dropped(&mut self) {
        tracing::debug!(shell = %self.shell_id, "session dropped; the shell is left to the server");
        self.lose(SessionError::Closed);
        self.pool.closed(false);
        while self.pool.next_event().is_some() {}
        self.end = true;
    }

    // ---- pipelines ------------------------------------------------------------------------------

    fn start_next(&mut self) {
        if !self.pipes.is_empty()
            || self.pool.state() != RunspacePoolState::Opened
            || self.refusal().is_some()
            || self.disconnecting.is_some()
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
            let mut data = Vec::new();
            while let Some(outbound) = self.pool.take_outbound() {
                if outbound.pipeline_id == Some(id) {
                    data.extend_from_slice(&outbound.data);
                } else {
                    self.route(outbound);
                }
            }
            let (mut pipe, handle) = Pipe::new(id, Phase::Creating, self.weak_requests.clone());
            pipe.reply = Some(reply);
            pipe.handle = Some(handle);
            // The Command carries what fits of CREATE_PIPELINE (whole fragments); Sends the rest
            // (MS-PSRP 3.1.5.3.3, 3.1.5.3.4).
            let mut chunks = VecDeque::from(whole_fragment_packets(data, self.command_capacity));
            let first = chunks.pop_front().unwrap_or_default();
            pipe.sends = chunks.into_iter().map(|c| ("stdin", c)).collect();
            self.pipes.push(pipe);
            let exchange = self.exchange.clone();
            let envelope = exchange.client.command(self.shell_id, id, &first);
            self.ops.spawn(async move {
                let result = exchange.call(&envelope, parse_command_response).await.map(|_| ());
                (Op::Command(id), Answer::Done(result))
            });
            return;
        }
    }

    /// The pipeline exists on the server with all of its CREATE_PIPELINE: its handle goes to the
    /// caller and its Receive loop starts.
    fn created(&mut self, index: usize) {
        let pipe = &mut self.pipes[index];
        if pipe.phase != Phase::Creating {
            return;
        }
        pipe.phase = Phase::Running;
        pipe.receive = Loop::Ready;
        if let (Some(reply), Some(handle)) = (pipe.reply.take(), pipe.handle.take()) {
            // If the caller is gone, the handle drops here and the pipeline is stopped next.
            let _ = reply.send(Ok(handle));
        }
        if pipe.signal == StopSignal::Wanted {
            self.signal(index);
        }
    }

    fn stop(&mut self, pipeline: Uuid, reply: Option<Reply>) {
        if let Some(error) = &self.failed {
            if let Some(reply) = reply {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
        let Some(index) = self.pipes.iter().position(|p| p.id == pipeline && !p.ended) else {
            if let Some(reply) = reply {
                let _ = reply.send(Ok(()));
            }
            return;
        };
        let pipe = &mut self.pipes[index];
        pipe.stop_waiters.extend(reply);
        match (pipe.phase, pipe.signal) {
            (Phase::Running, StopSignal::None) if self.pool.state() == RunspacePoolState::Opened => {
                self.signal(index)
            }
            (_, StopSignal::None) => pipe.signal = StopSignal::Wanted,
            _ => {}
        }
    }

    fn signal(&mut self, index: usize) {
        let pipe = &mut self.pipes[index];
        pipe.signal = StopSignal::Sent;
        let id = pipe.id;
        let exchange = self.exchange.clone();
        let envelope = exchange.client.signal(self.shell_id, Some(id), &Signal::PsCtrlC);
        self.ops.spawn(async move {
            let result = exchange
                .call(&envelope, |b| parse_empty_response(b, action::SIGNAL_RESPONSE))
                .await
                .map(|_| ());
            (Op::Signal(id), Answer::Done(result))
        });
    }

    fn on_handles_gone(&mut self) {
        let gone: Vec<Uuid> = self
            .pipes
            .iter_mut()
            .filter(|p| !p.handle_gone && p.reply.is_none() && p.handle.is_none() && p.events.is_closed())
            .map(|p| {
                p.handle_gone = true;
                p.id
            })
            .collect();
        for id in gone {
            tracing::debug!(pipeline = %id, "pipeline handle dropped; stopping the pipeline");
            self.stop(id, None);
        }
    }

    /// The pipeline reached its final state; it is forgotten once its Receive loop is over too.
    fn ended(&mut self, pipeline: Uuid) {
        let Some(pipe) = self.pipes.iter_mut().find(|p| p.id == pipeline) else {
            return;
        };
        pipe.ended = true;
        // Its last events close a batch of their own.
        pipe.checkpoint(&self.acks);
        if let (Some(reply), Some(handle)) = (pipe.reply.take(), pipe.handle.take()) {
            let _ = reply.send(Ok(handle));
        }
        for waiter in pipe.stop_waiters.drain(..) {
            let _ = waiter.send(Ok(()));
        }
        pipe.stop_deadline = None;
        self.forget_finished();
    }

    /// Drops pipelines that have ended and whose Receive loop is over: the next may start.
    fn forget_finished(&mut self) {
        self.pipes
            .retain(|p| !(p.ended && p.receive != Loop::InFlight && !p.send_in_flight));
    }

    fn deliver(&mut self, pipeline: Uuid, event: PipelineEvent) {
        match self.pipes.iter_mut().find(|p| p.id == pipeline) {
            Some(pipe) => pipe.send(event),
            None => tracing::debug!(%pipeline, "dropping an event of a pipeline this session does not have"),
        }
    }

    fn checkpoints(&mut self) {
        for pipe in &mut self.pipes {
            pipe.checkpoint(&self.acks);
        }
    }

    // ---- answers --------------------------------------------------------------------------------

    fn on_answer(&mut self, op: Op, answer: Answer) {
        match (op, answer) {
            (Op::PoolReceive, Answer::Receive(result)) => {
                self.pool_receive = Loop::Ready;
                match result {
                    Ok(response) => self.received(None, response.body),
                    Err(error) => self.receive_failed(None, error),
                }
            }
            (Op::Receive(id), Answer::Receive(result)) => {
                if let Some(pipe) = self.pipes.iter_mut().find(|p| p.id == id) {
                    pipe.receive = Loop::Ready;
                }
                match result {
                    Ok(response) => self.received(Some(id), response.body),
                    Err(error) => self.receive_failed(Some(id), error),
                }
                self.forget_finished();
            }
            (Op::Command(id), Answer::Done(result)) => self.commanded(id, result),
            (Op::ConnectCommand(id), Answer::Done(result)) => {
                let Some(pipe) = self.pipes.iter_mut().find(|p| p.id == id) else {
                    return;
                };
                match result {
                    Ok(()) => {
                        pipe.phase = Phase::Running;
                        pipe.receive = Loop::Ready;
                        if pipe.signal == StopSignal::Wanted
                            && let Some(index) = self.pipes.iter().position(|p| p.id == id)
                        {
                            self.signal(index);
                        }
                    }
                    Err(error) => self.fail(SessionError::Wsman(error)),
                }
            }
            (Op::Send(target), Answer::Done(result)) => {
                if let Err(error) = result {
                    return self.fail(SessionError::Wsman(error));
                }
                match target {
                    None => self.pool_send_in_flight = false,
                    Some(id) => {
                        if let Some(index) = self.pipes.iter().position(|p| p.id == id) {
                            let pipe = &mut self.pipes[index];
                            pipe.send_in_flight = false;
                            if pipe.sends.is_empty() && pipe.phase == Phase::Creating && pipe.commanded {
                                self.created(index);
                            }
                        }
                        self.forget_finished();
                    }
                }
            }
            (Op::Signal(id), Answer::Done(result)) => {
                let timeout = self.options.operation_timeout;
                let Some(pipe) = self.pipes.iter_mut().find(|p| p.id == id) else {
                    return;
                };
                match result {
                    Ok(()) => {
                        if !pipe.stop_waiters.is_empty() {
                            pipe.stop_deadline = Some(Instant::now() + timeout);
                        }
                    }
                    // The command is gone already: it has ended; its final state is on its way.
                    Err(error) if error.fault_code() == Some(crate::wsman::fault::CODE_INVALID_SELECTORS) => {
                        pipe.stop_deadline = Some(Instant::now() + timeout);
                    }
                    Err(error) => {
                        pipe.signal = StopSignal::None;
                        for waiter in pipe.stop_waiters.drain(..) {
                            let _ = waiter.send(Err(SessionError::Wsman(error.clone())));
                        }
                    }
                }
            }
            (Op::Delete, Answer::Done(result)) => {
                let result = match result {
                    Ok(()) => Ok(()),
                    Err(error) if error.reason() == "ShellNotFound" => Ok(()),
                    Err(error) => Err(SessionError::Wsman(error)),
                };
                self.pool.closed(false);
                self.drain_events();
                self.lose(SessionError::Closed);
                if let Err(error) = result
                    && let Some(reply) = self.closing.take()
                {
                    let _ = reply.send(Err(error));
                }
                self.end = true;
            }
            // Applied by `finish_disconnect` once the Receives that were pending have returned.
            (Op::Disconnect, Answer::Done(result)) => self.disconnect_answer = Some(result),
            (Op::Reconnect, Answer::Done(result)) => {
                let reply = self.reconnecting.take();
                let outcome = match result {
                    Ok(()) => self.pool.reconnected().map_err(SessionError::from),
                    Err(error) => Err(SessionError::Wsman(error)),
                };
                if outcome.is_ok() {
                    self.drain_events();
                    self.checkpoints();
                    self.resume_loops();
                    // A stop asked for while disconnected goes now.
                    let wanted: Vec<usize> = (0..self.pipes.len())
                        .filter(|&i| {
                            self.pipes[i].signal == StopSignal::Wanted
                                && self.pipes[i].phase == Phase::Running
                        })
                        .collect();
                    for index in wanted {
                        self.signal(index);
                    }
                }
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
            (op, _) => tracing::warn!(?op, "an answer of the wrong kind; ignored"),
        }
    }

    fn commanded(&mut self, id: Uuid, result: Result<(), WsmanFailure>) {
        let Some(index) = self.pipes.iter().position(|p| p.id == id) else {
            return;
        };
        match result {
            Ok(()) => {
                let pipe = &mut self.pipes[index];
                pipe.commanded = true;
                if pipe.sends.is_empty() {
                    self.created(index);
                }
            }
            // A fault refuses this pipeline only (a quota of commands, say); a broken transport
            // ends the session.
            Err(error @ WsmanFailure::Soap(_)) => {
                let mut pipe = self.pipes.remove(index);
                if let Some(reply) = pipe.reply.take() {
                    let _ = reply.send(Err(SessionError::Wsman(error)));
                }
            }
            Err(error) => self.fail(SessionError::Wsman(error)),
        }
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.pool.next_event() {
            if self.failed.is_some() {
                continue;
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
                    if state.is_final() {
                        self.ended(pipeline);
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
                    let opened = Opened {
                        protocol_version: self.protocol_version.clone(),
                        adopted: std::mem::take(&mut self.adopted),
                    };
                    let _ = reply.send(Ok(opened));
                }
                // Pipelines left running by another client: their per-command Connect now.
                let adopted: Vec<Uuid> = self
                    .pipes
                    .iter_mut()
                    .filter(|p| p.phase == Phase::Adopted)
                    .map(|p| {
                        p.phase = Phase::Connecting;
                        p.id
                    })
                    .collect();
                for id in adopted {
                    let exchange = self.exchange.clone();
                    let envelope = exchange.client.connect_command(self.shell_id, id);
                    self.ops.spawn(async move {
                        let result = exchange.call(&envelope, parse_connect_response).await.map(|_| ());
                        (Op::ConnectCommand(id), Answer::Done(result))
                    });
                }
            }
            RunspacePoolState::Broken => {
                let message = error
                    .map(|e| error_record(&e).message().to_owned())
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "the server reported the runspace pool as Broken".to_owned());
                self.fail(SessionError::Broken { message });
            }
            RunspacePoolState::Closed if self.closing.is_none() => self.fail(SessionError::ClosedByServer),
            _ => {}
        }
    }

    // ---- sending: see `outgoing` ----------------------------------------------------------------

    // ---- time -----------------------------------------------------------------------------------

    fn next_deadline(&self) -> Option<Instant> {
        let open = self.opening.as_ref().map(|(_, deadline)| *deadline);
        let stops = self.pipes.iter().filter_map(|p| p.stop_deadline);
        open.into_iter().chain(stops).min()
    }

    fn expire(&mut self) {
        let now = Instant::now();
        if let Some((_, deadline)) = &self.opening
            && *deadline <= now
        {
            return self.fail(SessionError::OpenTimeout(self.options.open_timeout));
        }
        let timeout = self.options.operation_timeout;
        for pipe in &mut self.pipes {
            if pipe.stop_deadline.is_some_and(|d| d <= now) {
                // The server took the signal but the pipeline runs on: the stop failed, the
                // session did not.
                pipe.stop_deadline = None;
                for waiter in pipe.stop_waiters.drain(..) {
                    let _ = waiter.send(Err(SessionError::OperationTimeout {
                        what: "final state of a stopped pipeline",
                        timeout,
                    }));
                }
            }
        }
    }

    // ---- endings --------------------------------------------------------------------------------

    fn fail(&mut self, error: SessionError) {
        if self.failed.is_some() {
            return;
        }
        tracing::debug!(shell = %self.shell_id, reason = error.reason(), %error, "WSMan session failed");
        self.failed = Some(error.clone());
        if let Some((reply, _)) = self.opening.take() {
            let _ = reply.send(Err(error.clone()));
        }
        for reply in [self.disconnecting.take(), self.reconnecting.take()]
            .into_iter()
            .flatten()
        {
            let _ = reply.send(Err(error.clone()));
        }
        self.lose(error);
        self.pool.closed(true);
        while self.pool.next_event().is_some() {}
        self.end = true;
    }

    /// Ends every pipeline that had not ended, and the queue, with `error`.
    fn lose(&mut self, error: SessionError) {
        for mut pipe in self.pipes.drain(..) {
            if let Some(reply) = pipe.reply.take() {
                let _ = reply.send(Err(error.clone()));
            }
            for waiter in pipe.stop_waiters.drain(..) {
                let _ = waiter.send(Err(error.clone()));
            }
            if !pipe.ended {
                pipe.send(PipelineEvent::Lost(error.clone()));
            }
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
            RunspacePoolState::Disconnected if self.reconnecting.is_some() => RunspacePoolState::Connecting,
            state => state,
        };
        let availability = match state {
            // The crate's states have no Disconnecting: the pool is Opened but not usable.
            RunspacePoolState::Opened if self.disconnecting.is_some() => Availability::None,
            RunspacePoolState::Opened if !self.pipes.is_empty() => Availability::Busy,
            RunspacePoolState::Opened if self.closing.is_none() => Availability::Available,
            _ => Availability::None,
        };
        let next = SessionStatus {
            state,
            availability,
            error: self.failed.clone(),
            shell_id: Some(self.shell_id),
            wsman_session_id: Some(self.exchange.client.session_id),
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn closed(events: Option<&mpsc::UnboundedSender<Delivery>>) {
    match events {
        Some(events) => events.closed().await,
        None => std::future::pending().await,
    }
}

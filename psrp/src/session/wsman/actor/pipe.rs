//! One pipeline as the session task sees it: its phase, its queued Sends, its Receive loop and the
//! checkpoints its handle has not acknowledged yet.

use std::{collections::VecDeque, sync::Arc};

use bytes::Bytes;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use uuid::Uuid;

use super::Reply;
use crate::session::{Delivery, Flow, PipelineEvent, PipelineHandle, Receipt, SessionError, actor::Request};

/// Where a receive loop (the pool's, or a pipeline's) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loop {
    /// The next Receive may go (for a pipeline: once its events are acknowledged).
    Ready,
    InFlight,
    /// The shell is disconnected: nothing is asked until a Reconnect.
    Paused,
    /// The command is Done (or the pool closing): no more Receives.
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Command (and the Sends of the rest of CREATE_PIPELINE) under way.
    Creating,
    /// Taken over from an earlier client: its per-command Connect goes once the pool is Opened.
    Adopted,
    Connecting,
    Running,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopSignal {
    None,
    Wanted,
    Sent,
}

pub(super) struct Pipe {
    pub(super) id: Uuid,
    pub(super) phase: Phase,
    pub(super) reply: Option<oneshot::Sender<Result<PipelineHandle, SessionError>>>,
    pub(super) handle: Option<PipelineHandle>,
    pub(super) events: mpsc::UnboundedSender<Delivery>,
    pub(super) flow: Arc<Flow>,
    pub(super) handle_gone: bool,
    /// Fragments still to Send (the rest of CREATE_PIPELINE, input, host call answers), with
    /// their stream (`stdin`, `pr`); one Send in flight at a time keeps them in order.
    pub(super) sends: VecDeque<(&'static str, Bytes)>,
    pub(super) send_in_flight: bool,
    /// The Command was answered (its Sends may go).
    pub(super) commanded: bool,
    pub(super) receive: Loop,
    /// Receives of this pipeline so far (the `rsp:Receive/@SequenceId` of the next).
    pub(super) receives: u64,
    /// The OperationID of the next Receive (handed to the consumer with each batch).
    pub(super) next_operation: Uuid,
    /// The next Receive retransmits `next_operation`: one an earlier process sent.
    pub(super) resume: bool,
    /// Checkpoints handed to the handle and not yet acknowledged: the next Receive waits for 0.
    pub(super) unacknowledged: u64,
    /// Events delivered since the last checkpoint.
    pub(super) delivered: bool,
    pub(super) ended: bool,
    pub(super) signal: StopSignal,
    pub(super) stop_waiters: Vec<Reply>,
    pub(super) stop_deadline: Option<Instant>,
}

impl Pipe {
    pub(super) fn new(
        id: Uuid,
        phase: Phase,
        weak_requests: mpsc::WeakSender<Request>,
    ) -> (Pipe, PipelineHandle) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let flow = Arc::new(Flow::default());
        let handle = PipelineHandle {
            id,
            events: events_rx,
            flow: Arc::clone(&flow),
            requests: weak_requests,
            finished: false,
            checkpoints: true,
        };
        let pipe = Pipe {
            id,
            phase,
            reply: None,
            handle: None,
            events,
            flow,
            handle_gone: false,
            sends: VecDeque::new(),
            send_in_flight: false,
            commanded: false,
            receive: Loop::Finished,
            receives: 0,
            next_operation: Uuid::new_v4(),
            resume: false,
            unacknowledged: 0,
            delivered: false,
            ended: false,
            signal: StopSignal::None,
            stop_waiters: Vec::new(),
            stop_deadline: None,
        };
        (pipe, handle)
    }

    pub(super) fn send(&mut self, event: PipelineEvent) {
        if self.handle_gone {
            return;
        }
        self.flow.queued.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if self.events.send(Delivery::Event(event)).is_err() {
            self.flow.queued.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            self.handle_gone = true;
        } else {
            self.delivered = true;
        }
    }

    /// Closes the run of events delivered so far with a checkpoint.
    pub(super) fn checkpoint(&mut self, acks: &mpsc::UnboundedSender<Uuid>) {
        if !std::mem::take(&mut self.delivered) || self.handle_gone {
            return;
        }
        let receipt = Receipt {
            pipeline: self.id,
            acks: acks.clone(),
            next_operation: self.next_operation,
        };
        if self.events.send(Delivery::Checkpoint(receipt)).is_ok() {
            self.unacknowledged += 1;
        }
    }

    /// The next Receive may go: the loop is ready and everything delivered is acknowledged, or
    /// nobody listens any more, or a stop waits for the final state (which would otherwise wait
    /// for a consumer that is waiting for the stop).
    pub(super) fn may_receive(&self) -> bool {
        self.receive == Loop::Ready
            && (self.unacknowledged == 0 || self.handle_gone || self.signal == StopSignal::Sent)
    }
}

//! What goes to the server, and when: the pool's data sorted into Send queues (one Send in flight
//! per pool or pipeline keeps them in order), the Receive loops, a waiting Disconnect, the next
//! pipeline.

use bytes::Bytes;
use uuid::Uuid;

use super::{Actor, Answer, Loop, Op, Phase};
use crate::{
    pool::Outbound,
    session::actor::whole_fragment_packets,
    state::RunspacePoolState,
    wsman::{SendStream, namespaces::action, parse_empty_response},
};

impl Actor {
    /// Puts pool output for the server in the right queue.
    pub(super) fn route(&mut self, outbound: Outbound) {
        let stream = if outbound.prompt_response { "pr" } else { "stdin" };
        let chunks = whole_fragment_packets(outbound.data, self.send_capacity);
        match outbound.pipeline_id {
            None => self.pool_sends.extend(chunks.into_iter().map(|c| (stream, c))),
            Some(id) => match self.pipes.iter_mut().find(|p| p.id == id) {
                Some(pipe) => pipe.sends.extend(chunks.into_iter().map(|c| (stream, c))),
                None => tracing::debug!(pipeline = %id, "data for a pipeline that is gone; dropped"),
            },
        }
    }

    /// Sends what is ready: queued data, Receives, the next pipeline, a waiting Disconnect.
    pub(super) fn pump(&mut self) {
        if self.failed.is_some() || self.end {
            return;
        }
        // The select watches one handle; any other dropped one is seen here, at the next wake.
        if self.pipes.len() > 1 {
            self.on_handles_gone();
        }
        while let Some(outbound) = self.pool.take_outbound() {
            self.route(outbound);
        }
        let disconnected = self.pool.state() == RunspacePoolState::Disconnected || self.delete_sent;
        if !disconnected {
            if !self.pool_send_in_flight
                && let Some((stream, data)) = self.pool_sends.pop_front()
            {
                self.pool_send_in_flight = true;
                self.spawn_send(None, stream, data);
            }
            for index in 0..self.pipes.len() {
                let pipe = &mut self.pipes[index];
                if !pipe.send_in_flight
                    && (pipe.commanded || pipe.phase != Phase::Creating)
                    && let Some((stream, data)) = pipe.sends.pop_front()
                {
                    pipe.send_in_flight = true;
                    let id = pipe.id;
                    self.spawn_send(Some(id), stream, data);
                }
            }
        }
        let receiving = !disconnected && self.disconnecting.is_none();
        if receiving && self.pool_receive == Loop::Ready {
            self.pool_receive = Loop::InFlight;
            let sequence = self.pool_receives;
            self.pool_receives += 1;
            self.spawn_receive(None, sequence, Uuid::new_v4(), false);
        }
        if receiving {
            for index in 0..self.pipes.len() {
                let pipe = &mut self.pipes[index];
                if pipe.phase == Phase::Running && pipe.may_receive() {
                    pipe.receive = Loop::InFlight;
                    let (id, sequence) = (pipe.id, pipe.receives);
                    pipe.receives += 1;
                    let (operation, again) = (pipe.next_operation, std::mem::take(&mut pipe.resume));
                    pipe.next_operation = Uuid::new_v4();
                    self.spawn_receive(Some(id), sequence, operation, again);
                }
            }
        }
        self.maybe_disconnect();
        self.finish_disconnect();
        self.start_next();
    }

    pub(super) fn spawn_send(&mut self, pipeline: Option<Uuid>, stream: &'static str, data: Bytes) {
        let exchange = self.exchange.clone();
        let envelope = exchange.client.send_streams(
            self.shell_id,
            vec![SendStream {
                name: stream.to_owned(),
                command_id: pipeline,
                end: None,
                data: data.to_vec(),
            }],
        );
        self.ops.spawn(async move {
            let result = exchange
                .call(&envelope, |b| parse_empty_response(b, action::SEND_RESPONSE))
                .await
                .map(|_| ());
            (Op::Send(pipeline), Answer::Done(result))
        });
    }

    pub(super) fn spawn_receive(
        &mut self,
        pipeline: Option<Uuid>,
        sequence: u64,
        operation: Uuid,
        again: bool,
    ) {
        let exchange = self.exchange.clone();
        let shell_id = self.shell_id;
        self.ops.spawn(async move {
            let result = exchange
                .receive(shell_id, pipeline, sequence, operation, again)
                .await;
            let op = match pipeline {
                Some(id) => Op::Receive(id),
                None => Op::PoolReceive,
            };
            (op, Answer::Receive(result))
        });
    }
}

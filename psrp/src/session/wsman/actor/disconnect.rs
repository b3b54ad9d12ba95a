//! Disconnect and Reconnect of the shell (MS-PSRP 3.1.4.9, 3.1.4.10.2): when the Disconnect goes,
//! when it counts as done, and how the Receive loops stop and resume around it.

use std::time::Duration;

use super::{Actor, Answer, Loop, Op, Phase, Reply};
use crate::{
    session::{SessionError, wsman::error::WsmanFailure},
    state::RunspacePoolState,
    wsman::{BufferMode, namespaces::action, parse_empty_response},
};

impl Actor {
    pub(super) fn disconnect(&mut self, idle_timeout: Duration, buffer_mode: BufferMode, reply: Reply) {
        if let Some(error) = self.refusal() {
            let _ = reply.send(Err(error));
            return;
        }
        if idle_timeout < Duration::from_secs(60) {
            let _ = reply.send(Err(SessionError::Wsman(WsmanFailure::IdleTimeoutTooShort(
                idle_timeout,
            ))));
            return;
        }
        let state = self.pool.state();
        if state != RunspacePoolState::Opened || self.disconnecting.is_some() || self.reconnecting.is_some() {
            let _ = reply.send(Err(SessionError::InvalidState {
                state,
                action: "a disconnect",
            }));
            return;
        }
        // A pipeline being created, or with data on its way, finishes that first (MS-PSRP 3.1.4.9:
        // wait for outstanding Sends); the Disconnect then goes from `pump`.
        self.disconnecting = Some(reply);
        self.pending_disconnect = Some((idle_timeout, buffer_mode));
    }

    pub(super) fn reconnect(&mut self, reply: Reply) {
        if let Some(error) = self.refusal() {
            let _ = reply.send(Err(error));
            return;
        }
        let state = self.pool.state();
        if state != RunspacePoolState::Disconnected || self.reconnecting.is_some() {
            let _ = reply.send(Err(SessionError::InvalidState {
                state,
                action: "a reconnect",
            }));
            return;
        }
        self.reconnecting = Some(reply);
        let exchange = self.exchange.clone();
        let envelope = exchange.client.reconnect(self.shell_id);
        self.ops.spawn(async move {
            let result = exchange
                .call(&envelope, |b| parse_empty_response(b, action::RECONNECT_RESPONSE))
                .await
                .map(|_| ());
            (Op::Reconnect, Answer::Done(result))
        });
    }

    /// Completes a Disconnect the server has answered once no Receive is in flight any more (the
    /// pending ones return what the server had, then `ShellDisconnected`): so the handles get that
    /// output before their `State { Disconnected }`, and [`crate::session::Session::disconnect`]
    /// returns with everything received already queued to them.
    pub(super) fn finish_disconnect(&mut self) {
        let receiving =
            self.pool_receive == Loop::InFlight || self.pipes.iter().any(|p| p.receive == Loop::InFlight);
        if receiving || self.disconnect_answer.is_none() {
            return;
        }
        let reply = self.disconnecting.take();
        let outcome = match self.disconnect_answer.take() {
            Some(Ok(())) => self.pool.disconnected().map_err(SessionError::from),
            Some(Err(error)) => Err(SessionError::Wsman(error)),
            None => return,
        };
        match &outcome {
            Ok(()) => {
                self.drain_events();
                self.checkpoints();
            }
            Err(_) => self.resume_loops(),
        }
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }

    /// Sends the Disconnect once no pipeline is being created and no Send is outstanding.
    pub(super) fn maybe_disconnect(&mut self) {
        let Some((idle_timeout, buffer_mode)) = self.pending_disconnect else {
            return;
        };
        let busy = self.pool_send_in_flight
            || !self.pool_sends.is_empty()
            || self
                .pipes
                .iter()
                .any(|p| p.phase == Phase::Creating || p.send_in_flight || !p.sends.is_empty());
        if busy {
            return;
        }
        self.pending_disconnect = None;
        let exchange = self.exchange.clone();
        let envelope = exchange
            .client
            .disconnect(self.shell_id, Some(buffer_mode), Some(idle_timeout));
        self.ops.spawn(async move {
            let result = exchange
                .call(&envelope, |b| {
                    parse_empty_response(b, action::DISCONNECT_RESPONSE)
                })
                .await
                .map(|_| ());
            (Op::Disconnect, Answer::Done(result))
        });
    }

    /// After a Reconnect (or a refused Disconnect), the loops paused by the disconnect go on.
    pub(super) fn resume_loops(&mut self) {
        if self.pool_receive == Loop::Paused {
            self.pool_receive = Loop::Ready;
        }
        for pipe in &mut self.pipes {
            if pipe.receive == Loop::Paused {
                pipe.receive = Loop::Ready;
            }
        }
    }
}

//! What a Receive brought (fragments into the pool, events to the handles, the command's Done) and
//! what a failed one means (ask again, pause for a disconnect, or the session is lost).

use uuid::Uuid;

use super::{Actor, Loop};
use crate::{
    session::{PipelineEvent, SessionError, wsman::error::WsmanFailure},
    state::RunspacePoolState,
    wsman::{CommandStateKind, ReceiveResponse},
};

impl Actor {
    pub(super) fn received(&mut self, pipeline: Option<Uuid>, response: ReceiveResponse) {
        for stream in &response.streams {
            if stream.data.is_empty() {
                continue;
            }
            if let Err(error) = self.pool.receive(&stream.data) {
                return self.fail(error.into());
            }
        }
        self.drain_events();
        self.checkpoints();
        let Some(id) = pipeline else { return };
        let done = response
            .command_state
            .as_ref()
            .is_some_and(|s| s.state == CommandStateKind::Done && s.command_id.is_none_or(|c| c == id));
        let Some(pipe) = self.pipes.iter_mut().find(|p| p.id == id) else {
            return;
        };
        if done || pipe.ended {
            pipe.receive = Loop::Finished;
        }
        if done && !pipe.ended {
            // The server has nothing more for a pipeline that never reported its end.
            pipe.send(PipelineEvent::Lost(SessionError::ClosedByServer));
            pipe.ended = true;
            self.forget_finished();
        }
    }

    pub(super) fn receive_failed(&mut self, pipeline: Option<Uuid>, error: WsmanFailure) {
        if error.is_receive_timeout() {
            return; // nothing within the OperationTimeout: ask again
        }
        let quiet = self.closing.is_some()
            || self.disconnecting.is_some()
            || self.pool.state() == RunspacePoolState::Disconnected;
        let expected = matches!(
            error.reason(),
            "ShellDisconnected" | "OperationAborted" | "ShellNotFound"
        );
        if quiet && (expected || self.closing.is_some()) {
            let state = if self.closing.is_some() {
                Loop::Finished
            } else {
                Loop::Paused
            };
            match pipeline {
                None => self.pool_receive = state,
                Some(id) => {
                    if let Some(pipe) = self.pipes.iter_mut().find(|p| p.id == id) {
                        pipe.receive = state;
                    }
                }
            }
            return;
        }
        self.fail(SessionError::Wsman(error));
    }
}

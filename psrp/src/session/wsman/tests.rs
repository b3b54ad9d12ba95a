//! The handle's side of persist-before-acknowledge, without a server: batches end exactly at the
//! task's checkpoints, an acknowledgement reaches the task, and only an explicit one does.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    clixml::PsValue,
    session::{Delivery, Flow, PipelineEvent, PipelineHandle, Receipt, SessionError},
    state::PipelineState,
};

struct Task {
    events: mpsc::UnboundedSender<Delivery>,
    acks: mpsc::UnboundedSender<Uuid>,
    acks_rx: mpsc::UnboundedReceiver<Uuid>,
    id: Uuid,
}

impl Task {
    fn output(&self, n: i32) {
        self.events
            .send(Delivery::Event(PipelineEvent::Output(PsValue::I32(n))))
            .expect("handle alive");
    }

    fn checkpoint(&self) {
        let receipt = Receipt {
            pipeline: self.id,
            acks: self.acks.clone(),
            next_operation: Uuid::nil(),
        };
        self.events
            .send(Delivery::Checkpoint(receipt))
            .expect("handle alive");
    }

    fn acknowledged(&mut self) -> usize {
        std::iter::from_fn(|| self.acks_rx.try_recv().ok()).count()
    }
}

fn pipeline() -> (Task, PipelineHandle) {
    let (events, events_rx) = mpsc::unbounded_channel();
    let (acks, acks_rx) = mpsc::unbounded_channel();
    let (requests, _) = mpsc::channel(1);
    let id = Uuid::new_v4();
    let handle = PipelineHandle {
        id,
        events: events_rx,
        flow: Arc::new(Flow::default()),
        requests: requests.downgrade(),
        finished: false,
        checkpoints: true,
    };
    (
        Task {
            events,
            acks,
            acks_rx,
            id,
        },
        handle,
    )
}

fn outputs(events: &[PipelineEvent]) -> Vec<i32> {
    events
        .iter()
        .filter_map(|e| match e {
            PipelineEvent::Output(PsValue::I32(n)) => Some(*n),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_batch_is_what_lies_between_checkpoints_even_when_it_arrives_in_pieces() {
    let (mut task, mut handle) = pipeline();
    task.output(1);
    let events = task.events.clone();
    let (acks, id) = (task.acks.clone(), task.id);
    // The rest of the response and its checkpoint come a moment later.
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = events.send(Delivery::Event(PipelineEvent::Output(PsValue::I32(2))));
        let _ = events.send(Delivery::Checkpoint(Receipt {
            pipeline: id,
            acks,
            next_operation: Uuid::nil(),
        }));
    });
    let batch = handle.next_batch().await.expect("a batch");
    late.await.expect("sender");
    assert_eq!(outputs(&batch.events), [1, 2]);
    assert!(batch.needs_acknowledgement());
    assert_eq!(
        task.acknowledged(),
        0,
        "nothing acknowledged before the caller says so"
    );
    batch.acknowledge();
    assert_eq!(task.acknowledged(), 1);

    // A batch dropped unacknowledged stays unacknowledged.
    task.output(3);
    task.checkpoint();
    let batch = handle.next_batch().await.expect("a batch");
    assert_eq!(outputs(&batch.events), [3]);
    drop(batch);
    assert_eq!(task.acknowledged(), 0);
}

#[tokio::test]
async fn next_event_acknowledges_what_it_took_and_the_last_batch_ends_the_handle() {
    let (mut task, mut handle) = pipeline();
    task.output(1);
    task.checkpoint();
    task.output(2);
    task.events
        .send(Delivery::Event(PipelineEvent::State {
            state: PipelineState::Completed,
            error: None,
        }))
        .expect("alive");
    task.checkpoint();
    assert!(matches!(
        handle.next_event().await,
        Some(PipelineEvent::Output(PsValue::I32(1)))
    ));
    assert_eq!(
        task.acknowledged(),
        0,
        "taken, but the caller has not come back yet"
    );
    // Coming back for more acknowledges the first response.
    let batch = handle.next_batch().await.expect("the last batch");
    assert_eq!(task.acknowledged(), 1);
    assert_eq!(outputs(&batch.events), [2]);
    assert!(batch.events.last().is_some_and(PipelineEvent::is_last));
    assert!(
        batch.needs_acknowledgement(),
        "the checkpoint after the last event belongs to it"
    );
    batch.acknowledge();
    assert_eq!(task.acknowledged(), 1);
    assert!(handle.next_batch().await.is_none());
    assert!(handle.next_event().await.is_none());
}

#[tokio::test]
async fn a_lost_session_ends_the_batch_without_a_checkpoint() {
    let (task, mut handle) = pipeline();
    task.output(1);
    task.events
        .send(Delivery::Event(PipelineEvent::Lost(SessionError::Closed)))
        .expect("alive");
    let batch = tokio::time::timeout(Duration::from_secs(5), handle.next_batch())
        .await
        .expect("no wait for a checkpoint after a loss")
        .expect("a batch");
    assert_eq!(outputs(&batch.events), [1]);
    assert!(matches!(batch.events.last(), Some(PipelineEvent::Lost(_))));
    assert!(!batch.needs_acknowledgement());
    // The task gone without a last event: the handle says so once.
    let (task, mut handle) = pipeline();
    drop(task);
    let batch = handle.next_batch().await.expect("a batch");
    assert!(matches!(
        batch.events.as_slice(),
        [PipelineEvent::Lost(SessionError::Closed)]
    ));
    assert!(handle.next_batch().await.is_none());
}

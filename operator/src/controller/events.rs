//! Kubernetes Events with the condition reasons, so `kubectl describe` tells the story.
//!
//! Events are queued and written by one task, in order, within the process's write budget, so
//! neither a reconcile nor a session worker ever waits for one.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Resource,
    runtime::events::{Event, EventType},
};
use tokio::sync::mpsc;
use tracing::debug;

use super::Context;
use crate::{
    api::{PSJob, PSSession},
    registry::{ObjectKey, Transition},
};

/// Which kind of object an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Subject {
    Session,
    Job,
}

/// An event waiting to be written.
pub(super) struct Queued {
    pub subject: Subject,
    pub key: ObjectKey,
    pub transition: Transition,
}

fn reference<K: Resource<DynamicType = ()>>(key: &ObjectKey) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: Some(key.namespace.clone()),
        name: Some(key.name.clone()),
        uid: Some(key.uid.clone()),
        ..ObjectReference::default()
    }
}

/// Writes queued events until `drain` fires, then writes what is still queued (the Closing and
/// Closed events of a graceful stop among them) and returns. The caller bounds that last part.
pub(super) async fn run(
    ctx: std::sync::Arc<Context>,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    drain: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            queued = queue.recv() => match queued {
                Some(queued) => write(&ctx, queued).await,
                None => return,
            },
            _ = drain.cancelled() => break,
        }
    }
    while let Ok(queued) = queue.try_recv() {
        write(&ctx, queued).await;
    }
}

async fn write(ctx: &Context, queued: Queued) {
    let Queued {
        subject,
        key,
        transition,
    } = queued;
    let (reference, action) = match subject {
        Subject::Session => (reference::<PSSession>(&key), "Session"),
        Subject::Job => (reference::<PSJob>(&key), "Job"),
    };
    let event = Event {
        type_: if transition.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: transition.reason.as_str().to_owned(),
        note: Some(transition.message.chars().take(1000).collect()),
        action: action.to_owned(),
        secondary: None,
    };
    ctx.pace().await;
    // An event that cannot be written is not worth failing anything for.
    if let Err(error) = ctx.recorder.publish(&event, &reference).await {
        debug!(error = %error, "event not written");
    }
}

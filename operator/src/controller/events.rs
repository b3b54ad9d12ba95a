//! Kubernetes Events with the condition reasons, so `kubectl describe` tells the story.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Resource,
    runtime::events::{Event, EventType},
};
use tracing::debug;

use super::Context;
use crate::{
    api::{PSJob, PSSession},
    reason::Reason,
    registry::{ObjectKey, Transition},
};

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

async fn publish(
    ctx: &Context,
    reference: &ObjectReference,
    reason: Reason,
    warning: bool,
    message: &str,
    action: &str,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.as_str().to_owned(),
        note: Some(message.chars().take(1000).collect()),
        action: action.to_owned(),
        secondary: None,
    };
    // An event that cannot be written is not worth failing anything for.
    ctx.pace().await;
    if let Err(error) = ctx.recorder.publish(&event, reference).await {
        debug!(error = %error, "event not written");
    }
}

pub(super) async fn publish_session(ctx: &Context, key: &ObjectKey, transition: &Transition) {
    let reference = reference::<PSSession>(key);
    publish(
        ctx,
        &reference,
        transition.reason,
        transition.warning,
        &transition.message,
        "Session",
    )
    .await;
}

pub(super) async fn publish_job(
    ctx: &Context,
    key: &ObjectKey,
    reason: Reason,
    warning: bool,
    message: &str,
) {
    let reference = reference::<PSJob>(key);
    publish(ctx, &reference, reason, warning, message, "Job").await;
}

pub(super) async fn publish_invalid<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    key: &ObjectKey,
    message: &str,
) {
    let reference = reference::<K>(key);
    publish(ctx, &reference, Reason::InvalidObject, true, message, "Read").await;
}

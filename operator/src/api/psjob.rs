//! `PSJob`: a script run inside a PSSession; a child of that session.

// kube's `printcolumn(...)` repeats its keys once per column, which this lint mistakes for a slip.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema, core::Duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DURATION_PATTERN, LocalObjectReference};

/// A script run in a PSSession. Jobs of one session run one at a time, in creation order.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "psremoting.dev",
    version = "v1alpha1",
    kind = "PSJob",
    plural = "psjobs",
    singular = "psjob",
    category = "psremoting",
    namespaced,
    status = "PSJobStatus",
    doc = "A PowerShell script run inside a PSSession.",
    printcolumn(
        name = "Session",
        type_ = "string",
        json_path = ".spec.sessionRef.name",
        description = "The PSSession it runs in"
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "Job state"
    ),
    printcolumn(
        name = "Started",
        type_ = "date",
        json_path = ".status.startTime",
        description = "When the script started"
    ),
    printcolumn(
        name = "Duration",
        type_ = "string",
        json_path = ".status.duration",
        description = "How long the script ran"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: create a new PSJob to run a changed script"))]
pub struct PSJobSpec {
    /// The PSSession, in this namespace, the script runs in.
    pub session_ref: LocalObjectReference,

    /// The PowerShell script. A `param(...)` block at its start receives `parameters`.
    #[schemars(length(min = 1, max = 262144))]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("script must not be blank"))]
    pub script: String,

    /// Parameters bound to the script's `param(...)` block by name, keeping their JSON types
    /// (string, number, bool, list, map). Names are PowerShell identifiers; the controller fails a
    /// job whose names are not (the schema cannot check the keys of a map of untyped values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "parameters_schema")]
    pub parameters: BTreeMap<String, serde_json::Value>,

    /// Stop the script when it has run this long (like a Job's activeDeadlineSeconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')").message("timeout must be greater than 0"))]
    pub timeout: Option<Duration>,

    /// Delete the job this many seconds after it finished. Beware with GitOps: a tool that owns the
    /// job recreates it, and the script runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,

    /// Size of the output tail kept in status (256-32768 bytes). The full output goes to a ConfigMap
    /// the job owns, capped below 1 MiB.
    #[serde(default = "default_output_limit_bytes")]
    #[schemars(range(min = 256, max = 32768))]
    pub output_limit_bytes: i32,
}

/// A map whose values keep any JSON type. Written by hand because schemars renders a
/// `serde_json::Value` as `true`, which is not a structural schema.
fn parameters_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true },
    })
}

fn default_output_limit_bytes() -> i32 {
    4096
}

/// Observed state of a PSJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PSJobStatus {
    /// Where the job is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    /// Jobs of the session ahead of this one (0: next to run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i32>,
    /// When the script started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the script finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// How long the script ran, as a Go-style duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Whether the script wrote to the error stream or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub had_errors: Option<bool>,
    /// The tail of the output, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The tails of the other streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<PSJobStreams>,
    /// The ConfigMap, owned by the job, that holds the full output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_config_map: Option<String>,
    /// Whether the output was cut (in status or in the ConfigMap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Complete or Failed, as a Job's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Tails of the PowerShell streams other than output.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct PSJobStreams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub information: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
}

/// Where a PSJob is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed,
    Stopped,
    Disconnected,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_keep_their_json_types_and_defaults_apply() {
        let spec: PSJobSpec = serde_json::from_value(serde_json::json!({
            "sessionRef": {"name": "web01"},
            "script": "param($A, $B)\n$A",
            "parameters": {"A": 1, "B": {"k": [true, "x", null]}},
        }))
        .expect("job spec parses");
        assert_eq!(spec.output_limit_bytes, 4096);
        assert_eq!(spec.parameters["A"], serde_json::json!(1));
        assert_eq!(spec.parameters["B"], serde_json::json!({"k": [true, "x", null]}));
        assert_eq!(spec.timeout, None);
    }
}

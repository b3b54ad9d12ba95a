//! Types shared by the PSSession and PSJob APIs.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A reference to an object by name in the namespace of the referring object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct LocalObjectReference {
    /// Name of the object, in the same namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

impl LocalObjectReference {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// A Go-style duration string ("30s", "5m", "1h30m"), as kube's `Duration` parses it.
/// The schema pattern refuses anything else at admission, before a CEL rule calls `duration()`.
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

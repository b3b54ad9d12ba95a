//! The operator's API, `psremoting.dev/v1alpha1`: the Rust types the CRDs are generated from.

mod common;
pub mod conditions;
pub mod psjob;
pub mod pssession;

pub use common::LocalObjectReference;
pub use psjob::{JobState, PSJob, PSJobSpec, PSJobStatus, PSJobStreams};
pub use pssession::{
    Attach, Authentication, Availability, DesiredState, OutputBufferingMode, PSSession, PSSessionSpec,
    PSSessionStatus, RunspaceState, Transport,
};

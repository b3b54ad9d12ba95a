//! The end-to-end harness: a real control plane ([`controlplane`]) and real target hosts
//! ([`hosts`]) for the operator's tests.

pub mod chart;
pub mod controlplane;
pub mod crds;
pub mod hosts;
pub mod operator;
pub mod tasks;
pub mod wsman_peer;

pub use controlplane::{
    ControlPlane, KubectlOutput, Options as ControlPlaneOptions, TestNamespace, kubectl_in, test_namespace,
};

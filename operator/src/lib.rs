//! pssession-operator: PowerShell remote sessions as Kubernetes objects.
//!
//! `api` holds the CRD types; `crds` renders them as the manifests checked in under `crds/`.

pub mod api;
pub mod api_docs;
pub mod controller;
pub mod crds;
pub mod credentials;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod reason;
pub mod registry;
pub mod telemetry;

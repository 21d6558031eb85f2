//! Kubernetes operator for edgeserve.
//!
//! Watches `ModelDeployment` custom resources (`edgeserve.dev/v1alpha1`) and, for each tier a
//! resource asks for (`edge`, `datacenter` or `both`), server-side applies a Deployment of the
//! edgeserve host, a Service in front of it and, when autoscaled, a HorizontalPodAutoscaler.
//! Tiers no longer asked for are deleted; a finalizer removes everything when the resource
//! goes; the resource's status reports per-tier ready replicas and `Ready`, `Progressing` and
//! `Degraded` conditions.
//!
//! - [`crd`]: the custom resource types (the CRD YAML is generated from them).
//! - [`template`]: the edgeserve pod template, shared with the manifests in `k8s/`.
//! - [`manifests`]: the files of `k8s/` generated from the template (`manifestgen`).
//! - [`resources`]: pure builders of the desired child objects.
//! - [`status`]: pure status and condition computation.
//! - [`controller`]: the reconciler, its error policy and [`controller::run`].

#![warn(missing_docs)]

pub mod controller;
pub mod crd;
pub mod manifests;
pub mod resources;
pub mod status;
pub mod template;
#[cfg(test)]
mod test_support;

pub use controller::{Context, run};
pub use crd::{ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus};

/// Why a reconciliation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// The `ModelDeployment` lacks a field the API server always sets (namespace, uid).
    #[error("ModelDeployment has no metadata.{0}")]
    MissingObjectKey(&'static str),
    /// Adding or removing the finalizer, or the reconciliation it wraps, failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

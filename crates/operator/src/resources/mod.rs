//! Desired child objects of a `ModelDeployment`: pure functions from the custom resource to
//! the Deployment, Service and HorizontalPodAutoscaler of each tier.
//!
//! Nothing here talks to the API server, so every rule (names, labels, owner references,
//! devices, GPU limits, probes, autoscaling metrics) is unit-tested without a cluster. The
//! pods come from the same template as `k8s/base` and the overlays ([`crate::template`]).
//!
//! - this module: names, labels, owner references, the Service and [`desired`];
//! - [`deployment()`]: the host pods;
//! - [`hpa()`]: the autoscaler.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::Error;
use crate::crd::{DeployedTier, ModelDeployment, Tier};
pub use crate::template::{CONTAINER_NAME, GRPC_PORT, HTTP_PORT, TIER_LABEL};

mod deployment;
mod hpa;

pub use deployment::{bundle_reference, deployment};
pub use hpa::{DEFAULT_CPU_UTILIZATION, INFLIGHT_METRIC, hpa};

/// Label naming the `ModelDeployment` a child object belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Label naming the served model.
pub const MODEL_LABEL: &str = "edgeserve.dev/model";
/// Value of `app.kubernetes.io/managed-by` on every child object.
pub const MANAGER: &str = "edgeserve-operator";

/// Every child object of one tier.
#[derive(Clone, Debug, PartialEq)]
pub struct TierObjects {
    /// Which tier these objects serve.
    pub tier: DeployedTier,
    /// The host pods.
    pub deployment: Deployment,
    /// The ClusterIP Service in front of them.
    pub service: Service,
    /// The autoscaler, when the spec asks for autoscaling.
    pub hpa: Option<HorizontalPodAutoscaler>,
}

/// Name of a tier's Deployment, Service and HPA: `<md-name>-<tier>`.
pub fn child_name(md_name: &str, tier: DeployedTier) -> String {
    format!("{md_name}-{}", tier.as_str())
}

/// In-cluster base URL of a tier's Service.
pub fn service_url(md_name: &str, namespace: &str, tier: DeployedTier) -> String {
    format!(
        "http://{}.{namespace}.svc:{HTTP_PORT}",
        child_name(md_name, tier)
    )
}

/// The child objects of every tier the spec asks for, datacenter first.
pub fn desired(md: &ModelDeployment) -> Result<Vec<TierObjects>, Error> {
    md.spec
        .tier
        .deployed()
        .iter()
        .map(|&tier| {
            Ok(TierObjects {
                tier,
                deployment: deployment(md, tier)?,
                service: service(md, tier)?,
                hpa: hpa(md, tier)?,
            })
        })
        .collect()
}

/// Labels that select a tier's pods. Kept to stable values: a Deployment's selector is
/// immutable, so nothing the user may edit (such as the model name) belongs here.
pub fn selector_labels(md_name: &str, tier: DeployedTier) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            crate::template::APP_NAME.to_owned(),
        ),
        (INSTANCE_LABEL.to_owned(), md_name.to_owned()),
        (TIER_LABEL.to_owned(), tier.as_str().to_owned()),
    ])
}

/// Labels on every child object and pod of a tier.
pub fn labels(md: &ModelDeployment, tier: DeployedTier) -> BTreeMap<String, String> {
    let mut labels = selector_labels(&md.name_any(), tier);
    labels.insert(
        "app.kubernetes.io/component".to_owned(),
        "model-server".to_owned(),
    );
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        MANAGER.to_owned(),
    );
    labels.insert(MODEL_LABEL.to_owned(), md.spec.model.clone());
    labels
}

/// Name, namespace, labels and the controlling owner reference, which lets the garbage
/// collector remove children with their `ModelDeployment` and routes their events to it.
fn child_meta(md: &ModelDeployment, tier: DeployedTier) -> Result<ObjectMeta, Error> {
    let namespace = md.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let owner = md
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey("uid"))?;
    Ok(ObjectMeta {
        name: Some(child_name(&md.name_any(), tier)),
        namespace: Some(namespace),
        labels: Some(labels(md, tier)),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    })
}

/// The edge tier's offload target: the spec's `upstream`, else the datacenter Service when
/// both tiers are deployed. The datacenter tier never offloads.
pub fn upstream(md: &ModelDeployment, tier: DeployedTier) -> Result<Option<String>, Error> {
    if tier != DeployedTier::Edge {
        return Ok(None);
    }
    if let Some(upstream) = &md.spec.upstream {
        return Ok(Some(upstream.clone()));
    }
    if md.spec.tier != Tier::Both {
        return Ok(None);
    }
    let namespace = md.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    Ok(Some(service_url(
        &md.name_any(),
        &namespace,
        DeployedTier::Datacenter,
    )))
}

/// A tier's ClusterIP Service: OIP over HTTP on port 8000 ("http"), over gRPC on 8001
/// ("grpc").
pub fn service(md: &ModelDeployment, tier: DeployedTier) -> Result<Service, Error> {
    Ok(Service {
        metadata: child_meta(md, tier)?,
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&md.name_any(), tier)),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".to_owned()),
                    port: HTTP_PORT,
                    target_port: Some(IntOrString::String("http".to_owned())),
                    protocol: Some("TCP".to_owned()),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("grpc".to_owned()),
                    port: GRPC_PORT,
                    target_port: Some(IntOrString::String("grpc".to_owned())),
                    protocol: Some("TCP".to_owned()),
                    // HTTP/2 without TLS, so meshes and gateways route it as gRPC.
                    app_protocol: Some("kubernetes.io/h2c".to_owned()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{NS, UID, autoscaled, model_deployment, named_ports};

    #[test]
    fn tiers_map_to_deployed_tiers() {
        assert_eq!(
            model_deployment(Tier::Edge).spec.tier.deployed(),
            &[DeployedTier::Edge]
        );
        assert_eq!(
            model_deployment(Tier::Datacenter).spec.tier.deployed(),
            &[DeployedTier::Datacenter]
        );
        let both = desired(&model_deployment(Tier::Both)).unwrap();
        let names: Vec<_> = both
            .iter()
            .map(|t| t.deployment.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["digits-datacenter", "digits-edge"]);
    }

    #[test]
    fn every_child_is_owned_by_the_model_deployment_as_controller() {
        for objects in desired(&autoscaled(Tier::Both, None, None)).unwrap() {
            let metas = [
                &objects.deployment.metadata,
                &objects.service.metadata,
                &objects.hpa.as_ref().unwrap().metadata,
            ];
            for meta in metas {
                let owners = meta.owner_references.as_ref().unwrap();
                assert_eq!(owners.len(), 1);
                let owner = &owners[0];
                assert_eq!(owner.api_version, "edgeserve.dev/v1alpha1");
                assert_eq!(owner.kind, "ModelDeployment");
                assert_eq!(owner.name, "digits");
                assert_eq!(owner.uid, UID);
                assert_eq!(owner.controller, Some(true));
                assert_eq!(meta.namespace.as_deref(), Some(NS));
                let labels = meta.labels.as_ref().unwrap();
                assert_eq!(labels[TIER_LABEL], objects.tier.as_str());
                assert_eq!(labels[MODEL_LABEL], "digits");
                assert_eq!(labels["app.kubernetes.io/managed-by"], MANAGER);
            }
        }
    }

    #[test]
    fn an_object_without_uid_or_namespace_is_an_error() {
        let mut no_uid = model_deployment(Tier::Edge);
        no_uid.metadata.uid = None;
        assert!(matches!(
            deployment(&no_uid, DeployedTier::Edge),
            Err(Error::MissingObjectKey("uid"))
        ));
        let mut no_ns = model_deployment(Tier::Edge);
        no_ns.metadata.namespace = None;
        assert!(matches!(
            service(&no_ns, DeployedTier::Edge),
            Err(Error::MissingObjectKey("namespace"))
        ));
    }

    #[test]
    fn service_selects_the_tier_pods_on_ports_8000_and_8001() {
        let md = model_deployment(Tier::Both);
        let svc = service(&md, DeployedTier::Datacenter).unwrap();
        let d = deployment(&md, DeployedTier::Datacenter).unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(
            spec.selector,
            d.spec.unwrap().selector.match_labels,
            "Service and Deployment select the same pods"
        );
        let ports = named_ports(spec.ports.iter().flatten(), |p| (&p.name, p.port));
        assert_eq!(ports, [("http", 8000), ("grpc", 8001)]);
        assert_eq!(svc.metadata.name.as_deref(), Some("digits-datacenter"));
    }

    #[test]
    fn applied_objects_carry_api_version_and_kind() {
        // Server-side apply needs apiVersion and kind in the body.
        let objects = &desired(&autoscaled(Tier::Edge, None, None)).unwrap()[0];
        let d = serde_json::to_value(&objects.deployment).unwrap();
        assert_eq!(d["apiVersion"], "apps/v1");
        assert_eq!(d["kind"], "Deployment");
        let h = serde_json::to_value(objects.hpa.as_ref().unwrap()).unwrap();
        assert_eq!(h["apiVersion"], "autoscaling/v2");
        let s = serde_json::to_value(&objects.service).unwrap();
        assert_eq!(s["apiVersion"], "v1");
    }
}

//! A tier's HorizontalPodAutoscaler (autoscaling/v2).

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use super::{child_meta, child_name};
use crate::Error;
use crate::crd::{DeployedTier, ModelDeployment};

/// Metric the HPA reads for the in-flight target (the host's gauge, exported per pod).
pub const INFLIGHT_METRIC: &str = "edgeserve_inflight_requests";
/// CPU utilization target used when autoscaling names no target at all.
pub const DEFAULT_CPU_UTILIZATION: i32 = 70;
/// A tier's autoscaler (autoscaling/v2), or `None` when the spec sets no autoscaling.
///
/// Scales on CPU utilization and, when `targetInflight` is set, on the host's in-flight
/// request gauge as a Pods metric (this needs a custom-metrics adapter such as
/// prometheus-adapter serving `edgeserve_inflight_requests`).
pub fn hpa(
    md: &ModelDeployment,
    tier: DeployedTier,
) -> Result<Option<HorizontalPodAutoscaler>, Error> {
    let Some(autoscaling) = &md.spec.autoscaling else {
        return Ok(None);
    };
    let mut metrics = Vec::new();
    let cpu = match (
        autoscaling.target_cpu_utilization,
        autoscaling.target_inflight,
    ) {
        (Some(cpu), _) => Some(cpu),
        // No target at all: scale on CPU rather than not at all.
        (None, None) => Some(DEFAULT_CPU_UTILIZATION),
        (None, Some(_)) => None,
    };
    if let Some(cpu) = cpu {
        metrics.push(MetricSpec {
            type_: "Resource".to_owned(),
            resource: Some(ResourceMetricSource {
                name: "cpu".to_owned(),
                target: MetricTarget {
                    type_: "Utilization".to_owned(),
                    average_utilization: Some(cpu),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    if let Some(inflight) = autoscaling.target_inflight {
        metrics.push(MetricSpec {
            type_: "Pods".to_owned(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: INFLIGHT_METRIC.to_owned(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".to_owned(),
                    average_value: Some(Quantity(inflight.to_string())),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    Ok(Some(HorizontalPodAutoscaler {
        metadata: child_meta(md, tier)?,
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: child_name(&md.name_any(), tier),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(metrics),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        status: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Tier;
    use crate::resources::deployment;
    use crate::test_support::{autoscaled, model_deployment};

    #[test]
    fn fixed_replicas_make_no_hpa() {
        let mut md = model_deployment(Tier::Edge);
        md.spec.replicas = Some(2);
        assert_eq!(hpa(&md, DeployedTier::Edge).unwrap(), None);
    }

    #[test]
    fn autoscaling_targets_the_tier_deployment_and_leaves_replicas_to_the_hpa() {
        let md = autoscaled(Tier::Both, Some(60), Some(8));
        let h = hpa(&md, DeployedTier::Edge).unwrap().unwrap();
        let spec = h.spec.unwrap();
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(spec.scale_target_ref.name, "digits-edge");
        assert_eq!(spec.min_replicas, Some(2));
        assert_eq!(spec.max_replicas, 10);
        let metrics = spec.metrics.unwrap();
        assert_eq!(metrics.len(), 2);
        let cpu = metrics[0].resource.as_ref().unwrap();
        assert_eq!(cpu.name, "cpu");
        assert_eq!(cpu.target.type_, "Utilization");
        assert_eq!(cpu.target.average_utilization, Some(60));
        let pods = metrics[1].pods.as_ref().unwrap();
        assert_eq!(pods.metric.name, INFLIGHT_METRIC);
        assert_eq!(pods.target.type_, "AverageValue");
        assert_eq!(pods.target.average_value, Some(Quantity("8".into())));

        let d = deployment(&md, DeployedTier::Edge).unwrap();
        assert_eq!(d.spec.unwrap().replicas, None);
    }

    #[test]
    fn autoscaling_without_targets_scales_on_cpu_and_inflight_alone_on_inflight() {
        let metrics = |inflight| {
            let md = autoscaled(Tier::Edge, None, inflight);
            let h = hpa(&md, DeployedTier::Edge).unwrap().unwrap();
            h.spec.unwrap().metrics.unwrap()
        };
        let cpu_only = metrics(None);
        assert_eq!(cpu_only.len(), 1);
        assert_eq!(
            cpu_only[0]
                .resource
                .as_ref()
                .unwrap()
                .target
                .average_utilization,
            Some(DEFAULT_CPU_UTILIZATION)
        );
        let inflight_only = metrics(Some(4));
        assert_eq!(inflight_only.len(), 1);
        assert_eq!(inflight_only[0].type_, "Pods");
    }
}

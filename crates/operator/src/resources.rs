//! Desired child objects of a `ModelDeployment`: pure functions from the custom resource to
//! the Deployment, Service and HorizontalPodAutoscaler of each tier.
//!
//! Nothing here talks to the API server, so every rule (names, labels, owner references,
//! devices, GPU limits, probes, autoscaling metrics) is unit-tested without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, Lifecycle,
    LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec, SleepAction, Toleration,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::Error;
use crate::crd::{DeployedTier, ModelDeployment, Tier};

/// Port the host serves the Open Inference Protocol (and `/metrics`) on.
pub const HTTP_PORT: i32 = 8000;
/// Node label (and taint key) that selects a tier's node pool.
pub const TIER_LABEL: &str = "edgeserve.dev/tier";
/// Label naming the `ModelDeployment` a child object belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Label naming the served model.
pub const MODEL_LABEL: &str = "edgeserve.dev/model";
/// Value of `app.kubernetes.io/managed-by` on every child object.
pub const MANAGER: &str = "edgeserve-operator";
/// Name of the host container in every pod.
pub const CONTAINER_NAME: &str = "edgeserve";
/// Metric the HPA reads for the in-flight target (the host's gauge, exported per pod).
pub const INFLIGHT_METRIC: &str = "edgeserve_inflight_requests";
/// CPU utilization target used when autoscaling names no target at all.
pub const DEFAULT_CPU_UTILIZATION: i32 = 70;

/// The model repository the bundle is installed into: an emptyDir, which also hides the
/// example models baked into the image so a pod serves only its bundle's model.
const MODELS_DIR: &str = "/models";
/// Compiled components; an emptyDir so a container restart skips compiling.
const CACHE_DIR: &str = "/var/cache/edgeserve";
/// Downloaded and unpacked bundles, keyed by digest, so a container restart skips the
/// download.
const BUNDLE_CACHE_DIR: &str = "/var/cache/edgeserve/bundles";
/// Non-root user the host runs as (distroless `nonroot`).
const RUN_AS: i64 = 65532;

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
        ("app.kubernetes.io/name".to_owned(), "edgeserve".to_owned()),
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

/// The host's command line. Only flags the host's `serve` subcommand has today go here: an
/// unknown flag would crash-loop the pod, whereas an unknown environment variable is ignored.
fn args(tier: DeployedTier) -> Vec<String> {
    let device = match tier {
        DeployedTier::Edge => "cpu",
        DeployedTier::Datacenter => "gpu",
    };
    [
        "serve",
        "--host",
        "0.0.0.0",
        "--http-port",
        &HTTP_PORT.to_string(),
        "--device",
        device,
        "--model-repository",
        MODELS_DIR,
        "--cache-dir",
        CACHE_DIR,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The host's `--bundle` reference: `<url>#sha256=<hex>`.
pub fn bundle_reference(md: &ModelDeployment) -> String {
    format!("{}#sha256={}", md.spec.bundle.url, md.spec.bundle.sha256)
}

/// Bundle, bundle cache, instance pool and upstream settings, through the environment
/// variables of the host's `--bundle`, `--bundle-cache-dir`, `--max-instances`,
/// `--max-instance-memory-mib`, `--upstream` and `--offload-on-queue-timeout` flags
/// (variables rather than flags: a host that predates a setting ignores the variable
/// instead of refusing to start). The pool sizes are the overlays' in `k8s/overlays`, so a
/// pod the operator makes is sized like one deployed from the manifests.
fn env(md: &ModelDeployment, tier: DeployedTier) -> Result<Vec<EnvVar>, Error> {
    let var = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    };
    let (instances, instance_mib) = match tier {
        DeployedTier::Edge => ("32", "256"),
        DeployedTier::Datacenter => ("256", "4096"),
    };
    let mut env = vec![
        var("EDGESERVE_BUNDLES", &bundle_reference(md)),
        var("EDGESERVE_BUNDLE_CACHE_DIR", BUNDLE_CACHE_DIR),
        var("EDGESERVE_MAX_INSTANCES", instances),
        var("EDGESERVE_MAX_INSTANCE_MEMORY_MIB", instance_mib),
    ];
    if let Some(upstream) = upstream(md, tier)? {
        env.push(var("EDGESERVE_UPSTREAM", &upstream));
        // The edge serves the same model as its upstream, so offloading only helps when the
        // edge is saturated: forward what finds no free instance instead of answering 503.
        env.push(var("EDGESERVE_OFFLOAD_ON_QUEUE_TIMEOUT", "true"));
    }
    Ok(env)
}

/// CPU/memory from the spec (or defaults), plus the GPU limit on the datacenter tier.
fn resources(md: &ModelDeployment, tier: DeployedTier) -> ResourceRequirements {
    let mut resources = md
        .spec
        .resources
        .clone()
        .unwrap_or_else(|| ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("500m".to_owned())),
                ("memory".to_owned(), Quantity("512Mi".to_owned())),
            ])),
            ..ResourceRequirements::default()
        });
    if tier == DeployedTier::Datacenter {
        // Extended resources are only set as limits; the scheduler takes the request from
        // the limit.
        resources.limits.get_or_insert_with(BTreeMap::new).insert(
            md.spec.gpu.resource.clone(),
            Quantity(md.spec.gpu.count.to_string()),
        );
    }
    resources
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// Node pool selection: the tier's label, and tolerations for the taints that keep other
/// workloads off that pool (and, on the datacenter tier, the GPU device plugin's taint).
fn tolerations(tier: DeployedTier) -> Vec<Toleration> {
    let mut tolerations = vec![Toleration {
        key: Some(TIER_LABEL.to_owned()),
        operator: Some("Equal".to_owned()),
        value: Some(tier.as_str().to_owned()),
        effect: Some("NoSchedule".to_owned()),
        ..Toleration::default()
    }];
    if tier == DeployedTier::Datacenter {
        tolerations.push(Toleration {
            key: Some("nvidia.com/gpu".to_owned()),
            operator: Some("Exists".to_owned()),
            effect: Some("NoSchedule".to_owned()),
            ..Toleration::default()
        });
    }
    tolerations
}

fn empty_dir(name: &str, source: EmptyDirVolumeSource) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(source),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    }
}

/// A tier's Deployment of the edgeserve host.
pub fn deployment(md: &ModelDeployment, tier: DeployedTier) -> Result<Deployment, Error> {
    let meta = child_meta(md, tier)?;
    let container = Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(match tier {
            DeployedTier::Edge => md.spec.image.clone(),
            DeployedTier::Datacenter => md.spec.gpu_image.clone(),
        }),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(args(tier)),
        env: Some(env(md, tier)?),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        resources: Some(resources(md, tier)),
        // Downloading the bundle and compiling the component can take minutes on a cold
        // node; the startup probe holds liveness off until the host first answers.
        startup_probe: Some(http_probe("/v2/health/live", 5, 120)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: 5 }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        liveness_probe: Some(http_probe("/v2/health/live", 10, 3)),
        readiness_probe: Some(http_probe("/v2/health/ready", 5, 2)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        // The root filesystem is read-only: everything the host writes goes to emptyDirs.
        volume_mounts: Some(vec![
            mount("models", MODELS_DIR),
            mount("cache", CACHE_DIR),
            mount("tmp", "/tmp"),
        ]),
        ..Container::default()
    };
    let pod_labels = labels(md, tier);
    let pod = PodSpec {
        containers: vec![container],
        node_selector: Some(BTreeMap::from([(
            TIER_LABEL.to_owned(),
            tier.as_str().to_owned(),
        )])),
        tolerations: Some(tolerations(tier)),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        // The host needs no Kubernetes API access.
        automount_service_account_token: Some(false),
        volumes: Some(vec![
            empty_dir("models", EmptyDirVolumeSource::default()),
            empty_dir("cache", EmptyDirVolumeSource::default()),
            empty_dir(
                "tmp",
                EmptyDirVolumeSource {
                    medium: Some("Memory".to_owned()),
                    size_limit: Some(Quantity("64Mi".to_owned())),
                },
            ),
        ]),
        enable_service_links: Some(false),
        // The host drains in-flight requests on SIGTERM; preStop first lets endpoints drop
        // the pod (as in k8s/base).
        termination_grace_period_seconds: Some(30),
        ..PodSpec::default()
    };
    Ok(Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            // Under an HPA the replica count is the autoscaler's: leaving the field out of
            // the applied object keeps server-side apply from resetting it on every pass.
            replicas: match md.spec.autoscaling {
                Some(_) => None,
                None => Some(md.spec.replicas.unwrap_or(1)),
            },
            selector: LabelSelector {
                match_labels: Some(selector_labels(&md.name_any(), tier)),
                ..LabelSelector::default()
            },
            // Never below the serving count during a rollout: a new pod must be ready
            // (bundle fetched, component compiled) before an old one goes.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([
                        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
                        ("prometheus.io/port".to_owned(), HTTP_PORT.to_string()),
                        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
                    ])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

/// A tier's ClusterIP Service on port 8000.
pub fn service(md: &ModelDeployment, tier: DeployedTier) -> Result<Service, Error> {
    Ok(Service {
        metadata: child_meta(md, tier)?,
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&md.name_any(), tier)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: HTTP_PORT,
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

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
    use crate::crd::{Autoscaling, BundleSource, GpuSpec, ModelDeploymentSpec};

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn md(tier: Tier) -> ModelDeployment {
        let mut md = ModelDeployment::new(
            "digits",
            ModelDeploymentSpec {
                model: "digits".to_owned(),
                bundle: BundleSource {
                    url: "https://models.example.com/digits.tar.gz".to_owned(),
                    sha256: SHA.to_owned(),
                },
                tier,
                replicas: Some(2),
                autoscaling: None,
                gpu: GpuSpec::default(),
                image: crate::crd::DEFAULT_IMAGE.to_owned(),
                gpu_image: crate::crd::DEFAULT_GPU_IMAGE.to_owned(),
                upstream: None,
                resources: None,
            },
        );
        md.metadata.namespace = Some("ml".to_owned());
        md.metadata.uid = Some("uid-1".to_owned());
        md
    }

    fn autoscaled(
        mut md: ModelDeployment,
        cpu: Option<i32>,
        inflight: Option<i32>,
    ) -> ModelDeployment {
        md.spec.replicas = None;
        md.spec.autoscaling = Some(Autoscaling {
            min_replicas: 2,
            max_replicas: 10,
            target_cpu_utilization: cpu,
            target_inflight: inflight,
        });
        md
    }

    fn container(d: &Deployment) -> &Container {
        &d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    fn env_value<'a>(d: &'a Deployment, name: &str) -> Option<&'a str> {
        container(d)
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }

    fn arg_after<'a>(d: &'a Deployment, flag: &str) -> &'a str {
        let args = container(d).args.as_ref().unwrap();
        let at = args.iter().position(|a| a == flag).expect(flag);
        &args[at + 1]
    }

    #[test]
    fn tiers_map_to_deployed_tiers() {
        assert_eq!(md(Tier::Edge).spec.tier.deployed(), &[DeployedTier::Edge]);
        assert_eq!(
            md(Tier::Datacenter).spec.tier.deployed(),
            &[DeployedTier::Datacenter]
        );
        let both = desired(&md(Tier::Both)).unwrap();
        let names: Vec<_> = both
            .iter()
            .map(|t| t.deployment.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["digits-datacenter", "digits-edge"]);
    }

    #[test]
    fn every_child_is_owned_by_the_model_deployment_as_controller() {
        for objects in desired(&autoscaled(md(Tier::Both), None, None)).unwrap() {
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
                assert_eq!(owner.uid, "uid-1");
                assert_eq!(owner.controller, Some(true));
                assert_eq!(meta.namespace.as_deref(), Some("ml"));
                let labels = meta.labels.as_ref().unwrap();
                assert_eq!(labels[TIER_LABEL], objects.tier.as_str());
                assert_eq!(labels[MODEL_LABEL], "digits");
                assert_eq!(labels["app.kubernetes.io/managed-by"], MANAGER);
            }
        }
    }

    #[test]
    fn an_object_without_uid_or_namespace_is_an_error() {
        let mut no_uid = md(Tier::Edge);
        no_uid.metadata.uid = None;
        assert!(matches!(
            deployment(&no_uid, DeployedTier::Edge),
            Err(Error::MissingObjectKey("uid"))
        ));
        let mut no_ns = md(Tier::Edge);
        no_ns.metadata.namespace = None;
        assert!(matches!(
            service(&no_ns, DeployedTier::Edge),
            Err(Error::MissingObjectKey("namespace"))
        ));
    }

    #[test]
    fn edge_runs_on_cpu_edge_nodes_without_gpus() {
        let d = deployment(&md(Tier::Edge), DeployedTier::Edge).unwrap();
        assert_eq!(
            container(&d).image.as_deref(),
            Some(crate::crd::DEFAULT_IMAGE)
        );
        assert_eq!(arg_after(&d, "--device"), "cpu");
        assert_eq!(arg_after(&d, "--http-port"), "8000");
        assert_eq!(container(&d).args.as_ref().unwrap()[0], "serve");
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.node_selector.as_ref().unwrap()[TIER_LABEL], "edge");
        let tolerations = pod.tolerations.as_ref().unwrap();
        assert!(tolerations.iter().any(|t| {
            t.key.as_deref() == Some(TIER_LABEL) && t.value.as_deref() == Some("edge")
        }));
        let resources = container(&d).resources.as_ref().unwrap();
        assert!(resources.limits.is_none(), "no GPU limit on the edge");
        assert_eq!(
            resources.requests.as_ref().unwrap()["cpu"],
            Quantity("500m".into())
        );
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    }

    #[test]
    fn datacenter_runs_on_gpu_nodes_with_the_requested_gpu_limit() {
        let mut md = md(Tier::Datacenter);
        md.spec.gpu = GpuSpec {
            count: 4,
            resource: "nvidia.com/gpu".to_owned(),
        };
        let d = deployment(&md, DeployedTier::Datacenter).unwrap();
        assert_eq!(arg_after(&d, "--device"), "gpu");
        assert_eq!(
            container(&d).image.as_deref(),
            Some(crate::crd::DEFAULT_GPU_IMAGE)
        );
        let limits = container(&d)
            .resources
            .as_ref()
            .unwrap()
            .limits
            .clone()
            .unwrap();
        assert_eq!(limits["nvidia.com/gpu"], Quantity("4".into()));
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(
            pod.node_selector.as_ref().unwrap()[TIER_LABEL],
            "datacenter"
        );
        assert!(
            pod.tolerations
                .as_ref()
                .unwrap()
                .iter()
                .any(|t| t.key.as_deref() == Some("nvidia.com/gpu"))
        );
    }

    #[test]
    fn gpu_limit_merges_into_user_resources() {
        let mut md = md(Tier::Datacenter);
        md.spec.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("8Gi".into()),
            )])),
            ..ResourceRequirements::default()
        });
        md.spec.gpu.resource = "amd.com/gpu".to_owned();
        let d = deployment(&md, DeployedTier::Datacenter).unwrap();
        let limits = container(&d)
            .resources
            .as_ref()
            .unwrap()
            .limits
            .clone()
            .unwrap();
        assert_eq!(limits["memory"], Quantity("8Gi".into()));
        assert_eq!(limits["amd.com/gpu"], Quantity("1".into()));
    }

    #[test]
    fn instance_pools_are_sized_per_tier_like_the_overlays() {
        let edge = deployment(&md(Tier::Both), DeployedTier::Edge).unwrap();
        let dc = deployment(&md(Tier::Both), DeployedTier::Datacenter).unwrap();
        assert_eq!(env_value(&edge, "EDGESERVE_MAX_INSTANCES"), Some("32"));
        assert_eq!(
            env_value(&edge, "EDGESERVE_MAX_INSTANCE_MEMORY_MIB"),
            Some("256")
        );
        assert_eq!(env_value(&dc, "EDGESERVE_MAX_INSTANCES"), Some("256"));
        assert_eq!(
            env_value(&dc, "EDGESERVE_MAX_INSTANCE_MEMORY_MIB"),
            Some("4096")
        );
    }

    #[test]
    fn bundle_and_model_reach_the_container_as_environment() {
        let d = deployment(&md(Tier::Edge), DeployedTier::Edge).unwrap();
        assert_eq!(
            env_value(&d, "EDGESERVE_BUNDLES"),
            Some(format!("https://models.example.com/digits.tar.gz#sha256={SHA}").as_str())
        );
        assert_eq!(
            env_value(&d, "EDGESERVE_BUNDLE_CACHE_DIR"),
            Some("/var/cache/edgeserve/bundles")
        );
        assert_eq!(env_value(&d, "EDGESERVE_UPSTREAM"), None);
        assert_eq!(env_value(&d, "EDGESERVE_OFFLOAD_ON_QUEUE_TIMEOUT"), None);
    }

    #[test]
    fn edge_offloads_to_the_datacenter_service_when_both_tiers_run() {
        let both = md(Tier::Both);
        let edge = deployment(&both, DeployedTier::Edge).unwrap();
        assert_eq!(
            env_value(&edge, "EDGESERVE_UPSTREAM"),
            Some("http://digits-datacenter.ml.svc:8000")
        );
        assert_eq!(
            env_value(&edge, "EDGESERVE_OFFLOAD_ON_QUEUE_TIMEOUT"),
            Some("true")
        );
        let dc = deployment(&both, DeployedTier::Datacenter).unwrap();
        assert_eq!(env_value(&dc, "EDGESERVE_UPSTREAM"), None);

        let mut explicit = md(Tier::Both);
        explicit.spec.upstream = Some("https://dc.example.com".to_owned());
        let edge = deployment(&explicit, DeployedTier::Edge).unwrap();
        assert_eq!(
            env_value(&edge, "EDGESERVE_UPSTREAM"),
            Some("https://dc.example.com")
        );
    }

    #[test]
    fn probes_security_and_volumes_follow_the_hardening_rules() {
        let d = deployment(&md(Tier::Edge), DeployedTier::Edge).unwrap();
        let c = container(&d);
        let path = |p: &Option<Probe>| {
            p.as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .clone()
                .unwrap()
        };
        assert_eq!(path(&c.liveness_probe), "/v2/health/live");
        assert_eq!(path(&c.readiness_probe), "/v2/health/ready");
        assert_eq!(path(&c.startup_probe), "/v2/health/live");
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8000);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let volumes = pod.volumes.as_ref().unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v.name == "cache" && v.empty_dir.is_some())
        );
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "cache" && m.mount_path == arg_after(&d, "--cache-dir"))
        );
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "models" && m.mount_path == arg_after(&d, "--model-repository"))
        );
    }

    #[test]
    fn service_selects_the_tier_pods_on_port_8000() {
        let md = md(Tier::Both);
        let svc = service(&md, DeployedTier::Datacenter).unwrap();
        let d = deployment(&md, DeployedTier::Datacenter).unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(
            spec.selector,
            d.spec.unwrap().selector.match_labels,
            "Service and Deployment select the same pods"
        );
        assert_eq!(spec.ports.unwrap()[0].port, 8000);
        assert_eq!(svc.metadata.name.as_deref(), Some("digits-datacenter"));
    }

    #[test]
    fn fixed_replicas_make_no_hpa() {
        assert_eq!(hpa(&md(Tier::Edge), DeployedTier::Edge).unwrap(), None);
    }

    #[test]
    fn autoscaling_targets_the_tier_deployment_and_leaves_replicas_to_the_hpa() {
        let md = autoscaled(md(Tier::Both), Some(60), Some(8));
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
        let h = hpa(&autoscaled(md(Tier::Edge), None, None), DeployedTier::Edge)
            .unwrap()
            .unwrap();
        let metrics = h.spec.unwrap().metrics.unwrap();
        assert_eq!(metrics.len(), 1);
        assert_eq!(
            metrics[0]
                .resource
                .as_ref()
                .unwrap()
                .target
                .average_utilization,
            Some(DEFAULT_CPU_UTILIZATION)
        );

        let h = hpa(
            &autoscaled(md(Tier::Edge), None, Some(4)),
            DeployedTier::Edge,
        )
        .unwrap()
        .unwrap();
        let metrics = h.spec.unwrap().metrics.unwrap();
        assert_eq!(metrics.len(), 1);
        assert_eq!(metrics[0].type_, "Pods");
    }

    #[test]
    fn applied_objects_carry_api_version_and_kind() {
        // Server-side apply needs apiVersion and kind in the body.
        let objects = &desired(&autoscaled(md(Tier::Edge), None, None)).unwrap()[0];
        let d = serde_json::to_value(&objects.deployment).unwrap();
        assert_eq!(d["apiVersion"], "apps/v1");
        assert_eq!(d["kind"], "Deployment");
        let h = serde_json::to_value(objects.hpa.as_ref().unwrap()).unwrap();
        assert_eq!(h["apiVersion"], "autoscaling/v2");
        let s = serde_json::to_value(&objects.service).unwrap();
        assert_eq!(s["apiVersion"], "v1");
    }
}

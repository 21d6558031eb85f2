//! The edgeserve pod template: the one source of the pod spec that `k8s/base/deployment.yaml`
//! ships, that each `k8s/overlays/<tier>/deployment.yaml` patches, and that the operator's
//! Deployments are built from. `manifestgen` writes those files from here (see
//! [`crate::manifests`]); a unit test fails when a committed copy differs.
//!
//! Two layers are shared:
//! - [`deployment`]: what every edgeserve Deployment has, whoever makes it: rollout strategy,
//!   probes, hardening, writable emptyDirs on a read-only root, graceful shutdown, scrape
//!   annotations.
//! - the tier functions ([`device`], [`place`], [`resources`], [`env`](fn@env), [`cache_size_limit`],
//!   [`instance_env`]): what a node pool adds.
//!
//! What stays with each installer is what only it knows. The manifests add the image
//! placeholder kustomize rewrites, the settings ConfigMap, their own ServiceAccount, base
//! sizing and the cache's size limit. The operator adds the model's labels, image, bundle,
//! command-line flags and `/models` volume. It leaves the ServiceAccount unset: it makes none,
//! and a name that does not exist in the namespace would stop the pods from being created.
//! It also sets no cache size limit: its cache also holds the unpacked bundle, whose size only
//! the user knows.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, SleepAction,
    Toleration, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{DeployedTier, GpuSpec, InstanceLimits};

/// Port the host serves the Open Inference Protocol (and `/metrics`) on.
pub const HTTP_PORT: i32 = 8000;
/// Port the host serves the Open Inference Protocol over gRPC on (Triton's and KServe's
/// convention).
pub const GRPC_PORT: i32 = 8001;
/// Node label (and taint key) that selects a tier's node pool.
pub const TIER_LABEL: &str = "edgeserve.dev/tier";
/// Name of the host container in every pod.
pub const CONTAINER_NAME: &str = "edgeserve";
/// Value of `app.kubernetes.io/name` on every edgeserve pod.
pub const APP_NAME: &str = "edgeserve";
/// Where the host keeps compiled components (`--cache-dir`): the [`CACHE_VOLUME`] emptyDir,
/// so a container restart skips compiling.
pub const CACHE_DIR: &str = "/var/cache/edgeserve";
/// Downloaded and unpacked bundles, keyed by digest, next to the compiled components, so a
/// container restart skips the download.
pub const BUNDLE_CACHE_DIR: &str = "/var/cache/edgeserve/bundles";
/// The emptyDir mounted at [`CACHE_DIR`].
pub const CACHE_VOLUME: &str = "cache";
/// Non-root user and group the host runs as (the image's `USER`).
const RUN_AS: i64 = 65532;
/// The Secret the host's keys come from, in the pods' namespace: `api-keys` (comma-separated
/// API keys) and `admin-key`. Both are optional, so pods start without the Secret (open
/// inference; management disabled, as the host binds a non-loopback address).
pub const KEYS_SECRET: &str = "edgeserve-keys";
const LIVE: &str = "/v2/health/live";
const READY: &str = "/v2/health/ready";

/// A Deployment of the host from the template: `meta`, pods selected by `selector` (whose
/// labels the caller puts on the pods), and `replicas`, which stays unset under an
/// autoscaler (a value would reset the HPA's count on every apply).
///
/// The one container is [`CONTAINER_NAME`] without image, arguments or resources, and with
/// only the keys from [`KEYS_SECRET`] in its environment: the installer and the tier fill in
/// the rest.
pub fn deployment(
    meta: ObjectMeta,
    selector: BTreeMap<String, String>,
    replicas: Option<i32>,
) -> Deployment {
    Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            // Never below the serving count during a rollout: a new pod must be ready
            // (models compiled, bundle fetched) before an old one goes.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
            template: pod_template(),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The pod metadata and pod spec of a Deployment made by [`deployment`]; the host container
/// is the spec's first.
pub fn pod_mut(deployment: &mut Deployment) -> (&mut ObjectMeta, &mut PodSpec) {
    let template = &mut deployment
        .spec
        .as_mut()
        .expect("template::deployment sets a spec")
        .template;
    (
        template.metadata.get_or_insert_with(ObjectMeta::default),
        template.spec.get_or_insert_with(PodSpec::default),
    )
}

fn pod_template() -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            // Scraped by Prometheus' `kubernetes-pods` job (the prometheus community chart);
            // with kube-prometheus-stack, k8s/monitoring/podmonitor.yaml scrapes port "http".
            annotations: Some(BTreeMap::from([
                ("prometheus.io/scrape".to_owned(), "true".to_owned()),
                ("prometheus.io/port".to_owned(), HTTP_PORT.to_string()),
                ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
            ])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container()],
            // The host never talks to the Kubernetes API: no token in the pod.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            // edgeserve stops on SIGTERM the way Kubernetes expects: readiness turns 503, the
            // listener closes, in-flight requests run to completion (each bounded by its
            // model's queue_timeout_ms + timeout_ms, the whole drain by the host's
            // --shutdown-timeout-ms, 20 s). preStop's sleep first lets endpoints and
            // ingresses drop the pod; 5 s + the drain fit within 30 s.
            termination_grace_period_seconds: Some(30),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                seccomp_profile: Some(runtime_default()),
                ..PodSecurityContext::default()
            }),
            // The root filesystem is read-only: everything the host writes goes to emptyDirs.
            volumes: Some(vec![
                empty_dir(CACHE_VOLUME, EmptyDirVolumeSource::default()),
                empty_dir(
                    "tmp",
                    EmptyDirVolumeSource {
                        medium: Some("Memory".to_owned()),
                        size_limit: Some(Quantity("64Mi".to_owned())),
                    },
                ),
            ]),
            ..PodSpec::default()
        }),
    }
}

fn container() -> Container {
    Container {
        name: CONTAINER_NAME.to_owned(),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".to_owned()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("grpc".to_owned()),
                container_port: GRPC_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        // The port opens once every model is compiled (or read from the compile cache) and,
        // for a bundle, downloaded and unpacked: a cold pod may take minutes. Probing every
        // 2 s marks a quick start ready at once; 300 failures allow 10 minutes before the
        // liveness probe takes over.
        startup_probe: Some(http_probe(LIVE, 2, 300)),
        liveness_probe: Some(http_probe(LIVE, 10, 3)),
        readiness_probe: Some(http_probe(READY, 5, 2)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: 5 }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(runtime_default()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![mount(CACHE_VOLUME, CACHE_DIR), mount("tmp", "/tmp")]),
        env: Some(key_env()),
        ..Container::default()
    }
}

/// The host's API keys and admin key from [`KEYS_SECRET`]: environment variables, never
/// arguments (which any user of the node can read in the process list).
fn key_env() -> Vec<EnvVar> {
    [
        ("EDGESERVE_API_KEYS", "api-keys"),
        ("EDGESERVE_ADMIN_KEY", "admin-key"),
    ]
    .map(|(name, key)| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: KEYS_SECRET.to_owned(),
                key: key.to_owned(),
                optional: Some(true),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    })
    .to_vec()
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

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..SeccompProfile::default()
    }
}

/// An emptyDir volume.
pub fn empty_dir(name: &str, source: EmptyDirVolumeSource) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(source),
        ..Volume::default()
    }
}

/// A volume mount.
pub fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    }
}

/// An environment variable with a value.
pub fn var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

/// The host's `--device` on a tier: the native CPU backend on the edge (never probe for a GPU
/// there), the wgpu backend on the datacenter (which fails at start rather than silently
/// falling back to the CPU).
pub fn device(tier: DeployedTier) -> &'static str {
    match tier {
        DeployedTier::Edge => "cpu",
        DeployedTier::Datacenter => "gpu",
    }
}

/// Puts a pod on its tier's node pool: the pool's label, tolerations for the taints that keep
/// other workloads off it, and a spread of the replicas over nodes (and, on the edge, zones).
pub fn place(pod: &mut PodSpec, tier: DeployedTier) {
    pod.node_selector = Some(BTreeMap::from([(
        TIER_LABEL.to_owned(),
        tier.as_str().to_owned(),
    )]));
    // Pools are tainted so general workloads stay off them:
    //   kubectl taint nodes <node> edgeserve.dev/tier=edge:NoSchedule
    let mut tolerations = vec![Toleration {
        key: Some(TIER_LABEL.to_owned()),
        operator: Some("Equal".to_owned()),
        value: Some(tier.as_str().to_owned()),
        effect: Some("NoSchedule".to_owned()),
        ..Toleration::default()
    }];
    if tier == DeployedTier::Datacenter {
        // GPU node pools (GKE, AKS, the NVIDIA GPU operator) taint their nodes.
        tolerations.push(Toleration {
            key: Some("nvidia.com/gpu".to_owned()),
            operator: Some("Exists".to_owned()),
            effect: Some("NoSchedule".to_owned()),
            ..Toleration::default()
        });
    }
    pod.tolerations = Some(tolerations);
    // Edge replicas must not share a node (one node failing takes one replica) and should
    // spread over zones; GPU nodes are scarce, so there the spread is a preference only.
    let spread = match tier {
        DeployedTier::Edge => vec![
            ("kubernetes.io/hostname", "DoNotSchedule"),
            ("topology.kubernetes.io/zone", "ScheduleAnyway"),
        ],
        DeployedTier::Datacenter => vec![("kubernetes.io/hostname", "ScheduleAnyway")],
    };
    pod.topology_spread_constraints = Some(
        spread
            .into_iter()
            .map(|(key, when)| TopologySpreadConstraint {
                max_skew: 1,
                topology_key: key.to_owned(),
                when_unsatisfiable: when.to_owned(),
                label_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([
                        ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
                        (TIER_LABEL.to_owned(), tier.as_str().to_owned()),
                    ])),
                    ..LabelSelector::default()
                }),
                // Only this rollout's pods: the old ReplicaSet's do not skew the new one.
                match_label_keys: Some(vec!["pod-template-hash".to_owned()]),
                ..TopologySpreadConstraint::default()
            })
            .collect(),
    );
}

/// CPU and memory of a tier's replica, plus the GPU limit on the datacenter.
///
/// Edge nodes are small; a pod serving the example models takes about 100 MiB resident
/// (weights are memory-mapped) plus each model's live tensors. GPU nodes get room for
/// staging weights and for many instances.
pub fn resources(tier: DeployedTier, gpu: &GpuSpec) -> ResourceRequirements {
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    let mut resources = match tier {
        DeployedTier::Edge => ResourceRequirements {
            requests: Some(quantities("250m", "256Mi")),
            limits: Some(quantities("1", "1Gi")),
            ..ResourceRequirements::default()
        },
        DeployedTier::Datacenter => ResourceRequirements {
            requests: Some(quantities("2", "4Gi")),
            limits: Some(quantities("8", "16Gi")),
            ..ResourceRequirements::default()
        },
    };
    gpu_limit(&mut resources, tier, gpu);
    resources
}

/// Adds the GPU limit of a datacenter replica. Extended resources are only set as limits; the
/// scheduler takes the request from the limit.
pub fn gpu_limit(resources: &mut ResourceRequirements, tier: DeployedTier, gpu: &GpuSpec) {
    if tier == DeployedTier::Datacenter {
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert(gpu.resource.clone(), Quantity(gpu.count.to_string()));
    }
}

/// Environment a tier's container needs whoever deploys it: on the datacenter, the driver
/// capabilities wgpu's Vulkan backend needs (with "graphics" the NVIDIA container toolkit
/// mounts the Vulkan ICD into the container).
pub fn env(tier: DeployedTier) -> Vec<EnvVar> {
    match tier {
        DeployedTier::Edge => Vec::new(),
        DeployedTier::Datacenter => vec![var(
            "NVIDIA_DRIVER_CAPABILITIES",
            "compute,utility,graphics",
        )],
    }
}

/// The compile cache's size on a tier's nodes (manifests only: see the module docs).
pub fn cache_size_limit(tier: DeployedTier) -> Quantity {
    Quantity(
        match tier {
            DeployedTier::Edge => "256Mi",
            DeployedTier::Datacenter => "4Gi",
        }
        .to_owned(),
    )
}

/// The host's instance pool settings, as the environment variables of its
/// `--max-instances` and `--max-instance-memory-mib` flags.
pub fn instance_env(limits: InstanceLimits) -> [(&'static str, String); 2] {
    [
        ("EDGESERVE_MAX_INSTANCES", limits.max_instances.to_string()),
        (
            "EDGESERVE_MAX_INSTANCE_MEMORY_MIB",
            limits.max_instance_memory_mib.to_string(),
        ),
    ]
}

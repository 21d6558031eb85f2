//! A tier's Deployment of the edgeserve host: the shared pod template ([`crate::template`])
//! on the tier's node pool, filled in with what only the operator knows: the model's labels,
//! image, bundle, instance pool, upstream and command line.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, EnvVar, ResourceRequirements};
use kube::ResourceExt;

use super::{child_meta, labels, selector_labels, upstream};
use crate::Error;
use crate::crd::{DeployedTier, ModelDeployment};
use crate::template::{self, BUNDLE_CACHE_DIR, CACHE_DIR, GRPC_PORT, HTTP_PORT, var};

/// The model repository the bundle is installed into: an emptyDir, which also hides the
/// example models baked into the image so a pod serves only its bundle's model.
const MODELS_DIR: &str = "/models";

/// A tier's Deployment of the edgeserve host.
pub fn deployment(md: &ModelDeployment, tier: DeployedTier) -> Result<Deployment, Error> {
    // Under an HPA the replica count is the autoscaler's: leaving the field out of the
    // applied object keeps server-side apply from resetting it on every pass.
    let replicas = match md.spec.autoscaling {
        Some(_) => None,
        None => Some(md.spec.replicas.unwrap_or(1)),
    };
    let mut deployment = template::deployment(
        child_meta(md, tier)?,
        selector_labels(&md.name_any(), tier),
        replicas,
    );
    let (pod_meta, pod) = template::pod_mut(&mut deployment);
    pod_meta.labels = Some(labels(md, tier));
    template::place(pod, tier);
    pod.volumes.get_or_insert_with(Vec::new).insert(
        0,
        template::empty_dir("models", EmptyDirVolumeSource::default()),
    );
    let container = &mut pod.containers[0];
    container.image = Some(match tier {
        DeployedTier::Edge => md.spec.image.clone(),
        DeployedTier::Datacenter => md.spec.gpu_image.clone(),
    });
    container.args = Some(args(tier));
    // After the template's own (the keys from the Secret).
    container
        .env
        .get_or_insert_with(Vec::new)
        .extend(env(md, tier)?);
    container.resources = Some(resources(md, tier));
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .insert(0, template::mount("models", MODELS_DIR));
    Ok(deployment)
}

/// The host's command line. Only flags the host's `serve` subcommand has today go here: an
/// unknown flag would crash-loop the pod, whereas an unknown environment variable is ignored.
fn args(tier: DeployedTier) -> Vec<String> {
    [
        "serve",
        "--host",
        "0.0.0.0",
        "--http-port",
        &HTTP_PORT.to_string(),
        "--grpc-port",
        &GRPC_PORT.to_string(),
        "--device",
        template::device(tier),
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
/// instead of refusing to start), then the tier's own environment.
fn env(md: &ModelDeployment, tier: DeployedTier) -> Result<Vec<EnvVar>, Error> {
    let mut env = vec![
        var("EDGESERVE_BUNDLES", &bundle_reference(md)),
        var("EDGESERVE_BUNDLE_CACHE_DIR", BUNDLE_CACHE_DIR),
    ];
    env.extend(
        template::instance_env(md.spec.instances.of(tier))
            .iter()
            .map(|(name, value)| var(name, value)),
    );
    if let Some(upstream) = upstream(md, tier)? {
        env.push(var("EDGESERVE_UPSTREAM", &upstream));
        // The edge serves the same model as its upstream, so offloading only helps when the
        // edge is saturated: forward what finds no free instance instead of answering 503.
        env.push(var("EDGESERVE_OFFLOAD_ON_QUEUE_TIMEOUT", "true"));
    }
    env.extend(template::env(tier));
    Ok(env)
}

/// CPU and memory from the spec (or the tier's sizing), plus the GPU limit on the datacenter.
fn resources(md: &ModelDeployment, tier: DeployedTier) -> ResourceRequirements {
    match &md.spec.resources {
        Some(resources) => {
            let mut resources = resources.clone();
            template::gpu_limit(&mut resources, tier, &md.spec.gpu);
            resources
        }
        None => template::resources(tier, &md.spec.gpu),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Container, Probe};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;
    use crate::crd::{GpuSpec, Tier};
    use crate::resources::TIER_LABEL;
    use crate::test_support::{BUNDLE_URL, SHA, model_deployment, named_ports};

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

    fn limits(d: &Deployment) -> BTreeMap<String, Quantity> {
        let resources = container(d).resources.clone().unwrap();
        resources.limits.unwrap_or_default()
    }

    #[test]
    fn edge_runs_on_cpu_edge_nodes_without_gpus() {
        let mut md = model_deployment(Tier::Edge);
        md.spec.replicas = Some(2);
        let d = deployment(&md, DeployedTier::Edge).unwrap();
        assert_eq!(
            container(&d).image.as_deref(),
            Some(crate::crd::DEFAULT_IMAGE)
        );
        assert_eq!(arg_after(&d, "--device"), "cpu");
        assert_eq!(arg_after(&d, "--http-port"), "8000");
        assert_eq!(arg_after(&d, "--grpc-port"), "8001");
        assert_eq!(container(&d).args.as_ref().unwrap()[0], "serve");
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.node_selector.as_ref().unwrap()[TIER_LABEL], "edge");
        let tolerations = pod.tolerations.as_ref().unwrap();
        assert!(tolerations.iter().any(|t| {
            t.key.as_deref() == Some(TIER_LABEL) && t.value.as_deref() == Some("edge")
        }));
        assert!(
            !limits(&d).keys().any(|k| k.ends_with("/gpu")),
            "no GPU limit on the edge"
        );
        // The edge tier's sizing, as in k8s/overlays/edge.
        let resources = container(&d).resources.as_ref().unwrap();
        assert_eq!(
            resources.requests.as_ref().unwrap()["cpu"],
            Quantity("250m".into())
        );
        assert_eq!(limits(&d)["memory"], Quantity("1Gi".into()));
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    }

    #[test]
    fn keys_come_from_the_secret_on_every_tier_never_as_arguments() {
        for (tier, deployed) in [
            (Tier::Edge, DeployedTier::Edge),
            (Tier::Datacenter, DeployedTier::Datacenter),
        ] {
            let d = deployment(&model_deployment(tier), deployed).unwrap();
            let env = container(&d).env.as_ref().unwrap();
            for (name, key) in [
                ("EDGESERVE_API_KEYS", "api-keys"),
                ("EDGESERVE_ADMIN_KEY", "admin-key"),
            ] {
                let var = env.iter().find(|e| e.name == name).expect(name);
                let secret = var.value_from.as_ref().unwrap().secret_key_ref.as_ref();
                let secret = secret.expect("a secretKeyRef");
                assert_eq!(secret.name, template::KEYS_SECRET);
                assert_eq!(secret.key, key);
                assert_eq!(var.value, None, "{name} has a literal value");
            }
            // The installer's own variables are still there.
            assert!(env_value(&d, "EDGESERVE_BUNDLES").is_some());
            let args = container(&d).args.as_ref().unwrap();
            assert!(!args.iter().any(|a| a.contains("key")), "{args:?}");
        }
    }

    #[test]
    fn datacenter_runs_on_gpu_nodes_with_the_requested_gpu_limit() {
        let mut md = model_deployment(Tier::Datacenter);
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
        assert_eq!(limits(&d)["nvidia.com/gpu"], Quantity("4".into()));
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
        assert_eq!(
            env_value(&d, "NVIDIA_DRIVER_CAPABILITIES"),
            Some("compute,utility,graphics")
        );
    }

    #[test]
    fn gpu_limit_merges_into_user_resources() {
        let mut md = model_deployment(Tier::Datacenter);
        md.spec.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("8Gi".into()),
            )])),
            ..ResourceRequirements::default()
        });
        md.spec.gpu.resource = "amd.com/gpu".to_owned();
        let d = deployment(&md, DeployedTier::Datacenter).unwrap();
        let limits = limits(&d);
        assert_eq!(limits["memory"], Quantity("8Gi".into()));
        assert_eq!(limits["amd.com/gpu"], Quantity("1".into()));
    }

    #[test]
    fn instance_pools_are_sized_per_tier_like_the_overlays() {
        let md = model_deployment(Tier::Both);
        let edge = deployment(&md, DeployedTier::Edge).unwrap();
        let dc = deployment(&md, DeployedTier::Datacenter).unwrap();
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
        // The spec's pools win over the defaults.
        let mut small = md.clone();
        small.spec.instances.edge.max_instances = 4;
        let edge = deployment(&small, DeployedTier::Edge).unwrap();
        assert_eq!(env_value(&edge, "EDGESERVE_MAX_INSTANCES"), Some("4"));
    }

    #[test]
    fn bundle_and_model_reach_the_container_as_environment() {
        let d = deployment(&model_deployment(Tier::Edge), DeployedTier::Edge).unwrap();
        assert_eq!(
            env_value(&d, "EDGESERVE_BUNDLES"),
            Some(format!("{BUNDLE_URL}#sha256={SHA}").as_str())
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
        let both = model_deployment(Tier::Both);
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

        let mut explicit = model_deployment(Tier::Both);
        explicit.spec.upstream = Some("https://dc.example.com".to_owned());
        let edge = deployment(&explicit, DeployedTier::Edge).unwrap();
        assert_eq!(
            env_value(&edge, "EDGESERVE_UPSTREAM"),
            Some("https://dc.example.com")
        );
    }

    #[test]
    fn probes_security_and_volumes_follow_the_hardening_rules() {
        let d = deployment(&model_deployment(Tier::Edge), DeployedTier::Edge).unwrap();
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
        let ports = named_ports(c.ports.iter().flatten(), |p| (&p.name, p.container_port));
        assert_eq!(ports, [("http", 8000), ("grpc", 8001)]);
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
        // Every mount is a volume of the pod.
        for m in mounts {
            assert!(volumes.iter().any(|v| v.name == m.name), "{}", m.name);
        }
    }
}

//! The `ModelDeployment` custom resource (`edgeserve.dev/v1alpha1`).
//!
//! One `ModelDeployment` describes one model served by edgeserve on one or both tiers: the
//! operator turns it into a Deployment, a Service and (when autoscaled) a
//! HorizontalPodAutoscaler per tier. The CRD YAML is generated from these types by the
//! `crdgen` binary and committed to `k8s/crds/modeldeployment.yaml`.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every edgeserve custom resource.
pub const GROUP: &str = "edgeserve.dev";

/// The image the edge tier runs when the spec names none (the CPU build of the Dockerfile).
pub const DEFAULT_IMAGE: &str = "ghcr.io/edgeserve/edgeserve:0.1.0";

/// The image the datacenter tier runs when the spec names none (`--build-arg VARIANT=gpu`,
/// which adds the Vulkan loader the GPU backend needs).
pub const DEFAULT_GPU_IMAGE: &str = "ghcr.io/edgeserve/edgeserve:0.1.0-gpu";

/// The extended resource a datacenter replica requests when the spec names none.
pub const DEFAULT_GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Longest `ModelDeployment` name: child objects are named `<name>-datacenter`, and a Service
/// name must be a DNS-1035 label of at most 63 characters.
pub const MAX_NAME_LEN: usize = 63 - "-datacenter".len();

/// Desired state of a model served by edgeserve.
///
/// `replicas` and `autoscaling` are mutually exclusive; with neither, each tier runs one
/// replica.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "edgeserve.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    status = "ModelDeploymentStatus",
    shortname = "md",
    category = "edgeserve",
    derive = "PartialEq",
    doc = "A model served by edgeserve on the edge tier, the datacenter tier or both",
    validation = Rule::new("size(self.metadata.name) <= 52").message("name must be at most 52 characters: child Services are named <name>-datacenter"),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model"),
    printcolumn(name = "Tier", type_ = "string", json_path = ".spec.tier"),
    printcolumn(
        name = "Edge",
        type_ = "integer",
        description = "Ready replicas on the edge tier",
        json_path = ".status.edge.readyReplicas"
    ),
    printcolumn(
        name = "Datacenter",
        type_ = "integer",
        description = "Ready replicas on the datacenter tier",
        json_path = ".status.datacenter.readyReplicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("!(has(self.replicas) && has(self.autoscaling))").message("set either replicas or autoscaling, not both")
)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// Name the model is served under (`/v2/models/{model}`): the bundle's folder name. It
    /// is also a label value on every child object, hence the label syntax.
    #[schemars(regex(pattern = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"))]
    pub model: String,
    /// Where the host fetches the model bundle from.
    pub bundle: BundleSource,
    /// Which node pools serve the model.
    #[serde(default)]
    pub tier: Tier,
    /// Fixed replica count per tier (mutually exclusive with `autoscaling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// HorizontalPodAutoscaler bounds and targets per tier (mutually exclusive with `replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// GPUs each datacenter replica requests.
    #[serde(default)]
    pub gpu: GpuSpec,
    /// Container image of the edgeserve host on the edge tier.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// Container image of the edgeserve host on the datacenter tier (a GPU build).
    #[serde(default = "default_gpu_image")]
    #[schemars(length(min = 1))]
    pub gpu_image: String,
    /// Base URL the edge tier offloads requests to. Defaults to the datacenter tier's Service
    /// when `tier` is `both`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// CPU and memory of each replica, on every tier. Defaults to each tier's requests and
    /// limits in the pod template, the ones `k8s/overlays/<tier>/deployment.yaml` sets (a CPU
    /// request is what the HPA's utilization target is measured against).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// Model instances each replica of a tier may keep, and the memory of each.
    #[serde(default)]
    pub instances: Instances,
}

/// Schema of `spec.resources`: just `requests` and `limits` maps of quantities. The full
/// `ResourceRequirements` schema (DRA claims, pages of Quantity prose) would bloat the CRD
/// and offer fields the operator does not mean to pass through.
fn resources_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let quantities = |what: &str| {
        serde_json::json!({
            "description": what,
            "type": "object",
            "additionalProperties": {"x-kubernetes-int-or-string": true},
        })
    };
    schemars::json_schema!({
        "description": "CPU and memory of each replica, on every tier. Defaults to each tier's requests and limits in the pod template, the ones `k8s/overlays/<tier>/deployment.yaml` sets (a CPU request is what the HPA's utilization target is measured against).",
        "nullable": true,
        "type": "object",
        "properties": {
            "requests": quantities("Minimum resources, e.g. cpu: 500m, memory: 512Mi."),
            "limits": quantities("Maximum resources, e.g. memory: 2Gi. The GPU limit comes from `gpu`."),
        },
    })
}

impl ModelDeploymentSpec {
    /// The rules the CRD's schema and CEL validation enforce at the API server, checked again
    /// here because an API server may skip CEL (old versions, feature gates) and a spec that
    /// slips through must be reported, not half-deployed.
    pub fn validate(&self) -> Result<(), String> {
        if self.replicas.is_some() && self.autoscaling.is_some() {
            return Err("set either replicas or autoscaling, not both".to_owned());
        }
        if let Some(a) = &self.autoscaling
            && a.max_replicas < a.min_replicas
        {
            return Err(format!(
                "autoscaling.maxReplicas ({}) is below minReplicas ({})",
                a.max_replicas, a.min_replicas
            ));
        }
        let model = self.model.as_bytes();
        let inner_ok = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        if model.is_empty()
            || model.len() > 63
            || !model[0].is_ascii_alphanumeric()
            || !model[model.len() - 1].is_ascii_alphanumeric()
            || !model.iter().all(inner_ok)
        {
            return Err(format!(
                "model '{}' must be 1-63 letters, digits, '-', '_' or '.', starting and ending \
                 with a letter or digit (it is a label value)",
                self.model
            ));
        }
        let url = &self.bundle.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains('#') {
            return Err("bundle.url must be an http(s) URL without a '#' fragment".to_owned());
        }
        let sha = &self.bundle.sha256;
        if sha.len() != 64 || !sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("bundle.sha256 must be 64 lowercase hex digits".to_owned());
        }
        if self.gpu.count < 1 {
            return Err("gpu.count must be at least 1".to_owned());
        }
        for tier in DeployedTier::ALL {
            let limits = self.instances.of(tier);
            if limits.max_instances < 1 || limits.max_instance_memory_mib < 1 {
                return Err(format!(
                    "instances.{}: maxInstances and maxInstanceMemoryMib must be at least 1",
                    tier.as_str()
                ));
            }
        }
        Ok(())
    }
}

/// The CustomResourceDefinition as YAML, as committed to `k8s/crds/modeldeployment.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let yaml = serde_yaml::to_string(&ModelDeployment::crd())?;
    Ok(format!(
        "# Generated by `cargo run -p edgeserve-operator --bin crdgen`; do not edit.\n{yaml}"
    ))
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_owned()
}

fn default_gpu_image() -> String {
    DEFAULT_GPU_IMAGE.to_owned()
}

/// A model bundle: a tar (or tar.gz) of one model folder, which the host downloads, checks
/// against the digest and installs into its model repository before serving (`--bundle
/// <url>#sha256=<hex>`). The folder's name must be the spec's `model`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleSource {
    /// Where the bundle is downloaded from (http or https; no `#` fragment).
    #[schemars(regex(pattern = r"^https?://[^#]+$"))]
    pub url: String,
    /// Hex SHA-256 digest the downloaded bundle must match.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
}

/// Node pools a model is served on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Tier {
    /// Small CPU nodes near the clients (`edgeserve.dev/tier: edge`).
    #[default]
    Edge,
    /// GPU nodes (`edgeserve.dev/tier: datacenter`).
    Datacenter,
    /// Both pools; the edge tier offloads to the datacenter tier.
    Both,
}

impl Tier {
    /// The concrete tiers this choice deploys, datacenter first so the edge tier's upstream
    /// exists before the edge replicas start.
    pub fn deployed(self) -> &'static [DeployedTier] {
        match self {
            Tier::Edge => &[DeployedTier::Edge],
            Tier::Datacenter => &[DeployedTier::Datacenter],
            Tier::Both => &[DeployedTier::Datacenter, DeployedTier::Edge],
        }
    }
}

/// One node pool that gets its own Deployment, Service and HPA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeployedTier {
    /// The edge pool: CPU backend.
    Edge,
    /// The datacenter pool: GPU backend.
    Datacenter,
}

impl DeployedTier {
    /// Every concrete tier.
    pub const ALL: [DeployedTier; 2] = [DeployedTier::Edge, DeployedTier::Datacenter];

    /// The tier's name in labels, node selectors and child object names.
    pub fn as_str(self) -> &'static str {
        match self {
            DeployedTier::Edge => "edge",
            DeployedTier::Datacenter => "datacenter",
        }
    }
}

/// HorizontalPodAutoscaler settings, applied to each tier separately.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.maxReplicas >= self.minReplicas").message("maxReplicas must be at least minReplicas")
)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// Fewest replicas per tier.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most replicas per tier.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU utilization (percent of the CPU request) to scale at. Defaults to 70 when
    /// no target is set at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: Option<i32>,
    /// Average in-flight inference requests per replica to scale at (the host's
    /// `edgeserve_inflight_requests` gauge, served to the HPA by a custom-metrics adapter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_inflight: Option<i32>,
}

fn one() -> i32 {
    1
}

/// GPUs requested by each datacenter replica (the edge tier runs on the CPU).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuSpec {
    /// GPUs per datacenter replica.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub count: i32,
    /// Extended resource name of the GPU device plugin.
    #[serde(default = "default_gpu_resource")]
    #[schemars(length(min = 1))]
    pub resource: String,
}

impl Default for GpuSpec {
    fn default() -> Self {
        GpuSpec {
            count: 1,
            resource: default_gpu_resource(),
        }
    }
}

fn default_gpu_resource() -> String {
    DEFAULT_GPU_RESOURCE.to_owned()
}

/// The instance pool of each tier's replicas (the host's `--max-instances` and
/// `--max-instance-memory-mib`). The defaults are the ones `k8s/overlays/<tier>` deploy with
/// (`manifestgen` writes them there), so a pod the operator makes is sized like one deployed
/// from the manifests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Instances {
    /// Each edge replica's pool.
    #[serde(default = "InstanceLimits::edge")]
    pub edge: InstanceLimits,
    /// Each datacenter replica's pool.
    #[serde(default = "InstanceLimits::datacenter")]
    pub datacenter: InstanceLimits,
}

impl Instances {
    /// The pool of one tier's replicas.
    pub fn of(&self, tier: DeployedTier) -> InstanceLimits {
        match tier {
            DeployedTier::Edge => self.edge,
            DeployedTier::Datacenter => self.datacenter,
        }
    }
}

impl Default for Instances {
    fn default() -> Self {
        Instances {
            edge: InstanceLimits::edge(),
            datacenter: InstanceLimits::datacenter(),
        }
    }
}

/// How many model instances one replica keeps warm, and how much memory each may use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceLimits {
    /// Most model instances per replica, over all its models (`--max-instances`).
    #[schemars(range(min = 1))]
    pub max_instances: i32,
    /// Memory cap of each instance in MiB (`--max-instance-memory-mib`).
    #[schemars(range(min = 1))]
    pub max_instance_memory_mib: i32,
}

impl InstanceLimits {
    /// The edge default: small nodes, so fewer and smaller instance slots.
    pub fn edge() -> Self {
        InstanceLimits {
            max_instances: 32,
            max_instance_memory_mib: 256,
        }
    }

    /// The datacenter default: big GPU nodes.
    pub fn datacenter() -> Self {
        InstanceLimits {
            max_instances: 256,
            max_instance_memory_mib: 4096,
        }
    }
}

/// Observed state of a `ModelDeployment`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The edge tier, when deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<TierStatus>,
    /// The datacenter tier, when deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<TierStatus>,
}

/// Observed state of one tier's Deployment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierStatus {
    /// Replicas the Deployment wants (set by the HPA when autoscaled).
    pub replicas: i32,
    /// Replicas passing their readiness probe.
    pub ready_replicas: i32,
    /// In-cluster URL of the tier's Service.
    pub url: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{autoscaling, read_repo_file, spec};

    #[test]
    fn committed_crd_matches_crdgen() {
        let path = "k8s/crds/modeldeployment.yaml";
        assert!(
            read_repo_file(path) == crd_yaml().unwrap(),
            "{path} is stale; regenerate it with\n  cargo run -p edgeserve-operator --bin crdgen > {path}"
        );
    }

    #[test]
    fn crd_is_a_namespaced_v1alpha1_with_status_columns_and_rules() {
        let crd = ModelDeployment::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("modeldeployments.edgeserve.dev")
        );
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["md".to_owned()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<_> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            ["Model", "Tier", "Edge", "Datacenter", "Ready", "Age"]
        );
        let json = serde_json::to_string(&crd).unwrap();
        assert!(json.contains("!(has(self.replicas) && has(self.autoscaling))"));
        assert!(json.contains("self.maxReplicas >= self.minReplicas"));
        assert!(
            json.contains(r#""enum":["edge","datacenter","both"]"#),
            "{json}"
        );
    }

    #[test]
    fn instance_pools_are_schema_defaults_per_tier() {
        let crd = serde_json::to_value(ModelDeployment::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        // The whole object when `instances` is left out, one tier's when only that is.
        let instances = &spec["properties"]["instances"];
        let defaults = Instances::default();
        assert_eq!(
            instances["default"],
            serde_json::to_value(&defaults).unwrap()
        );
        for tier in DeployedTier::ALL {
            let pool = &instances["properties"][tier.as_str()]["default"];
            assert_eq!(*pool, serde_json::to_value(defaults.of(tier)).unwrap());
        }
        assert_eq!(instances["default"]["edge"]["maxInstances"], 32);
        assert_eq!(
            instances["default"]["datacenter"]["maxInstanceMemoryMib"],
            4096
        );
    }

    #[test]
    fn example_model_deployment_parses_and_validates() {
        let text = read_repo_file("k8s/crds/example-modeldeployment.yaml");
        let md: ModelDeployment = serde_yaml::from_str(&text).unwrap();
        assert_eq!(md.spec.tier, Tier::Both);
        md.spec.validate().unwrap();
        assert!(md.metadata.name.as_ref().unwrap().len() <= MAX_NAME_LEN);
        // No unknown fields: what the file says is what the types carry (the API server
        // would silently prune anything else).
        let original: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let round_trip = serde_json::to_value(&md).unwrap();
        assert_eq!(original["spec"], round_trip["spec"]);
    }

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let spec = spec();
        assert_eq!(spec.tier, Tier::Edge);
        assert_eq!(spec.image, DEFAULT_IMAGE);
        assert_eq!(spec.gpu_image, DEFAULT_GPU_IMAGE);
        assert_eq!(spec.gpu, GpuSpec::default());
        assert_eq!(spec.replicas, None);
        assert_eq!(spec.instances.edge, InstanceLimits::edge());
        assert_eq!(spec.instances.datacenter, InstanceLimits::datacenter());
        spec.validate().unwrap();
        // One tier's pool given, the other keeps its default.
        let partial: Instances = serde_json::from_value(
            serde_json::json!({"edge": {"maxInstances": 8, "maxInstanceMemoryMib": 64}}),
        )
        .unwrap();
        assert_eq!(partial.edge.max_instances, 8);
        assert_eq!(partial.datacenter, InstanceLimits::datacenter());
    }

    #[test]
    fn validate_rejects_what_the_schema_rejects() {
        let base = spec();
        let mut both = base.clone();
        both.replicas = Some(1);
        both.autoscaling = Some(autoscaling(1, 2, None, None));
        assert!(both.validate().is_err());
        let mut inverted = base.clone();
        inverted.autoscaling = Some(autoscaling(3, 2, None, None));
        assert!(inverted.validate().is_err());
        let mut bad_sha = base.clone();
        bad_sha.bundle.sha256 = "ABC".to_owned();
        assert!(bad_sha.validate().is_err());
        for model in ["", "-x", "a b", &"m".repeat(64)] {
            let mut bad_model = base.clone();
            bad_model.model = model.to_owned();
            assert!(bad_model.validate().is_err(), "{model:?}");
        }
        let mut bad_url = base.clone();
        bad_url.bundle.url = "oci://registry/model".to_owned();
        assert!(bad_url.validate().is_err());
        let mut no_instances = base.clone();
        no_instances.instances.datacenter.max_instances = 0;
        assert!(no_instances.validate().is_err());
    }
}

//! Fixtures the unit tests share: one `ModelDeployment` and the path of a committed file.

use std::path::PathBuf;

use crate::crd::{Autoscaling, ModelDeployment, ModelDeploymentSpec, Tier};

/// Namespace of the fixture.
pub const NS: &str = "ml";
/// Uid of the fixture.
pub const UID: &str = "5f0c2a4e-0000-4000-8000-000000000001";
/// Bundle URL of the fixture.
pub const BUNDLE_URL: &str = "https://models.example.com/digits.tar.gz";
/// Bundle digest of the fixture.
pub const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The smallest spec the API server accepts: model and bundle; serde fills in every default
/// exactly as a spec without those fields is read.
pub fn spec() -> ModelDeploymentSpec {
    serde_json::from_value(serde_json::json!({
        "model": "digits",
        "bundle": {"url": BUNDLE_URL, "sha256": SHA},
    }))
    .unwrap()
}

/// `digits` in namespace [`NS`] with uid [`UID`] and generation 1, serving [`spec`] on `tier`
/// (one replica per tier: neither `replicas` nor `autoscaling` is set).
pub fn model_deployment(tier: Tier) -> ModelDeployment {
    let mut md = ModelDeployment::new("digits", ModelDeploymentSpec { tier, ..spec() });
    md.metadata.namespace = Some(NS.to_owned());
    md.metadata.uid = Some(UID.to_owned());
    md.metadata.generation = Some(1);
    md
}

/// Autoscaling between `min` and `max` replicas on the given targets.
pub fn autoscaling(min: i32, max: i32, cpu: Option<i32>, inflight: Option<i32>) -> Autoscaling {
    Autoscaling {
        min_replicas: min,
        max_replicas: max,
        target_cpu_utilization: cpu,
        target_inflight: inflight,
    }
}

/// [`model_deployment`] autoscaled between 2 and 10 replicas on the given targets.
pub fn autoscaled(tier: Tier, cpu: Option<i32>, inflight: Option<i32>) -> ModelDeployment {
    let mut md = model_deployment(tier);
    md.spec.autoscaling = Some(autoscaling(2, 10, cpu, inflight));
    md
}

/// A file of the repository, by its path from the repository root.
///
/// Found from `CARGO_MANIFEST_DIR` as cargo sets it for the running test,
/// not as compiled in: a target dir kept warm for checkouts at different
/// paths (`.ci/run`'s) keeps a test binary built for another path, since
/// cargo does not rebuild a crate that only moved.
pub fn repo_file(path: &str) -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../..")
        .join(path)
}

/// The text of a committed file (panics naming the file when it cannot be read).
pub fn read_repo_file(path: &str) -> String {
    let file = repo_file(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The `(name, port)` of each of a container's or a Service's ports, in order; `port` reads one.
pub fn named_ports<'a, P: 'a>(
    ports: impl IntoIterator<Item = &'a P>,
    port: impl Fn(&'a P) -> (&'a Option<String>, i32),
) -> Vec<(&'a str, i32)> {
    ports
        .into_iter()
        .map(|p| {
            let (name, number) = port(p);
            (name.as_deref().unwrap(), number)
        })
        .collect()
}

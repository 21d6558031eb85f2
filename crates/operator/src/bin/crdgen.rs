//! Prints the `ModelDeployment` CustomResourceDefinition as YAML.
//!
//! `cargo run -p edgeserve-operator --bin crdgen > k8s/crds/modeldeployment.yaml`
//! (a unit test fails when the committed file differs from this output).

fn main() -> anyhow::Result<()> {
    print!("{}", edgeserve_operator::crd::crd_yaml()?);
    Ok(())
}

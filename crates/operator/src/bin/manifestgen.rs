//! Writes the manifests generated from the pod template: `k8s/base/deployment.yaml` and each
//! overlay's `deployment.yaml` and `instance-pool.env`.
//!
//! `cargo run -p edgeserve-operator --bin manifestgen [REPOSITORY_ROOT]` (by default the
//! repository it was built from; a unit test fails when the committed files differ from what
//! this writes).

use std::path::PathBuf;

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let root = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
        PathBuf::from,
    );
    for (path, contents) in edgeserve_operator::manifests::files()? {
        let file = root.join(&path);
        std::fs::write(&file, contents).with_context(|| format!("{}", file.display()))?;
        println!("wrote {path}");
    }
    Ok(())
}

//! `edgeserve import`: an ONNX file to a model folder served by the generic
//! ONNX handler, with no code.
//!
//! The folder it writes, `<repository>/<name>/`:
//! * `config.toml`;
//! * `1/model.wasm`: the ONNX handler component (plugins/onnx);
//! * `1/graph.json`: the nodes, inline constants and input/output specs;
//! * `1/model.safetensors`: the float initializers, memory-mapped once and
//!   shared by every instance like any model's weights.
//!
//! The graph is checked against the handler's rules (the same code runs in
//! the handler at load), and every unsupported op is named with its node.

mod convert;
mod dedupe;
mod fuse;
mod proto;
mod shapes;
mod tensor;

use std::path::{Path, PathBuf};

use edgeserve_onnx_graph::{GRAPH_ASSET, SUPPORTED_OPS, Unsupported, unsupported};
use prost::Message;

pub use fuse::Fused;
pub use shapes::Simplified;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not an ONNX model, or an inconsistent one.
    #[error("not a valid ONNX model: {0}")]
    Corrupt(String),
    /// A tensor keeps its data in a separate file.
    #[error(
        "tensor {tensor:?} keeps its data in {location:?} (external data); save the model as one file: onnx.save(model, path, save_as_external_data=False)"
    )]
    ExternalData {
        /// The tensor's name.
        tensor: String,
        /// The file ONNX names.
        location: String,
    },
    /// A tensor or value has an element type the handler cannot hold.
    #[error("{tensor:?} has ONNX element type {code}, which edgeserve does not support")]
    Dtype {
        /// The tensor's or value's name.
        tensor: String,
        /// Its `TensorProto.DataType` code.
        code: i32,
    },
    /// The graph uses ops or attributes the handler does not support.
    #[error("the ONNX graph cannot be served:\n{}", list(.0))]
    Unsupported(Vec<Unsupported>),
    /// The model folder exists already.
    #[error("{0} exists already; pick another --name or remove it")]
    Exists(PathBuf),
    /// The handler component was not found.
    #[error(
        "the ONNX handler component was not found (looked for {tried}); build it with `cargo build --release --target wasm32-wasip2 -p onnx` in plugins/ and pass --handler or set EDGESERVE_ONNX_HANDLER"
    )]
    NoHandler {
        /// The paths looked at.
        tried: String,
    },
    /// The weights could not be serialised.
    #[error("writing model.safetensors: {0}")]
    Weights(#[from] safetensors::SafeTensorError),
}

fn list(problems: &[Unsupported]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What to import and where.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The `.onnx` file.
    pub model: PathBuf,
    /// The model's name in the repository.
    pub name: String,
    /// The model repository.
    pub repository: PathBuf,
    /// The ONNX handler component; found next to the binary when `None`.
    pub handler: Option<PathBuf>,
}

/// What an import wrote.
#[derive(Debug)]
pub struct Imported {
    /// The model folder.
    pub dir: PathBuf,
    /// Graph nodes kept.
    pub nodes: usize,
    /// Weights written to `model.safetensors`.
    pub weights: usize,
    /// Patterns fused into coarse ops.
    pub fused: Fused,
    /// Shape arithmetic resolved.
    pub simplified: Simplified,
    /// Repeated nodes merged.
    pub merged: usize,
}

/// Imports `options.model` as model `options.name`.
pub fn import(options: &ImportOptions) -> Result<Imported, ImportError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ImportError::Io { path, source }
    };
    let bytes = std::fs::read(&options.model).map_err(io(&options.model))?;
    let model = proto::ModelProto::decode(bytes.as_slice())
        .map_err(|e| ImportError::Corrupt(e.to_string()))?;
    let converted = convert::convert(&model)?;
    let problems = unsupported(&converted.graph);
    if !problems.is_empty() {
        return Err(ImportError::Unsupported(problems));
    }
    let handler = find_handler(options.handler.as_deref())?;
    let dir = options.repository.join(&options.name);
    if dir.exists() {
        return Err(ImportError::Exists(dir));
    }
    let version = dir.join("1");
    std::fs::create_dir_all(&version).map_err(io(&version))?;
    let graph = serde_json::to_vec(&converted.graph).expect("a graph serialises");
    let graph_path = version.join(GRAPH_ASSET);
    std::fs::write(&graph_path, graph).map_err(io(&graph_path))?;
    let views = converted
        .weights
        .iter()
        .map(|(name, raw)| {
            safetensors::tensor::TensorView::new(
                raw.safetensors_dtype(),
                raw.dims.clone(),
                &raw.bytes,
            )
            .map(|view| (name.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize_to_file(views, None, &version.join("model.safetensors"))?;
    let wasm = version.join("model.wasm");
    std::fs::copy(&handler, &wasm).map_err(io(&handler))?;
    let config = dir.join("config.toml");
    let text = format!(
        "# Imported from {} by `edgeserve import`; served by the generic ONNX handler.\n\
         # Every key of a model's config.toml may be set here (instances, timeout_ms, device…).\n\
         #\n\
         # An encoder's output with a value per token (a last hidden state) gives what the graph\n\
         # computes at padding positions. With zeros there instead, a padded batch asking for it\n\
         # runs on its real tokens only, which is faster; masked pooling gives the same answer.\n\
         # [parameters]\n\
         # padding_positions = \"zeros\"\n",
        options.model.display()
    );
    std::fs::write(&config, text).map_err(io(&config))?;
    Ok(Imported {
        dir,
        nodes: converted.graph.nodes.len(),
        weights: converted.weights.len(),
        fused: converted.fused,
        simplified: converted.simplified,
        merged: converted.merged,
    })
}

/// The handler component: `explicit`, else `onnx.wasm` next to the running
/// binary or in `../share/edgeserve/` from it.
fn find_handler(explicit: Option<&Path>) -> Result<PathBuf, ImportError> {
    let mut tried = Vec::new();
    let candidates: Vec<PathBuf> = match explicit {
        Some(path) => vec![path.to_owned()],
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_owned))
            .map(|dir| {
                vec![
                    dir.join("onnx.wasm"),
                    dir.join("../share/edgeserve/onnx.wasm"),
                ]
            })
            .unwrap_or_default(),
    };
    for path in candidates {
        if path.is_file() {
            return Ok(path);
        }
        tried.push(path.display().to_string());
    }
    Err(ImportError::NoHandler {
        tried: tried.join(", "),
    })
}

/// The supported ops as a Markdown table (for the README), from the same
/// table the checks use.
pub fn supported_ops_markdown() -> String {
    let mut out = String::from("| op | limits |\n| --- | --- |\n");
    for (op, note) in SUPPORTED_OPS {
        out.push_str(&format!("| {op} | {note} |\n"));
    }
    out
}

/// Options of `edgeserve import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The `.onnx` file to import.
    #[arg(required_unless_present = "list_ops")]
    pub model: Option<PathBuf>,
    /// The model's name in the repository (its folder name).
    #[arg(long, required_unless_present = "list_ops")]
    pub name: Option<String>,
    /// The model repository to write the model folder into.
    #[arg(
        long,
        env = "EDGESERVE_MODEL_REPOSITORY",
        default_value = "examples/models"
    )]
    pub repository: PathBuf,
    /// The ONNX handler component (`onnx.wasm`); by default, next to this
    /// binary or in `../share/edgeserve/` from it.
    #[arg(long, env = "EDGESERVE_ONNX_HANDLER")]
    pub handler: Option<PathBuf>,
    /// Print the supported ops as a Markdown table and exit.
    #[arg(long)]
    pub list_ops: bool,
}

impl ImportArgs {
    /// Runs the command: prints what it wrote (or the op table).
    pub fn run(self) -> Result<(), ImportError> {
        let (false, Some(model), Some(name)) = (self.list_ops, self.model, self.name) else {
            print!("{}", supported_ops_markdown());
            return Ok(());
        };
        let imported = import(&ImportOptions {
            model,
            name,
            repository: self.repository,
            handler: self.handler,
        })?;
        let (fused, shapes) = (&imported.fused, &imported.simplified);
        println!(
            "imported {} ({} nodes, {} weights; fused {} layer norms, {} GELUs, {} linears, {} attentions; \
             {} reshape targets made constant, {} no-op reshapes dropped, {} dims read off inputs, \
             {} repeated nodes merged)",
            imported.dir.display(),
            imported.nodes,
            imported.weights,
            fused.layer_norms,
            fused.gelus,
            fused.linears,
            fused.attentions,
            shapes.targets,
            shapes.reshapes,
            shapes.dims,
            imported.merged,
        );
        Ok(())
    }
}

/// A node of one output, named after it, for the passes' unit tests.
#[cfg(test)]
fn node(op: &str, inputs: &[&str], output: &str) -> edgeserve_onnx_graph::Node {
    edgeserve_onnx_graph::Node {
        name: output.into(),
        op: op.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: vec![output.into()],
        attrs: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_lists_exactly_the_supported_ops() {
        let readme = include_str!("../../../README.md");
        let table = supported_ops_markdown();
        assert!(
            readme.contains(&table),
            "README.md's ONNX op table is stale; replace it with the output of `edgeserve import --list-ops`:\n{table}"
        );
    }
}

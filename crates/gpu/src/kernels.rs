//! WGSL sources of the compute kernels: one file per kernel under
//! `src/kernels/`, assembled when its pipeline is built from the shared
//! snippets it needs, so every shared piece is written once.

/// The parameter binding and float helpers; first in every kernel.
const COMMON: &str = include_str!("kernels/common.wgsl");
/// The entry point of one-thread-per-item kernels, which define `item`.
const MAP: &str = include_str!("kernels/map.wgsl");
/// The entry point of one-workgroup-per-row kernels, which define `row`,
/// and their workgroup reductions.
const ROWS: &str = include_str!("kernels/rows.wgsl");
/// The contract's unary ops, for `unary` and the matmul epilogue.
const ACTIVATION: &str = include_str!("kernels/activation.wgsl");

/// The file `src/kernels/<kernel>.wgsl`, for each kernel named.
macro_rules! kernel_file {
    ($kernel:expr, $($stem:literal)|*) => {
        match $kernel {
            $($stem => include_str!(concat!("kernels/", $stem, ".wgsl")),)*
            other => unreachable!("unknown kernel {other}"),
        }
    };
}

/// The full WGSL source of `kernel` (a file stem under `src/kernels/`, or
/// `matmul_f16`: the matmul kernel on f16 storage, which needs the device's
/// `shader-f16` feature).
pub(crate) fn source(kernel: &str) -> String {
    // The matmul kernel names its storage type `elem`.
    let header = match kernel {
        "matmul" => "alias elem = f32;",
        "matmul_f16" => "enable f16;\nalias elem = f16;",
        _ => "",
    };
    let shared: &[&str] = match kernel {
        // The activations of the fused epilogue.
        "matmul" | "matmul_f16" => &[ACTIVATION],
        "unary" => &[MAP, ACTIVATION],
        "softmax" | "attn_softmax" | "attention_varlen" | "layer_norm" | "top_k" => &[ROWS],
        _ => &[MAP],
    };
    let body = kernel_file!(
        kernel.trim_end_matches("_f16"),
        "matmul"
            | "unary"
            | "binary"
            | "cast"
            | "fill"
            | "copy"
            | "embedding"
            | "reduce"
            | "conv2d"
            | "pool2d"
            | "softmax"
            | "attn_softmax"
            | "attention_varlen"
            | "layer_norm"
            | "top_k"
            | "compare"
            | "where"
            | "gather"
    );
    [header, COMMON]
        .into_iter()
        .chain(shared.iter().copied())
        .chain([body])
        .collect::<Vec<_>>()
        .join("\n")
}

/// The access of each binding `source` declares (all in group 0, numbered
/// from 0 without gaps, as every kernel file writes them): `true` where it
/// is read-only. The backend builds each kernel's bind group layout from
/// this, rather than letting wgpu derive it, so that the parameter words can
/// be bound at dynamic offsets (see `stream`).
pub(crate) fn bindings(source: &str) -> Vec<bool> {
    let mut access = Vec::new();
    for decl in source.split("@binding(").skip(1) {
        let (index, rest) = decl.split_once(')').expect("a binding number");
        let index: usize = index.parse().expect("a binding number");
        let (_, rest) = rest.split_once("var<storage,").expect("a storage buffer");
        let (mode, _) = rest.split_once('>').expect("an access mode");
        if access.len() <= index {
            access.resize(index + 1, None);
        }
        access[index] = Some(mode.trim() == "read");
    }
    access
        .into_iter()
        .map(|a| a.expect("bindings numbered without gaps"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_follow_the_declared_access() {
        // Parameters, ids and table are read; the result is written.
        assert_eq!(bindings(&source("embedding")), [true, true, true, false]);
        // Every kernel is built from these in the conformance suite, where a
        // layout that disagrees with its shader fails the pipeline.
    }
}

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

//! WGSL sources of the compute kernels, one file per kernel under
//! `src/kernels/`, each prefixed with the shared helpers of `common.wgsl`.

const COMMON: &str = include_str!("kernels/common.wgsl");
const ACTIVATION: &str = include_str!("kernels/activation.wgsl");
const MATMUL: &str = include_str!("kernels/matmul.wgsl");

/// The full WGSL source of `kernel` (a file stem under `src/kernels/`, or
/// `matmul_f16`: the matmul kernel on f16 storage, which needs the device's
/// `shader-f16` feature).
pub(crate) fn source(kernel: &str) -> String {
    let body = match kernel {
        // The matmul kernel names its storage type `elem` and applies the
        // activations of the fused epilogue.
        "matmul" => return format!("alias elem = f32;\n{COMMON}\n{ACTIVATION}\n{MATMUL}"),
        "matmul_f16" => {
            return format!("enable f16;\nalias elem = f16;\n{COMMON}\n{ACTIVATION}\n{MATMUL}");
        }
        "unary" => {
            return format!(
                "{COMMON}\n{ACTIVATION}\n{}",
                include_str!("kernels/unary.wgsl")
            );
        }
        "binary" => include_str!("kernels/binary.wgsl"),
        "copy" => include_str!("kernels/copy.wgsl"),
        "fill" => include_str!("kernels/fill.wgsl"),
        "softmax" => include_str!("kernels/softmax.wgsl"),
        "attn_softmax" => include_str!("kernels/attn_softmax.wgsl"),
        "layer_norm" => include_str!("kernels/layer_norm.wgsl"),
        "reduce" => include_str!("kernels/reduce.wgsl"),
        "embedding" => include_str!("kernels/embedding.wgsl"),
        "cast" => include_str!("kernels/cast.wgsl"),
        "conv2d" => include_str!("kernels/conv2d.wgsl"),
        "pool2d" => include_str!("kernels/pool2d.wgsl"),
        other => unreachable!("unknown kernel {other}"),
    };
    format!("{COMMON}\n{body}")
}

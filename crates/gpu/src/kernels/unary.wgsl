// Elementwise unary ops (activation.wgsl) and affine. p: [n, factor bits, offset bits].
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// A unary op code of activation.wgsl, or 13 for affine.
override OP: u32 = 0u;

fn item(idx: u32) {
    let v = x[idx];
    if (OP == 13u) {
        y[idx] = v * bitcast<f32>(p[1]) + bitcast<f32>(p[2]);
    } else {
        y[idx] = unary_op(OP, v);
    }
}

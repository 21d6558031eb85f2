// Elementwise unary ops (activation.wgsl), affine and clip.
// p: [n, factor bits, offset bits] (clip: [n, lo bits, hi bits]).
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// A unary op code of activation.wgsl, 13 for affine or 14 for clip.
override OP: u32 = 0u;

fn item(idx: u32) {
    let v = x[idx];
    if (OP == 13u) {
        y[idx] = v * bitcast<f32>(p[1]) + bitcast<f32>(p[2]);
    } else if (OP == 14u) {
        // NaN stays NaN, as on the CPU.
        y[idx] = select(min(max(v, bitcast<f32>(p[1])), bitcast<f32>(p[2])), v, is_nan(v));
    } else {
        y[idx] = unary_op(OP, v);
    }
}

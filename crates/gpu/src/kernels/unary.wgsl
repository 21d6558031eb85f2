// Elementwise unary ops (activation.wgsl) and affine. p: [n, factor bits, offset bits].
@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// A unary op code of activation.wgsl, or 13 for affine.
override OP: u32 = 0u;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_index(wg, nwg, lid);
    if (idx >= p[0]) {
        return;
    }
    let v = x[idx];
    if (OP == 13u) {
        y[idx] = v * bitcast<f32>(p[1]) + bitcast<f32>(p[2]);
    } else {
        y[idx] = unary_op(OP, v);
    }
}

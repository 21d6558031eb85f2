// Layer norm of one row (last axis, n elements) per workgroup, two passes.
// p: [rows, n, flags (1 gamma, 2 beta), eps bits].
@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

var<workgroup> red: array<f32, 256>;

fn reduce_sum(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] = red[t] + red[t + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = p[0];
    let n = p[1];
    let flags = p[2];
    let eps = bitcast<f32>(p[3]);
    let r = wg.y * nwg.x + wg.x;
    let valid = r < rows;
    let base = r * n;
    let t = lid.x;
    var s = 0.0;
    if (valid) {
        for (var j = t; j < n; j += 256u) {
            s += x[base + j];
        }
    }
    let mean = reduce_sum(t, s) / f32(n);
    var q = 0.0;
    if (valid) {
        for (var j = t; j < n; j += 256u) {
            let d = x[base + j] - mean;
            q += d * d;
        }
    }
    let variance = reduce_sum(t, q) / f32(n);
    let inv = 1.0 / sqrt(variance + eps);
    if (valid) {
        for (var j = t; j < n; j += 256u) {
            var v = (x[base + j] - mean) * inv;
            if ((flags & 1u) != 0u) {
                v = v * gamma[j];
            }
            if ((flags & 2u) != 0u) {
                v = v + beta[j];
            }
            y[base + j] = v;
        }
    }
}

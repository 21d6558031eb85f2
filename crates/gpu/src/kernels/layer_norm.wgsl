// Layer norm of one row (last axis, n elements) per workgroup, two passes.
// p: [rows, n, flags (1 gamma, 2 beta), eps bits].
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

fn row(r: u32, t: u32) {
    let n = p[1];
    let flags = p[2];
    let eps = bitcast<f32>(p[3]);
    let valid = r < p[0];
    let base = r * n;
    var s = 0.0;
    if (valid) {
        for (var j = t; j < n; j += 256u) {
            s += x[base + j];
        }
    }
    let mean = row_sum(t, s) / f32(n);
    var q = 0.0;
    if (valid) {
        for (var j = t; j < n; j += 256u) {
            let d = x[base + j] - mean;
            q += d * d;
        }
    }
    let variance = row_sum(t, q) / f32(n);
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

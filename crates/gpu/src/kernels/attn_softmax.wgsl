// Attention scores to probabilities, in place: one row (batch b, query i)
// per workgroup; s = scores * scale + mask, keys at or past the causal limit
// hidden, softmax over the rest (zeros when every key is hidden).
// p: [rows, lq, lk, scale bits, has_mask, causal, mask row stride, mask col stride];
// mbase: the mask's element offset per batch entry.
@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> mbase: array<u32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> sc: array<f32>;

var<workgroup> red: array<f32, 256>;

fn score(base: u32, mb: u32, i: u32, j: u32) -> f32 {
    var v = sc[base + j] * bitcast<f32>(p[3]);
    if (p[4] != 0u) {
        v += mask[mb + i * p[6] + j * p[7]];
    }
    return v;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = p[0];
    let lq = max(p[1], 1u);
    let lk = p[2];
    let r = wg.y * nwg.x + wg.x;
    let valid = r < rows;
    let b = r / lq;
    let i = r % lq;
    let base = r * lk;
    var limit = lk;
    if (p[5] != 0u) {
        limit = u32(clamp(i32(i) + i32(lk) - i32(p[1]) + 1, 0, i32(lk)));
    }
    var mb = 0u;
    if (valid) {
        mb = mbase[b];
    }
    let t = lid.x;
    var m = LOWEST;
    if (valid) {
        for (var j = t; j < limit; j += 256u) {
            m = max(m, score(base, mb, i, j));
        }
    }
    red[t] = m;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] = max(red[t], red[t + s]);
        }
        workgroupBarrier();
    }
    let mx = red[0];
    workgroupBarrier();
    var sum = 0.0;
    if (valid) {
        for (var j = t; j < limit; j += 256u) {
            sum += exp(score(base, mb, i, j) - mx);
        }
    }
    red[t] = sum;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] = red[t] + red[t + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    let inv = select(1.0 / total, 0.0, total == 0.0);
    workgroupBarrier();
    if (valid) {
        for (var j = t; j < lk; j += 256u) {
            var out = 0.0;
            if (j < limit) {
                out = exp(score(base, mb, i, j) - mx) * inv;
            }
            sc[base + j] = out;
        }
    }
}

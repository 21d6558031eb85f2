// Attention scores to probabilities, in place: one row (batch b, query i)
// per workgroup; s = scores * scale + mask, keys at or past the causal limit
// hidden, softmax over the rest (zeros when every key is hidden).
// p: [rows, lq, lk, scale bits, has_mask, causal, mask row stride, mask col stride];
// mbase: the mask's element offset per batch entry.
@group(0) @binding(1) var<storage, read> mbase: array<u32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> sc: array<f32>;

fn score(base: u32, mb: u32, i: u32, j: u32) -> f32 {
    var v = sc[base + j] * bitcast<f32>(p[3]);
    if (p[4] != 0u) {
        v += mask[mb + i * p[6] + j * p[7]];
    }
    return v;
}

fn row(r: u32, t: u32) {
    let lq = max(p[1], 1u);
    let lk = p[2];
    let valid = r < p[0];
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
    var m = LOWEST;
    if (valid) {
        for (var j = t; j < limit; j += 256u) {
            m = max(m, score(base, mb, i, j));
        }
    }
    let mx = row_max(t, m);
    var sum = 0.0;
    if (valid) {
        for (var j = t; j < limit; j += 256u) {
            sum += exp(score(base, mb, i, j) - mx);
        }
    }
    let total = row_sum(t, sum);
    let inv = select(1.0 / total, 0.0, total == 0.0);
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

// Attention within each sequence of tokens packed without padding: one
// workgroup per row r = token * heads + head. The row's scores against the
// keys of its own sequence go to the scratch `sc` (the token's base in
// `tab`, then `head * len`), become exponentials in place, and weigh the
// values; keys past the query are hidden when causal.
// p: [rows, heads, d, dv, scale bits, causal];
// tab: per token [sequence start, sequence length, scratch base].
@group(0) @binding(1) var<storage, read> tab: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k: array<f32>;
@group(0) @binding(4) var<storage, read> v: array<f32>;
@group(0) @binding(5) var<storage, read_write> sc: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

fn row(r: u32, t: u32) {
    let heads = max(p[1], 1u);
    let d = p[2];
    let dv = p[3];
    let valid = r < p[0];
    let token = r / heads;
    let h = r % heads;
    // A row past the last sees no keys and writes nothing.
    var start = 0u;
    var keys = 0u;
    var base = 0u;
    if (valid) {
        start = tab[token * 3u];
        let len = tab[token * 3u + 1u];
        base = tab[token * 3u + 2u] + h * len;
        keys = select(len, token - start + 1u, p[5] != 0u);
    }
    let qb = (token * heads + h) * d;
    let scale = bitcast<f32>(p[4]);
    var m = LOWEST;
    for (var j = t; j < keys; j += 256u) {
        let kb = ((start + j) * heads + h) * d;
        var s = 0.0;
        for (var c = 0u; c < d; c++) {
            s += q[qb + c] * k[kb + c];
        }
        s *= scale;
        sc[base + j] = s;
        m = max(m, s);
    }
    let mx = row_max(t, m);
    var sum = 0.0;
    for (var j = t; j < keys; j += 256u) {
        let e = exp(sc[base + j] - mx);
        sc[base + j] = e;
        sum += e;
    }
    let total = row_sum(t, sum);
    // Every thread reads the exponentials all of them wrote.
    storageBarrier();
    let inv = select(1.0 / total, 0.0, total == 0.0);
    if (valid) {
        for (var c = t; c < dv; c += 256u) {
            var acc = 0.0;
            for (var j = 0u; j < keys; j++) {
                acc += sc[base + j] * v[((start + j) * heads + h) * dv + c];
            }
            y[(token * heads + h) * dv + c] = acc * inv;
        }
    }
}

// Reduction along an axis, one thread per output. p: [outputs, len, inner].
// Arg ops write i64 indices as (low, high) word pairs.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

// 0 sum, 1 mean, 2 max, 3 min, 4 argmax, 5 argmin.
override OP: u32 = 0u;

fn better(v: f32, best: f32, want_max: bool) -> bool {
    let beats = select((v < best), (v > best), want_max);
    return beats || (is_nan(v) && !is_nan(best));
}

fn item(idx: u32) {
    let len = p[1];
    let inner = max(p[2], 1u);
    let base = (idx / inner) * len * inner + idx % inner;
    if (OP <= 1u) {
        var s = 0.0;
        for (var j = 0u; j < len; j++) {
            s += x[base + j * inner];
        }
        if (OP == 1u) {
            s = s / f32(len);
        }
        y[idx] = bitcast<u32>(s);
        return;
    }
    let want_max = OP == 2u || OP == 4u;
    var best = x[base];
    var at = 0u;
    for (var j = 1u; j < len; j++) {
        let v = x[base + j * inner];
        if (better(v, best, want_max)) {
            best = v;
            at = j;
        }
    }
    if (OP <= 3u) {
        y[idx] = bitcast<u32>(best);
    } else {
        y[2u * idx] = at;
        y[2u * idx + 1u] = 0u;
    }
}

// Gather along one axis of x seen as [outer, dim, inner], one thread per
// output word. p: [words, inner words, count, dim, words per index (1: i32, 2: i64)].
// Indices were checked by the backend; one outside -dim..dim gives zeros.
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

fn item(idx: u32) {
    let inner = p[1];
    let count = p[2];
    let dim = p[3];
    let row = idx / inner;
    let j = row % count;
    let block = row / count;
    let lo = ids[j * p[4]];
    // An i64 index fits in i32 when its high word is the sign of its low one.
    var ok = true;
    if (p[4] == 2u) {
        ok = ids[j * 2u + 1u] == select(0u, 0xffffffffu, lo >= 0x80000000u);
    }
    var i = bitcast<i32>(lo);
    if (i < 0) {
        i += i32(dim);
    }
    ok = ok && i >= 0 && u32(i) < dim;
    var v = 0u;
    if (ok) {
        v = x[(block * dim + u32(i)) * inner + idx % inner];
    }
    y[idx] = v;
}

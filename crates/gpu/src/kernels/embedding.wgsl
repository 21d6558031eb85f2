// Row gather out[r] = table[ids[r]], one thread per output word.
// p: [out words, row words, vocab, words per id (1: i32, 2: i64)].
// Ids outside 0..vocab give zero rows (the backend checks ids it knows).
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

fn item(idx: u32) {
    let row_words = p[1];
    let r = idx / row_words;
    let c = idx % row_words;
    let per_id = p[3];
    let lo = ids[r * per_id];
    var ok = lo < p[2] && lo < 0x80000000u;
    if (per_id == 2u) {
        ok = ok && ids[r * 2u + 1u] == 0u;
    }
    var v = 0u;
    if (ok) {
        v = table[lo * row_words + c];
    }
    y[idx] = v;
}

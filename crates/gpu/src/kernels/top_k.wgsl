// The k largest entries of each row (the last axis), one workgroup per row,
// as a tournament. Each of the 256 threads owns a contiguous chunk of the
// row and puts the chunk's best element at a leaf of a binary tree in
// workgroup memory; the tree is built bottom up, so its root is the row's
// best element. Then one thread emits the root k times: after each, only the
// winner's chunk has a new best (the best ranked below the winner), so it
// rescans that chunk and replays the winner's path to the root. Everything
// ranked above the current winner has been emitted by then, so the rescan
// needs no other memory of what was taken.
//
// The rank is a strict total order, as the CPU backend ranks: by value
// descending with NaN above everything and -0 equal to 0, ties by lower
// index. p: [rows, len, k]. Values keep x's dtype; indices are i64 (low,
// high) word pairs.
@group(0) @binding(1) var<storage, read> x: array<u32>;
// Atomic because two rows of f16 values can share a word: each workgroup
// replaces only its own halves.
@group(0) @binding(2) var<storage, read_write> values: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read_write> indices: array<u32>;

// x's dtype: 0 f32, 1 f16, 2 i32, 3 i64.
override DT: u32 = 0u;

// An element of the row: its key (high, low words; larger ranks higher) and
// its index in the row.
struct Cand {
    key: vec2<u32>,
    at: u32,
}

// No element: below every element of a row, whose indices are all smaller.
const NONE: u32 = 0xffffffffu;

// The tournament: node i's children are 2i and 2i + 1; leaves 256..511.
var<workgroup> tree: array<Cand, 512>;

// The bits of f16 element `i`.
fn half_bits(i: u32) -> u32 {
    return (x[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu;
}

// A float's bits as an unsigned key in rank order: `sign` is the sign bit,
// `inf` the bits of +inf. Both zeros map to `sign`, every NaN to the top.
fn float_key(bits: u32, sign: u32, inf: u32) -> u32 {
    let mag = bits & (sign - 1u);
    if (mag > inf) {
        return 0xffffffffu;
    }
    return select(sign + mag, sign - mag, (bits & sign) != 0u);
}

// Element `i`'s key.
fn key(i: u32) -> vec2<u32> {
    switch DT {
        case 0u: { return vec2<u32>(float_key(x[i], 0x80000000u, 0x7f800000u), 0u); }
        case 1u: { return vec2<u32>(float_key(half_bits(i), 0x8000u, 0x7c00u), 0u); }
        case 2u: { return vec2<u32>(x[i] ^ 0x80000000u, 0u); }
        default: { return vec2<u32>(x[2u * i + 1u] ^ 0x80000000u, x[2u * i]); }
    }
}

// Whether `a` ranks above `b`.
fn above(a: Cand, b: Cand) -> bool {
    if (a.key.x != b.key.x) {
        return a.key.x > b.key.x;
    }
    if (a.key.y != b.key.y) {
        return a.key.y > b.key.y;
    }
    return a.at < b.at;
}

// The best element of chunk `c` (`size` elements from c * size, within the
// row of `len` at `base`), among those ranked below `bound` if `bounded`.
fn chunk_best(base: u32, len: u32, size: u32, c: u32, bound: Cand, bounded: bool) -> Cand {
    var best = Cand(vec2<u32>(0u), NONE);
    let end = min(c * size + size, len);
    for (var e = c * size; e < end; e++) {
        let cand = Cand(key(base + e), e);
        if ((!bounded || above(bound, cand)) && above(cand, best)) {
            best = cand;
        }
    }
    return best;
}

// Node `i` takes the better of its children.
fn pull_up(i: u32) {
    let l = tree[2u * i];
    let r = tree[2u * i + 1u];
    if (above(r, l)) {
        tree[i] = r;
    } else {
        tree[i] = l;
    }
}

// Output `o` takes element `src` of x, index `at` within its row.
fn emit(o: u32, src: u32, at: u32) {
    indices[2u * o] = at;
    indices[2u * o + 1u] = 0u;
    switch DT {
        case 1u: {
            let shift = (o & 1u) * 16u;
            atomicAnd(&values[o >> 1u], ~(0xffffu << shift));
            atomicOr(&values[o >> 1u], half_bits(src) << shift);
        }
        case 3u: {
            atomicStore(&values[2u * o], x[2u * src]);
            atomicStore(&values[2u * o + 1u], x[2u * src + 1u]);
        }
        default: { atomicStore(&values[o], x[src]); }
    }
}

fn row(r: u32, t: u32) {
    let len = p[1];
    let k = p[2];
    let valid = r < p[0];
    let base = r * len;
    let size = len / 256u + select(0u, 1u, len % 256u != 0u);
    var leaf = Cand(vec2<u32>(0u), NONE);
    if (valid) {
        leaf = chunk_best(base, len, size, t, leaf, false);
    }
    tree[256u + t] = leaf;
    workgroupBarrier();
    for (var level = 128u; level > 0u; level >>= 1u) {
        if (t < level) {
            pull_up(level + t);
        }
        workgroupBarrier();
    }
    if (!valid || t != 0u) {
        return;
    }
    for (var j = 0u; j < k; j++) {
        let win = tree[1];
        emit(r * k + j, base + win.at, win.at);
        let c = win.at / size;
        tree[256u + c] = chunk_best(base, len, size, c, win, true);
        for (var i = (256u + c) >> 1u; i > 0u; i >>= 1u) {
            pull_up(i);
        }
    }
}

// The contract's `where`: a where the condition is nonzero, else b, broadcast,
// one thread per output word.
// p: [words, rank, words per element, shape[rank], c_strides[rank], a_strides[rank], b_strides[rank]].
@group(0) @binding(1) var<storage, read> c: array<u32>;
@group(0) @binding(2) var<storage, read> a: array<u32>;
@group(0) @binding(3) var<storage, read> b: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<u32>;

// Bytes per condition element (1, 2, 4 or 8), and whether it is a float
// (whose -0.0 counts as zero).
override COND_BYTES: u32 = 1u;
override COND_FLOAT: bool = false;

fn nonzero(o: u32) -> bool {
    switch COND_BYTES {
        case 1u: { return ((c[o / 4u] >> (8u * (o % 4u))) & 0xffu) != 0u; }
        case 2u: { return ((c[o / 2u] >> (16u * (o % 2u))) & select(0xffffu, 0x7fffu, COND_FLOAT)) != 0u; }
        case 4u: { return (c[o] & select(0xffffffffu, 0x7fffffffu, COND_FLOAT)) != 0u; }
        default: { return (c[2u * o] | c[2u * o + 1u]) != 0u; }
    }
}

fn item(idx: u32) {
    let rank = p[1];
    let per = p[2];
    var rest = idx / per;
    var oc = 0u;
    var oa = 0u;
    var ob = 0u;
    for (var d = 3u + rank; d > 3u; d--) {
        let dim = p[d - 1u];
        let coord = rest % dim;
        rest = rest / dim;
        oc += coord * p[d - 1u + rank];
        oa += coord * p[d - 1u + 2u * rank];
        ob += coord * p[d - 1u + 3u * rank];
    }
    let w = idx % per;
    y[idx] = select(b[ob * per + w], a[oa * per + w], nonzero(oc));
}

// Broadcasting comparison into a u8 mask, one thread per output word (four
// mask bytes). p: [words, rank, n, shape[rank], a_strides[rank], b_strides[rank]].
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

// 0 equal, 1 not-equal, 2 less, 3 less-equal, 4 greater, 5 greater-equal.
override OP: u32 = 0u;
// Operand type: 0 f32, 1 i32, 2 i64 (two words, low first).
override TYPE: u32 = 0u;

// -1, 0 or 1 as x is below, equal to or above z; 2 when unordered (NaN).
fn order(ia: u32, ib: u32) -> i32 {
    if (TYPE == 0u) {
        let x = bitcast<f32>(a[ia]);
        let z = bitcast<f32>(b[ib]);
        if (is_nan(x) || is_nan(z)) {
            return 2;
        }
        return select(select(0, 1, x > z), -1, x < z);
    }
    if (TYPE == 1u) {
        let x = bitcast<i32>(a[ia]);
        let z = bitcast<i32>(b[ib]);
        return select(select(0, 1, x > z), -1, x < z);
    }
    let xh = bitcast<i32>(a[2u * ia + 1u]);
    let zh = bitcast<i32>(b[2u * ib + 1u]);
    if (xh != zh) {
        return select(1, -1, xh < zh);
    }
    let xl = a[2u * ia];
    let zl = b[2u * ib];
    return select(select(0, 1, xl > zl), -1, xl < zl);
}

fn holds(o: i32) -> bool {
    switch OP {
        case 0u: { return o == 0; }
        case 1u: { return o != 0; }
        case 2u: { return o == -1; }
        case 3u: { return o == -1 || o == 0; }
        case 4u: { return o == 1; }
        default: { return o == 1 || o == 0; }
    }
}

fn item(idx: u32) {
    var word = 0u;
    for (var k = 0u; k < 4u; k++) {
        let e = idx * 4u + k;
        if (e < p[2]) {
            let o = strided_offsets(e, p[1], 3u);
            if (holds(order(o.x, o.y))) {
                word |= 1u << (8u * k);
            }
        }
    }
    y[idx] = word;
}

// Broadcasting binary op. p: [n, rank, shape[rank], a_strides[rank], b_strides[rank]].
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

// 0 add, 1 sub, 2 mul, 3 div, 4 maximum, 5 minimum, 6 pow. Integers take
// 0, 1, 2, 4 and 5 (the host refuses the others for them), wrapping as
// two's complement like the CPU backend.
override OP: u32 = 0u;
// Operand type: 0 f32, 1 i32, 2 i64 (two words, low first).
override TYPE: u32 = 0u;

fn power(x: f32, e: f32) -> f32 {
    if (e == 0.0 || x == 1.0) {
        return 1.0;
    }
    if (is_nan(x) || is_nan(e)) {
        return bitcast<f32>(0x7fc00000u);
    }
    if (x < 0.0) {
        if (trunc(e) != e) {
            return bitcast<f32>(0x7fc00000u);
        }
        let mag = exp2(e * log2(-x));
        let odd = (abs(e) < 16777216.0) && ((i32(abs(e)) & 1) == 1);
        return select(mag, -mag, odd);
    }
    return pow(x, e);
}

fn float_op(x: f32, z: f32) -> f32 {
    switch OP {
        case 0u: { return x + z; }
        case 1u: { return x - z; }
        case 2u: { return x * z; }
        case 3u: { return x / z; }
        case 4u: { return select(z, x, is_nan(x) || x > z); }
        case 5u: { return select(z, x, is_nan(x) || x < z); }
        default: { return power(x, z); }
    }
}

fn i32_op(x: i32, z: i32) -> i32 {
    switch OP {
        case 0u: { return x + z; }
        case 1u: { return x - z; }
        case 2u: { return x * z; }
        case 4u: { return max(x, z); }
        default: { return min(x, z); }
    }
}

// i64 values as (low, high) words.
fn add64(x: vec2<u32>, z: vec2<u32>) -> vec2<u32> {
    let lo = x.x + z.x;
    return vec2<u32>(lo, x.y + z.y + select(0u, 1u, lo < x.x));
}

// The full 64-bit product of two u32s, from their 16-bit halves.
fn wide_mul(x: u32, z: u32) -> vec2<u32> {
    let xl = x & 0xffffu;
    let xh = x >> 16u;
    let zl = z & 0xffffu;
    let zh = z >> 16u;
    let ll = xl * zl;
    let lh = xl * zh;
    let hl = xh * zl;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    return vec2<u32>((ll & 0xffffu) | (mid << 16u), xh * zh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u));
}

fn less64(x: vec2<u32>, z: vec2<u32>) -> bool {
    let xh = bitcast<i32>(x.y);
    let zh = bitcast<i32>(z.y);
    return xh < zh || (xh == zh && x.x < z.x);
}

fn i64_op(x: vec2<u32>, z: vec2<u32>) -> vec2<u32> {
    switch OP {
        case 0u: { return add64(x, z); }
        // x − z = x + ¬z + 1.
        case 1u: { return add64(add64(x, ~z), vec2<u32>(1u, 0u)); }
        // The low 64 bits of the product; the high words' product falls off.
        case 2u: {
            let low = wide_mul(x.x, z.x);
            return vec2<u32>(low.x, low.y + x.x * z.y + x.y * z.x);
        }
        case 4u: { return select(z, x, less64(z, x)); }
        default: { return select(z, x, less64(x, z)); }
    }
}

fn item(idx: u32) {
    let o = strided_offsets(idx, p[1], 2u);
    if (TYPE == 0u) {
        y[idx] = bitcast<u32>(float_op(bitcast<f32>(a[o.x]), bitcast<f32>(b[o.y])));
    } else if (TYPE == 1u) {
        y[idx] = bitcast<u32>(i32_op(bitcast<i32>(a[o.x]), bitcast<i32>(b[o.y])));
    } else {
        let r = i64_op(vec2<u32>(a[2u * o.x], a[2u * o.x + 1u]), vec2<u32>(b[2u * o.y], b[2u * o.y + 1u]));
        y[2u * idx] = r.x;
        y[2u * idx + 1u] = r.y;
    }
}

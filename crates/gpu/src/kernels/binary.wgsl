// Broadcasting binary op. p: [n, rank, shape[rank], a_strides[rank], b_strides[rank]].
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// 0 add, 1 sub, 2 mul, 3 div, 4 maximum, 5 minimum, 6 pow.
override OP: u32 = 0u;

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

fn item(idx: u32) {
    let o = strided_offsets(idx, p[1], 2u);
    let x = a[o.x];
    let z = b[o.y];
    var r: f32;
    switch OP {
        case 0u: { r = x + z; }
        case 1u: { r = x - z; }
        case 2u: { r = x * z; }
        case 3u: { r = x / z; }
        case 4u: { r = select(z, x, is_nan(x) || x > z); }
        case 5u: { r = select(z, x, is_nan(x) || x < z); }
        default: { r = power(x, z); }
    }
    y[idx] = r;
}

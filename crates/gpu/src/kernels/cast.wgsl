// Element conversions matching Rust's `as` (truncate toward zero, saturate,
// NaN to 0). p: [items, elements]: one item per element, except f32->f16,
// which writes one word (two halves) per item.
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

// 0 f32->i32, 1 i32->f32, 2 i32->i64, 3 i64->i32, 4 f32->i64, 5 i64->f32,
// 6 f16->f32, 7 f32->f16. The f16 conversions use the pack/unpack builtins,
// so they need no shader-f16 support from the adapter.
override OP: u32 = 0u;

fn item(idx: u32) {
    switch OP {
        case 0u: {
            let f = bitcast<f32>(x[idx]);
            var r = 0;
            if (is_nan(f)) {
                r = 0;
            } else if (f >= 2147483648.0) {
                r = 2147483647;
            } else if (f < -2147483648.0) {
                r = -2147483647 - 1;
            } else {
                r = i32(f);
            }
            y[idx] = bitcast<u32>(r);
        }
        case 1u: {
            y[idx] = bitcast<u32>(f32(bitcast<i32>(x[idx])));
        }
        case 2u: {
            let v = x[idx];
            y[2u * idx] = v;
            y[2u * idx + 1u] = select(0u, 0xffffffffu, bitcast<i32>(v) < 0);
        }
        case 3u: {
            let lo = x[2u * idx];
            let hi = x[2u * idx + 1u];
            var r = lo;
            if (!((hi == 0u && lo < 0x80000000u) || (hi == 0xffffffffu && lo >= 0x80000000u))) {
                r = select(0x7fffffffu, 0x80000000u, bitcast<i32>(hi) < 0);
            }
            y[idx] = r;
        }
        case 4u: {
            let f = bitcast<f32>(x[idx]);
            var lo = 0u;
            var hi = 0u;
            if (is_nan(f)) {
                lo = 0u;
            } else if (f >= 9223372036854775808.0) {
                lo = 0xffffffffu;
                hi = 0x7fffffffu;
            } else if (f < -9223372036854775808.0) {
                hi = 0x80000000u;
            } else {
                let t = trunc(f);
                if (abs(t) < 2147483648.0) {
                    let i = i32(t);
                    lo = bitcast<u32>(i);
                    hi = select(0u, 0xffffffffu, i < 0);
                } else {
                    let hf = floor(t / 4294967296.0);
                    lo = u32(t - hf * 4294967296.0);
                    hi = bitcast<u32>(i32(hf));
                }
            }
            y[2u * idx] = lo;
            y[2u * idx + 1u] = hi;
        }
        case 6u: {
            y[idx] = bitcast<u32>(unpack2x16float(x[idx >> 1u])[idx & 1u]);
        }
        case 7u: {
            // An odd element count leaves the last high half zero; the
            // index past the end stays inside the 16-byte-padded buffer.
            let lo = bitcast<f32>(x[2u * idx]);
            let hi = select(0.0, bitcast<f32>(x[2u * idx + 1u]), 2u * idx + 1u < p[1]);
            y[idx] = pack2x16float(vec2<f32>(lo, hi));
        }
        default: {
            let lo = x[2u * idx];
            let hi = x[2u * idx + 1u];
            var r: f32;
            if ((hi == 0u && lo < 0x80000000u) || (hi == 0xffffffffu && lo >= 0x80000000u)) {
                r = f32(bitcast<i32>(lo));
            } else {
                r = f32(bitcast<i32>(hi)) * 4294967296.0 + f32(lo);
            }
            y[idx] = bitcast<u32>(r);
        }
    }
}

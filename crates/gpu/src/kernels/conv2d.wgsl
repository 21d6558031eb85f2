// Direct 2-D convolution over NCHW, one thread per output element.
// p: [outputs, n, c, h, w, o, kh, kw, oh, ow, stride_h, stride_w, pad_h,
//     pad_w, dilation_h, dilation_w, groups, has_bias, lo, hi], the padding
// before each axis (the plan's output size counts the padding after it) and
// the clip bounds as f32 bits (infinite where absent).
// Weights are [o, c/groups, kh, kw]; bias (when present) is [o].
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

fn item(idx: u32) {
    let c = p[2];
    let h = p[3];
    let w = p[4];
    let o = p[5];
    let kh = p[6];
    let kw = p[7];
    let oh = p[8];
    let ow = p[9];
    let sh = p[10];
    let sw = p[11];
    let ph = p[12];
    let pw = p[13];
    let dh = p[14];
    let dw = p[15];
    let groups = p[16];
    let ox = idx % ow;
    var r = idx / ow;
    let oy = r % oh;
    r = r / oh;
    let oc = r % o;
    let img = r / o;
    let cg = c / groups;
    let og = o / groups;
    let g = oc / og;
    var acc = 0.0;
    if (p[17] != 0u) {
        acc = bias[oc];
    }
    for (var ci = 0u; ci < cg; ci++) {
        let xbase = (img * c + g * cg + ci) * h * w;
        let wbase = (oc * cg + ci) * kh * kw;
        for (var ky = 0u; ky < kh; ky++) {
            // Padded row; rows in the padding contribute nothing.
            let py = oy * sh + ky * dh;
            if (py < ph || py - ph >= h) {
                continue;
            }
            let xrow = xbase + (py - ph) * w;
            let wrow = wbase + ky * kw;
            for (var kx = 0u; kx < kw; kx++) {
                let px = ox * sw + kx * dw;
                if (px < pw || px - pw >= w) {
                    continue;
                }
                acc = fma(x[xrow + px - pw], wt[wrow + kx], acc);
            }
        }
    }
    // Comparisons leave NaN as it is, as the CPU's clip does.
    let lo = bitcast<f32>(p[18]);
    let hi = bitcast<f32>(p[19]);
    if (acc < lo) {
        acc = lo;
    }
    if (acc > hi) {
        acc = hi;
    }
    y[idx] = acc;
}

// 2-D max or average pooling over NCHW, one thread per output element.
// p: [outputs, h, w, oh, ow, kh, kw, stride_h, stride_w, pad_h, pad_w,
//     bits of -inf]. Padding never takes part: the window is clipped to the
// input and avg divides by the clipped window's size. A NaN in a window
// makes its max NaN, as the CPU backend does.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// 0 max, 1 avg.
override OP: u32 = 0u;

fn item(idx: u32) {
    let h = p[1];
    let w = p[2];
    let oh = p[3];
    let ow = p[4];
    let ox = idx % ow;
    let oy = (idx / ow) % oh;
    let plane = idx / (ow * oh);
    let y0 = max(oy * p[7], p[9]) - p[9];
    let y1 = min(oy * p[7] + p[5] - p[9], h);
    let x0 = max(ox * p[8], p[10]) - p[10];
    let x1 = min(ox * p[8] + p[6] - p[10], w);
    let base = plane * h * w;
    if (OP == 0u) {
        var m = bitcast<f32>(p[11]);
        for (var iy = y0; iy < y1; iy++) {
            for (var ix = x0; ix < x1; ix++) {
                let v = x[base + iy * w + ix];
                m = select(m, v, v > m || is_nan(v));
            }
        }
        y[idx] = m;
        return;
    }
    // Sum each column of the window, then the columns (the CPU's order).
    var s = 0.0;
    for (var ix = x0; ix < x1; ix++) {
        var col = 0.0;
        for (var iy = y0; iy < y1; iy++) {
            col += x[base + iy * w + ix];
        }
        s += col;
    }
    y[idx] = s / f32((y1 - y0) * (x1 - x0));
}

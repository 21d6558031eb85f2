// Softmax of one row per workgroup; a row is `len` elements `inner` apart.
// p: [rows, len, inner]. An all -inf row gives zeros.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

fn row(r: u32, t: u32) {
    let len = p[1];
    let inner = max(p[2], 1u);
    let valid = r < p[0];
    let base = (r / inner) * len * inner + r % inner;
    var m = LOWEST;
    if (valid) {
        for (var j = t; j < len; j += 256u) {
            m = max(m, x[base + j * inner]);
        }
    }
    let mx = row_max(t, m);
    var sum = 0.0;
    if (valid) {
        for (var j = t; j < len; j += 256u) {
            sum += exp(x[base + j * inner] - mx);
        }
    }
    let total = row_sum(t, sum);
    let inv = select(1.0 / total, 0.0, total == 0.0);
    if (valid) {
        for (var j = t; j < len; j += 256u) {
            let at = base + j * inner;
            y[at] = exp(x[at] - mx) * inv;
        }
    }
}

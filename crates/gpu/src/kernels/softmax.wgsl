// Softmax of one row per workgroup; a row is `len` elements `inner` apart.
// p: [rows, len, inner]. An all -inf row gives zeros.
@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = p[0];
    let len = p[1];
    let inner = max(p[2], 1u);
    let r = wg.y * nwg.x + wg.x;
    let valid = r < rows;
    let base = (r / inner) * len * inner + r % inner;
    let t = lid.x;
    var m = LOWEST;
    if (valid) {
        for (var j = t; j < len; j += 256u) {
            m = max(m, x[base + j * inner]);
        }
    }
    red[t] = m;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] = max(red[t], red[t + s]);
        }
        workgroupBarrier();
    }
    let mx = red[0];
    workgroupBarrier();
    var sum = 0.0;
    if (valid) {
        for (var j = t; j < len; j += 256u) {
            sum += exp(x[base + j * inner] - mx);
        }
    }
    red[t] = sum;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] = red[t] + red[t + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    let inv = select(1.0 / total, 0.0, total == 0.0);
    if (valid) {
        for (var j = t; j < len; j += 256u) {
            let at = base + j * inner;
            y[at] = exp(x[at] - mx) * inv;
        }
    }
}

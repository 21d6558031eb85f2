// Entry point of the kernels that run one workgroup of 256 threads per row,
// over a 2-D grid of workgroups; the kernel defines `row(r, t)` for row `r`
// and thread `t`. A workgroup past the last row still calls it, since every
// thread must reach the same barriers; the kernel skips its loads and stores.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    row(wg.y * nwg.x + wg.x, lid.x);
}

// Most negative finite f32; stands in for -inf as a reduction seed.
const LOWEST: f32 = -3.40282347e38;

var<workgroup> red: array<f32, 256>;

// The max (`take_max`) or the sum of every thread's `v`, for all threads.
fn row_reduce(t: u32, v: f32, take_max: bool) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s) {
            let o = red[t + s];
            red[t] = select(red[t] + o, max(red[t], o), take_max);
        }
        workgroupBarrier();
    }
    let total = red[0];
    // Before anyone writes `red` again.
    workgroupBarrier();
    return total;
}

fn row_max(t: u32, v: f32) -> f32 {
    return row_reduce(t, v, true);
}

fn row_sum(t: u32, v: f32) -> f32 {
    return row_reduce(t, v, false);
}

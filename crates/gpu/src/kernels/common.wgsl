// Shared by every kernel (prepended by the backend).
// Elementwise kernels run 256 threads per workgroup over a 2-D grid of
// workgroups, so more than 65535 workgroups fit in one dispatch.
fn flat_index(wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wg.y * nwg.x + wg.x) * 256u + lid.x;
}

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Most negative finite f32; stands in for -inf as a reduction seed.
const LOWEST: f32 = -3.40282347e38;

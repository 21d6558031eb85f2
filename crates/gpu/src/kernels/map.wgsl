// Entry point of the kernels that run one thread per item: 256 threads a
// workgroup over a 2-D grid of workgroups, so more than 65535 workgroups
// fit in one dispatch. p[0] is the item count; the kernel defines
// `item(idx)`, called once for every idx below it.
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = (wg.y * nwg.x + wg.x) * 256u + lid.x;
    if (idx < p[0]) {
        item(idx);
    }
}

// The offsets of row-major index `idx` of a `rank`-dimensional shape in two
// strided layouts: the shape at p[at..], the two layouts' strides at
// p[at + rank..] and p[at + 2 * rank..].
fn strided_offsets(idx: u32, rank: u32, at: u32) -> vec2<u32> {
    var rest = idx;
    var offsets = vec2<u32>(0u);
    for (var d = at + rank; d > at; d--) {
        let dim = p[d - 1u];
        let coord = rest % dim;
        rest = rest / dim;
        offsets += coord * vec2<u32>(p[d - 1u + rank], p[d - 1u + 2u * rank]);
    }
    return offsets;
}

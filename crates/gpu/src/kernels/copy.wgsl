// Strided copy of 32-bit words (transpose, slice, concat; 8-byte elements
// are two words along an extra innermost axis).
// p: [n, rank, in_offset, out_offset, shape[rank], in_strides[rank], out_strides[rank]].
@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat_index(wg, nwg, lid);
    if (idx >= p[0]) {
        return;
    }
    let rank = p[1];
    var rest = idx;
    var oi = p[2];
    var oo = p[3];
    for (var d = rank; d > 0u; d--) {
        let dim = p[3u + d];
        let coord = rest % dim;
        rest = rest / dim;
        oi += coord * p[3u + rank + d];
        oo += coord * p[3u + 2u * rank + d];
    }
    y[oo] = x[oi];
}

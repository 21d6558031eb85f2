// Strided copy of 32-bit words (transpose, slice, concat; 8-byte elements
// are two words along an extra innermost axis).
// p: [n, rank, in_offset, out_offset, shape[rank], in_strides[rank], out_strides[rank]].
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

fn item(idx: u32) {
    let o = strided_offsets(idx, p[1], 4u);
    y[p[3] + o.y] = x[p[2] + o.x];
}

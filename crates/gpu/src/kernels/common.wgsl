// Shared by every kernel (prepended by the backend ahead of the kernel's
// other snippets). Every kernel takes its parameter words at binding 0.
@group(0) @binding(0) var<storage, read> p: array<u32>;

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Batched C[b] = A[b] x B[b] (or B[b]^T), row-major, f32.
//
// 128x64 output tile (rows x cols) per workgroup of 16x16 threads; each
// thread owns an 8x4 register block (rows 4*ty.. and 64+4*ty.., cols 4*tx..)
// held in eight vec4 accumulators, named rather than an indexed array so
// software drivers (lavapipe's LLVM) keep them in registers. Per depth step a
// thread reads two A quads and one B quad from workgroup memory for 32 FMAs.
// The k loop steps TK = 16: every thread stages two quads of A and one quad
// of B into workgroup memory per step.
//
// The operands are bound as vec4 arrays (the backend pads every buffer to 16
// bytes). With VEC4 (k and n multiples of 4, so every quad is aligned and
// wholly in or out of bounds) quads are loaded and stored whole; otherwise
// element by element with per-element bounds checks.
//
// p: [m, n, k, batch_base]; offs: per batch (a element offset, b element offset).
@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> offs: array<u32>;
@group(0) @binding(2) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;

override TRANS_B: bool = false;
override VEC4: bool = false;

const TM: u32 = 128u;
const TN: u32 = 64u;
const TK: u32 = 16u;

// k-major: As[kk*32+q] holds rows 4q..4q+3 at depth kk ([TK][TM/4]), Bs[kk*16+q]
// cols 4q..4q+3 ([TK][TN/4]).
var<workgroup> As: array<vec4<f32>, 512>;
var<workgroup> Bs: array<vec4<f32>, 256>;

fn load_a1(i: u32) -> f32 {
    return a[i >> 2u][i & 3u];
}

fn load_b1(i: u32) -> f32 {
    return b[i >> 2u][i & 3u];
}

// Four consecutive elements of A starting at `i`, zero past `valid` of them.
fn quad_a(i: u32, valid: u32) -> vec4<f32> {
    if (VEC4) {
        if (valid >= 4u) {
            return a[i >> 2u];
        }
        return vec4<f32>(0.0);
    }
    var v = vec4<f32>(0.0);
    if (valid > 0u) { v.x = load_a1(i); }
    if (valid > 1u) { v.y = load_a1(i + 1u); }
    if (valid > 2u) { v.z = load_a1(i + 2u); }
    if (valid > 3u) { v.w = load_a1(i + 3u); }
    return v;
}

fn quad_b(i: u32, valid: u32) -> vec4<f32> {
    if (VEC4) {
        if (valid >= 4u) {
            return b[i >> 2u];
        }
        return vec4<f32>(0.0);
    }
    var v = vec4<f32>(0.0);
    if (valid > 0u) { v.x = load_b1(i); }
    if (valid > 1u) { v.y = load_b1(i + 1u); }
    if (valid > 2u) { v.z = load_b1(i + 2u); }
    if (valid > 3u) { v.w = load_b1(i + 3u); }
    return v;
}

// Stores the row quad `v` at element `i`, only its first `valid` elements.
fn store_c(i: u32, valid: u32, v: vec4<f32>) {
    if (VEC4) {
        if (valid >= 4u) {
            c[i >> 2u] = v;
        }
        return;
    }
    for (var j = 0u; j < min(valid, 4u); j++) {
        let e = i + j;
        c[e >> 2u][e & 3u] = v[j];
    }
}

// Elements left in a run of `len` from `at` (0 when past the end).
fn left(at: u32, len: u32) -> u32 {
    return select(0u, len - at, at < len);
}

// Scatters a quad along k (4 depths) for row/col `r` into a k-major tile.
fn put_a(kq: u32, r: u32, v: vec4<f32>) {
    let q = r >> 2u;
    let s = r & 3u;
    As[(kq + 0u) * 32u + q][s] = v.x;
    As[(kq + 1u) * 32u + q][s] = v.y;
    As[(kq + 2u) * 32u + q][s] = v.z;
    As[(kq + 3u) * 32u + q][s] = v.w;
}

fn put_b(kq: u32, r: u32, v: vec4<f32>) {
    let q = r >> 2u;
    let s = r & 3u;
    Bs[(kq + 0u) * 16u + q][s] = v.x;
    Bs[(kq + 1u) * 16u + q][s] = v.y;
    Bs[(kq + 2u) * 16u + q][s] = v.z;
    Bs[(kq + 3u) * 16u + q][s] = v.w;
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m = p[0];
    let n = p[1];
    let k = p[2];
    let bidx = wg.z + p[3];
    let a_off = offs[2u * bidx];
    let b_off = offs[2u * bidx + 1u];
    let c_off = bidx * m * n;
    let row0 = wg.y * TM;
    let col0 = wg.x * TN;
    let tid = lid.y * 16u + lid.x;
    // Staging roles: A by rows `sr` and 64+`sr` (B^T by column `sr`) and k
    // quad `sk`; B by depth `bk` and column quad `bc`.
    let sr = tid >> 2u;
    let sk = (tid & 3u) * 4u;
    let bk = tid >> 4u;
    let bc = (tid & 15u) * 4u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0);
    var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0);
    var acc7 = vec4<f32>(0.0);
    for (var t = 0u; t < k; t += TK) {
        let ak = t + sk;
        let ka = left(ak, k);
        let ar = row0 + sr;
        var va = vec4<f32>(0.0);
        if (ar < m) {
            va = quad_a(a_off + ar * k + ak, ka);
        }
        put_a(sk, sr, va);
        var va2 = vec4<f32>(0.0);
        if (ar + 64u < m) {
            va2 = quad_a(a_off + (ar + 64u) * k + ak, ka);
        }
        put_a(sk, sr + 64u, va2);
        if (TRANS_B) {
            let bn = col0 + sr;
            var vb = vec4<f32>(0.0);
            if (bn < n) {
                vb = quad_b(b_off + bn * k + ak, ka);
            }
            put_b(sk, sr, vb);
        } else {
            let gk = t + bk;
            let gc = col0 + bc;
            var vb = vec4<f32>(0.0);
            if (gk < k) {
                vb = quad_b(b_off + gk * n + gc, left(gc, n));
            }
            Bs[bk * 16u + (bc >> 2u)] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let av = As[kk * 32u + lid.y];
            let av2 = As[kk * 32u + 16u + lid.y];
            let bv = Bs[kk * 16u + lid.x];
            acc0 = fma(vec4<f32>(av.x), bv, acc0);
            acc1 = fma(vec4<f32>(av.y), bv, acc1);
            acc2 = fma(vec4<f32>(av.z), bv, acc2);
            acc3 = fma(vec4<f32>(av.w), bv, acc3);
            acc4 = fma(vec4<f32>(av2.x), bv, acc4);
            acc5 = fma(vec4<f32>(av2.y), bv, acc5);
            acc6 = fma(vec4<f32>(av2.z), bv, acc6);
            acc7 = fma(vec4<f32>(av2.w), bv, acc7);
        }
        workgroupBarrier();
    }
    let r = row0 + lid.y * 4u;
    let col = col0 + lid.x * 4u;
    let valid = left(col, n);
    let base = c_off + r * n + col;
    if (r < m) { store_c(base, valid, acc0); }
    if (r + 1u < m) { store_c(base + n, valid, acc1); }
    if (r + 2u < m) { store_c(base + 2u * n, valid, acc2); }
    if (r + 3u < m) { store_c(base + 3u * n, valid, acc3); }
    let r2 = r + 64u;
    let base2 = base + 64u * n;
    if (r2 < m) { store_c(base2, valid, acc4); }
    if (r2 + 1u < m) { store_c(base2 + n, valid, acc5); }
    if (r2 + 2u < m) { store_c(base2 + 2u * n, valid, acc6); }
    if (r2 + 3u < m) { store_c(base2 + 3u * n, valid, acc7); }
}

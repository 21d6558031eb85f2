// Batched C[b] = act(A[b] x B[b] (or B[b]^T) + bias), row-major. `elem` is the
// storage type (f32, or f16 where the adapter has shader-f16), declared by
// the backend ahead of this file; arithmetic is f32 throughout, so f16
// products round once, when stored.
//
// 128x64 output tile (rows x cols) per workgroup of 16x16 threads; each
// thread owns an 8x4 register block (rows 4*ty.. and 64+4*ty.., cols 4*tx..)
// held in eight vec4 accumulators, the fields of `Acc` rather than an
// indexed array so software drivers (lavapipe's LLVM) keep them in
// registers. The k loop
// steps TK = 16: every thread stages two quads of A and one of B into
// workgroup memory per step, each a whole vec4 store (no two threads write
// parts of one workgroup vec4). Per four depths a thread reads eight A quads
// and four B quads for 128 FMAs.
//
// The operands are bound as vec4 arrays (the backend pads every buffer to 16
// bytes). With VEC4 (k and n multiples of 4, so every quad is aligned and
// wholly in or out of bounds) quads are loaded and stored whole; otherwise
// element by element with per-element bounds checks.
//
// p: [m, n, k, batch_base]; offs: per batch (a element offset, b element offset).
@group(0) @binding(1) var<storage, read> offs: array<u32>;
@group(0) @binding(2) var<storage, read> a: array<vec4<elem>>;
@group(0) @binding(3) var<storage, read> b: array<vec4<elem>>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4<elem>>;
// [n], added to every row when HAS_BIAS (otherwise any buffer is bound).
@group(0) @binding(5) var<storage, read> bias: array<elem>;

override TRANS_B: bool = false;
override VEC4: bool = false;
override HAS_BIAS: bool = false;
// 0: no activation; otherwise 1 + a unary op code of activation.wgsl.
override ACT: u32 = 0u;
// Rows of output tiles a group of the grid order spans (see `tile_of`); 1:
// row after row.
override GROUP_ROWS: u32 = 1u;

const TM: u32 = 128u;
const TN: u32 = 64u;
const TK: u32 = 16u;

// As[r*4 + q]: tile row r (0..128), depths 4q..4q+3 of the k step.
var<workgroup> As: array<vec4<f32>, 512>;
// Without TRANS_B, Bs[kk*16 + q]: depth kk, columns 4q..4q+3.
// With TRANS_B, Bs[col*4 + q]: column col (0..64), depths 4q..4q+3.
var<workgroup> Bs: array<vec4<f32>, 256>;

// Element `i` of B (`from_b`) or A, as f32.
fn load1(from_b: bool, i: u32) -> f32 {
    if (from_b) {
        return f32(b[i >> 2u][i & 3u]);
    }
    return f32(a[i >> 2u][i & 3u]);
}

// Four consecutive elements of B (`from_b`) or A starting at `i`, zero past
// `valid` of them.
fn quad(from_b: bool, i: u32, valid: u32) -> vec4<f32> {
    if (VEC4) {
        if (valid < 4u) {
            return vec4<f32>(0.0);
        }
        if (from_b) {
            return vec4<f32>(b[i >> 2u]);
        }
        return vec4<f32>(a[i >> 2u]);
    }
    var v = vec4<f32>(0.0);
    if (valid > 0u) { v.x = load1(from_b, i); }
    if (valid > 1u) { v.y = load1(from_b, i + 1u); }
    if (valid > 2u) { v.z = load1(from_b, i + 2u); }
    if (valid > 3u) { v.w = load1(from_b, i + 3u); }
    return v;
}

// The epilogue: bias `bq` added, then the activation.
fn finish(v: vec4<f32>, bq: vec4<f32>) -> vec4<f32> {
    var r = v;
    if (HAS_BIAS) {
        r += bq;
    }
    if (ACT != 0u) {
        r = vec4<f32>(unary_op(ACT - 1u, r.x), unary_op(ACT - 1u, r.y), unary_op(ACT - 1u, r.z), unary_op(ACT - 1u, r.w));
    }
    return r;
}

// Stores the row quad `v` at element `i`, only its first `valid` elements.
fn store_c(i: u32, valid: u32, v: vec4<f32>) {
    if (VEC4) {
        if (valid >= 4u) {
            c[i >> 2u] = vec4<elem>(v);
        }
        return;
    }
    for (var j = 0u; j < min(valid, 4u); j++) {
        let e = i + j;
        c[e >> 2u][e & 3u] = elem(v[j]);
    }
}

// Elements left in a run of `len` from `at` (0 when past the end).
fn left(at: u32, len: u32) -> u32 {
    return select(0u, len - at, at < len);
}

// acc + a.x*b0 + a.y*b1 + a.z*b2 + a.w*b3, one depth at a time.
fn step4(acc: vec4<f32>, av: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
    var r = fma(vec4<f32>(av.x), b0, acc);
    r = fma(vec4<f32>(av.y), b1, r);
    r = fma(vec4<f32>(av.z), b2, r);
    return fma(vec4<f32>(av.w), b3, r);
}

// A thread's 8x4 block of C: rows 4ty..4ty+3 (r0..r3) and 64+4ty.. (r4..r7).
struct Acc {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
    r4: vec4<f32>,
    r5: vec4<f32>,
    r6: vec4<f32>,
    r7: vec4<f32>,
}

// `acc` plus the staged tiles' depths 4q..4q+3 (`ra`: this thread's first A
// quad, `cb`: its first B^T quad, `lx`: its B column quad).
fn four_depths(acc: Acc, q: u32, ra: u32, cb: u32, lx: u32) -> Acc {
    var b0: vec4<f32>;
    var b1: vec4<f32>;
    var b2: vec4<f32>;
    var b3: vec4<f32>;
    if (TRANS_B) {
        // Columns 4tx..4tx+3 at four depths; transposed to depth rows.
        let c0 = Bs[cb + q];
        let c1 = Bs[cb + 4u + q];
        let c2 = Bs[cb + 8u + q];
        let c3 = Bs[cb + 12u + q];
        b0 = vec4<f32>(c0.x, c1.x, c2.x, c3.x);
        b1 = vec4<f32>(c0.y, c1.y, c2.y, c3.y);
        b2 = vec4<f32>(c0.z, c1.z, c2.z, c3.z);
        b3 = vec4<f32>(c0.w, c1.w, c2.w, c3.w);
    } else {
        b0 = Bs[(q * 4u) * 16u + lx];
        b1 = Bs[(q * 4u + 1u) * 16u + lx];
        b2 = Bs[(q * 4u + 2u) * 16u + lx];
        b3 = Bs[(q * 4u + 3u) * 16u + lx];
    }
    return Acc(
        step4(acc.r0, As[ra + q], b0, b1, b2, b3),
        step4(acc.r1, As[ra + 4u + q], b0, b1, b2, b3),
        step4(acc.r2, As[ra + 8u + q], b0, b1, b2, b3),
        step4(acc.r3, As[ra + 12u + q], b0, b1, b2, b3),
        step4(acc.r4, As[256u + ra + q], b0, b1, b2, b3),
        step4(acc.r5, As[256u + ra + 4u + q], b0, b1, b2, b3),
        step4(acc.r6, As[256u + ra + 8u + q], b0, b1, b2, b3),
        step4(acc.r7, As[256u + ra + 12u + q], b0, b1, b2, b3),
    );
}

// The output tile (column, row) workgroup `wg` of a `groups` grid computes.
// Workgroups start in the order of their index, x fastest. Row after row,
// the workgroups running at once share a few A row panels but sweep all of
// B; in groups of GROUP_ROWS tile rows, consecutive workgroups walk down a
// group's rows before its next column, so those running at once also share
// B's column panels, which matters once the operands outgrow the cache.
fn tile_of(wg: vec2<u32>, groups: vec2<u32>) -> vec2<u32> {
    if (GROUP_ROWS <= 1u) {
        return wg;
    }
    let id = wg.y * groups.x + wg.x;
    let per_group = GROUP_ROWS * groups.x;
    let first = (id / per_group) * GROUP_ROWS;
    // The last group may have fewer rows.
    let rows = min(groups.y - first, GROUP_ROWS);
    let at = id % per_group;
    return vec2<u32>(at / rows, first + at % rows);
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let m = p[0];
    let n = p[1];
    let k = p[2];
    let bidx = wg.z + p[3];
    let a_off = offs[2u * bidx];
    let b_off = offs[2u * bidx + 1u];
    let c_off = bidx * m * n;
    let tile = tile_of(wg.xy, groups.xy);
    let row0 = tile.y * TM;
    let col0 = tile.x * TN;
    let tid = lid.y * 16u + lid.x;
    // Staging roles: A rows `sr` and 64+`sr` (B^T column `sr`) at depth
    // quad `sq`; B depth `bk` and column quad `bc`.
    let sr = tid >> 2u;
    let sq = tid & 3u;
    let bk = tid >> 4u;
    let bc = (tid & 15u) * 4u;
    // This thread's first A tile row (quad index into As) and B column.
    let ra = lid.y * 16u;
    let cb = lid.x * 16u;
    let z = vec4<f32>(0.0);
    var acc = Acc(z, z, z, z, z, z, z, z);
    for (var t = 0u; t < k; t += TK) {
        let ak = t + sq * 4u;
        let ka = left(ak, k);
        let ar = row0 + sr;
        var va = vec4<f32>(0.0);
        if (ar < m) {
            va = quad(false, a_off + ar * k + ak, ka);
        }
        As[sr * 4u + sq] = va;
        var va2 = vec4<f32>(0.0);
        if (ar + 64u < m) {
            va2 = quad(false, a_off + (ar + 64u) * k + ak, ka);
        }
        As[(sr + 64u) * 4u + sq] = va2;
        if (TRANS_B) {
            let bn = col0 + sr;
            var vb = vec4<f32>(0.0);
            if (bn < n) {
                vb = quad(true, b_off + bn * k + ak, ka);
            }
            Bs[sr * 4u + sq] = vb;
        } else {
            let gk = t + bk;
            let gc = col0 + bc;
            var vb = vec4<f32>(0.0);
            if (gk < k) {
                vb = quad(true, b_off + gk * n + gc, left(gc, n));
            }
            Bs[bk * 16u + (bc >> 2u)] = vb;
        }
        workgroupBarrier();
        // Four calls with a constant q rather than a loop over q, which
        // the driver did not unroll: on an H200, 2048³ ran 1.05-1.08x as
        // fast unrolled, in five alternations (bench/RESULTS.md, session 26).
        acc = four_depths(acc, 0u, ra, cb, lid.x);
        acc = four_depths(acc, 1u, ra, cb, lid.x);
        acc = four_depths(acc, 2u, ra, cb, lid.x);
        acc = four_depths(acc, 3u, ra, cb, lid.x);
        workgroupBarrier();
    }
    let r = row0 + lid.y * 4u;
    let col = col0 + lid.x * 4u;
    let valid = left(col, n);
    var bq = vec4<f32>(0.0);
    if (HAS_BIAS) {
        for (var j = 0u; j < min(valid, 4u); j++) {
            bq[j] = f32(bias[col + j]);
        }
    }
    let base = c_off + r * n + col;
    if (r < m) { store_c(base, valid, finish(acc.r0, bq)); }
    if (r + 1u < m) { store_c(base + n, valid, finish(acc.r1, bq)); }
    if (r + 2u < m) { store_c(base + 2u * n, valid, finish(acc.r2, bq)); }
    if (r + 3u < m) { store_c(base + 3u * n, valid, finish(acc.r3, bq)); }
    let r2 = r + 64u;
    let base2 = base + 64u * n;
    if (r2 < m) { store_c(base2, valid, finish(acc.r4, bq)); }
    if (r2 + 1u < m) { store_c(base2 + n, valid, finish(acc.r5, bq)); }
    if (r2 + 2u < m) { store_c(base2 + 2u * n, valid, finish(acc.r6, bq)); }
    if (r2 + 3u < m) { store_c(base2 + 3u * n, valid, finish(acc.r7, bq)); }
}

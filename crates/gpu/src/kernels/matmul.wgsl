// Batched C[b] = A[b] x B[b] (or B[b]^T): 64x64 output tiles, 16x16 threads,
// each thread owning a 4x4 register block (rows ty+16i, cols tx+16j).
// p: [m, n, k, batch_base]; offs: per batch (a element offset, b element offset).
@group(0) @binding(0) var<storage, read> p: array<u32>;
@group(0) @binding(1) var<storage, read> offs: array<u32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

override TRANS_B: bool = false;

const TS: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> As: array<f32, 1024>; // [TK][TS], k-major
var<workgroup> Bs: array<f32, 1024>; // [TK][TS], k-major

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m = p[0];
    let n = p[1];
    let k = p[2];
    let bidx = wg.z + p[3];
    let a_off = offs[2u * bidx];
    let b_off = offs[2u * bidx + 1u];
    let c_off = bidx * m * n;
    let row0 = wg.y * TS;
    let col0 = wg.x * TS;
    let tid = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var t = 0u; t < k; t += TK) {
        for (var i = 0u; i < 4u; i++) {
            let e = tid + 256u * i;
            let r = e / TK;
            let kk = e % TK;
            let gr = row0 + r;
            let gk = t + kk;
            var v = 0.0;
            if (gr < m && gk < k) {
                v = a[a_off + gr * k + gk];
            }
            As[kk * TS + r] = v;
        }
        for (var i = 0u; i < 4u; i++) {
            let e = tid + 256u * i;
            var kk: u32;
            var cc: u32;
            if (TRANS_B) {
                cc = e / TK;
                kk = e % TK;
            } else {
                kk = e / TS;
                cc = e % TS;
            }
            let gk = t + kk;
            let gc = col0 + cc;
            var v = 0.0;
            if (gk < k && gc < n) {
                if (TRANS_B) {
                    v = b[b_off + gc * k + gk];
                } else {
                    v = b[b_off + gk * n + gc];
                }
            }
            Bs[kk * TS + cc] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var ar: array<f32, 4>;
            var br: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                ar[i] = As[kk * TS + lid.y + 16u * i];
                br[i] = Bs[kk * TS + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(ar[i], br[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + 16u * j;
            if (r < m && col < n) {
                c[c_off + r * n + col] = acc[i * 4u + j];
            }
        }
    }
}

//! Branch-free f32 functions for the kernels' inner loops: each is always
//! inlined, so the loops that call them vectorize instead of making a
//! library call per element.

/// e^x to about 2 ulp, written without branches or library calls so that
/// LLVM vectorizes the loops that call it (softmax, attention, sigmoid).
///
/// Cephes' `expf`: x = n·ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial
/// for e^r ([`exp_reduced`]), and 2^n built directly in the exponent bits.
/// Results below the smallest normal float flush to 0.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    // ln(f32::MAX) and ln(f32::MIN_POSITIVE).
    const HI: f32 = 88.722_83;
    const LO: f32 = -87.336_54;
    let (y, ni) = exp_reduced::<false>(x.clamp(LO, HI));
    // n spans -126..=128; two half-size powers keep each one a normal float.
    let half = ni >> 1;
    let scaled = y * power_of_two(half) * power_of_two(ni - half);
    if x > HI {
        f32::INFINITY
    } else if x < LO {
        // Also maps -inf to 0.
        0.0
    } else if x.is_nan() {
        x
    } else {
        scaled
    }
}

/// (e^r, n) with x = n·ln2 + r, for a finite x: e^x is e^r · 2^n.
///
/// The polynomial in pairs (Estrin's scheme): a loop over it waits on its
/// chain of dependent steps, which this makes about half as long as
/// Horner's form. `FUSED` computes each step as a fused multiply-add, one
/// instruction where the loop is compiled for FMA but a library call per
/// element where it is not (x86 without AVX2, whose level must still give
/// the same bits): [`exp`] is on every transformer's softmax and stays
/// unfused; GELU's erfc fuses anyway.
#[inline(always)]
fn exp_reduced<const FUSED: bool>(x: f32) -> (f32, i32) {
    // Adding 1.5·2^23 rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let madd = |a: f32, b: f32, c: f32| if FUSED { a.mul_add(b, c) } else { a * b + c };
    let k = madd(x, std::f32::consts::LOG2_E, MAGIC);
    let n = k - MAGIC;
    let ni = k.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    // ln 2 in two parts, the first exact in few bits, so n·ln2 adds no
    // rounding of its own.
    let r = madd(n, 2.121_944_4e-4, madd(n, -0.693_359_4, x));
    let r2 = r * r;
    let p = madd(
        madd(1.987_569_1e-4, r, 1.398_199_9e-3),
        r2 * r2,
        madd(
            madd(8.333_452e-3, r, 4.166_579_6e-2),
            r2,
            madd(0.166_666_65, r, 0.5),
        ),
    );
    (madd(p, r2, r) + 1.0, ni)
}

/// 2^e for e in -126..=127, as a normal float.
#[inline(always)]
fn power_of_two(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

/// erfc(u/√2) for u ≥ 0, to about 2e-7 relative, branch-free so that loops
/// calling it vectorize (libm's `erfcf` is a library call per element).
///
/// Numerical Recipes' `erfcc`: erfc(z) = t·e^(-z² + c(t)) with t = 1/(1 + z/2)
/// and c a degree-9 Chebyshev fit, accurate to 1.2e-7 relative for all
/// z ≥ 0. At z = 4, z² is 16, so rounding -z² + c to f32 alone would cost
/// 1e-6 relative; instead z² = u²/2 is split exactly into hi + lo (a fused
/// multiply-add gives the square's rounding error), the sum's rounding
/// error is recovered (TwoSum), and both small parts go in as e^ε ≈ 1 + ε.
#[inline(always)]
fn erfc_scaled(u: f32) -> f32 {
    // erfc(20/√2) is far below f32's range; the clamp keeps u² finite.
    let u = u.min(20.0);
    let z = u * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / 0.5f32.mul_add(z, 1.0);
    // Fused multiply-adds: one rounding a step, and one instruction where
    // the loop is compiled for FMA (`with_simd`); elsewhere a library call
    // that rounds the same. Estrin's scheme, pairs then quads, so that the
    // chain of dependent steps is four long instead of Horner's nine: a
    // vectorized loop over GELU waits on that chain, not on its throughput.
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9] = [
        -1.265_512_2f32,
        1.000_023_7,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_204,
        1.488_515_9,
        -0.822_152_23,
        0.170_872_77,
    ];
    let t2 = t * t;
    let t4 = t2 * t2;
    let low = a3.mul_add(t, a2).mul_add(t2, a1.mul_add(t, a0));
    let high = a7.mul_add(t, a6).mul_add(t2, a5.mul_add(t, a4));
    let top = a9.mul_add(t, a8);
    let c = top.mul_add(t4 * t4, high.mul_add(t4, low));
    // u² = square + low exactly.
    let square = u * u;
    let under = u.mul_add(u, -square);
    // Halving is exact, so hi + lo is u²/2 exactly.
    let (hi, lo) = (0.5 * square, 0.5 * under);
    let a = c - hi;
    let back = a - c;
    let err = (c - (a - back)) + (-hi - back);
    t * exp_tail(a) * (1.0 + (err - lo))
}

/// e^x for x ≤ 2 and not NaN, as [`exp`] computes it but fused and with one
/// power of two (2^n for n ≥ -126 is a normal float): GELU's exponential,
/// whose argument c(t) - u²/2 is at most about 0 (c(1) = 0 at u = 0, and
/// c falls to -1.27 as u grows), so only its underflow to 0 is checked.
#[inline(always)]
fn exp_tail(x: f32) -> f32 {
    const LO: f32 = -87.336_54;
    let (y, ni) = exp_reduced::<true>(x.max(LO));
    if x < LO { 0.0 } else { y * power_of_two(ni) }
}

/// GELU, x·Φ(x), to about 5e-7 relative everywhere.
///
/// One formula for the whole line: Φ(-|x|) = erfc(|x|/√2)/2 is accurate
/// relative to its own size, which the left tail needs (1 + erf(x/√2)
/// cancels away below -2), and Φ(|x|) = 1 - Φ(-|x|) loses nothing because
/// Φ(-|x|) ≤ 1/2. Evaluating erf for the body as well would cost a second
/// rational function and a second division for every element, since a
/// vectorized loop computes both sides of a select.
#[inline(always)]
pub(super) fn gelu(x: f32) -> f32 {
    let lower = 0.5 * erfc_scaled(x.abs());
    x * if x < 0.0 { lower } else { 1.0 - lower }
}

/// ln x to about 1 ulp, branch-free so that loops calling it vectorize:
/// libm's `logf` is a library call per element, and softplus and Mish
/// (x·tanh(softplus x), YOLO-style CNNs' activation) take one per element
/// of every feature map.
///
/// Cephes' `logf`: x = m·2^e with m in [√½, √2), ln x = e·ln 2 + ln m, ln m
/// by a degree-9 polynomial in m − 1 (exact by Sterbenz's lemma, so results
/// near 1 stay accurate relative to their size), ln 2 split in two so that
/// e·ln 2 adds no rounding of its own. Subnormal inputs are scaled by 2^25
/// first. 0 gives -inf, +inf itself, a negative input or NaN gives NaN.
#[inline(always)]
pub(super) fn ln(x: f32) -> f32 {
    // 2^25: takes any subnormal to a normal float.
    const SCALE: f32 = 33_554_432.0;
    let subnormal = x < f32::MIN_POSITIVE;
    let scaled = if subnormal { x * SCALE } else { x };
    let bits = scaled.to_bits();
    // m in [0.5, 1) from the mantissa, e the matching exponent.
    let mut e = ((bits >> 23) & 0xff) as i32 - 126 - if subnormal { 25 } else { 0 };
    let half = f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000);
    let below = half < std::f32::consts::FRAC_1_SQRT_2;
    if below {
        e -= 1;
    }
    let m = if below { half + half - 1.0 } else { half - 1.0 };
    let z = m * m;
    let mut p = 7.037_683_6e-2f32;
    for coefficient in [
        -0.115_146_1,
        0.116_769_99,
        -0.124_201_41,
        0.142_493_23,
        -0.166_680_57,
        0.200_007_15,
        -0.249_999_94,
        0.333_333_3,
    ] {
        p = p * m + coefficient;
    }
    let e = e as f32;
    let y = p * m * z + e * -2.121_944_4e-4 - 0.5 * z;
    let r = (m + y) + e * 0.693_359_4;
    if x == 0.0 {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        x
    } else if x < 0.0 || x.is_nan() {
        f32::NAN
    } else {
        r
    }
}

/// tanh to about 2 ulp, branch-free so that loops calling it vectorize:
/// libm's `tanhf` is a library call per element, and was a sixth of an
/// imported LSTM's samples (bench/RESULTS.md, session 40).
///
/// Cephes' `tanhf`: below |x| = 0.625 an odd polynomial, x + x³·P(x²),
/// which keeps small arguments accurate relative to their size; above it
/// 1 - 2/(e^2|x| + 1), which loses at most a bit to cancellation there
/// (the result is at least 0.55) and reaches exactly 1 once e^2|x| is
/// infinite. The sign goes back on last, so -0 and NaN pass through.
#[inline(always)]
pub(super) fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = a * a;
    let mut p = -5.704_988_7e-3f32;
    for coefficient in [2.063_909e-2, -5.373_971_6e-2, 0.133_314_42, -0.333_332_8] {
        p = p * z + coefficient;
    }
    let small = p * z * a + a;
    let large = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    (if a < 0.625 { small } else { large }).copysign(x)
}

/// 1/(1 + e^-x).
#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

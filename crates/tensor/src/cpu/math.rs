//! Branch-free f32 functions for the kernels' inner loops: each is always
//! inlined, so the loops that call them vectorize instead of making a
//! library call per element.

/// e^x to about 2 ulp, written without branches or library calls so that
/// LLVM vectorizes the loops that call it (softmax, attention, sigmoid).
///
/// Cephes' `expf`: x = n·ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial
/// for e^r, and 2^n built directly in the exponent bits. Results below the
/// smallest normal float flush to 0.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    // ln(f32::MAX) and ln(f32::MIN_POSITIVE).
    const HI: f32 = 88.722_83;
    const LO: f32 = -87.336_54;
    // Adding 1.5·2^23 rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(LO, HI);
    let k = xc * std::f32::consts::LOG2_E + MAGIC;
    let n = k - MAGIC;
    let ni = k.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // n spans -126..=128; two half-size powers keep each one a normal float.
    let half = ni >> 1;
    let pow = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    let scaled = y * pow(half) * pow(ni - half);
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

/// erf(x) to about 3e-7 absolute, as x times a rational function of x² on
/// [-4, 4] (erf is ±1 in f32 beyond), with no branches so that loops
/// calling it vectorize; libm's `erff` is a library call per element. The
/// coefficients are the ones XLA, Eigen and TVM use for f32 erf.
#[inline(always)]
fn erf(x: f32) -> f32 {
    // Beyond 3.92, erf(x) rounds to ±1 in f32; the approximation does not
    // quite reach it, which GELU would scale up by |x|.
    let saturated = 1.0f32.copysign(x);
    let big = x.abs() > 3.92;
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329_2e-3;
    q = q * x2 + -1.426_473_9e-2;
    if big { saturated } else { x * p / q }
}

/// erfc(u/√2) for u ≥ 2, to about 2e-7 relative, branch-free so that loops
/// calling it vectorize (libm's `erfcf` is a library call per element).
///
/// Numerical Recipes' `erfcc`: erfc(z) = t·e^(-z² + c(t)) with t = 1/(1 + z/2)
/// and c a degree-9 Chebyshev fit, accurate to 1.2e-7 relative for all
/// z ≥ 0. At z = 4, z² is 16, so rounding -z² + c to f32 alone would cost
/// 1e-6 relative; instead z² = u²/2 is split exactly into hi + lo (Dekker),
/// the sum's rounding error is recovered (Fast2Sum, |hi| ≥ |c| here), and
/// both small parts go in as e^ε ≈ 1 + ε.
#[inline(always)]
fn erfc_scaled_tail(u: f32) -> f32 {
    // erfc(20/√2) is far below f32's range; the clamp keeps u² finite.
    let u = u.min(20.0);
    let z = u * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut c = 0.170_872_77f32;
    c = c * t + -0.822_152_23;
    c = c * t + 1.488_515_9;
    c = c * t + -1.135_204;
    c = c * t + 0.278_868_07;
    c = c * t + -0.186_288_06;
    c = c * t + 0.096_784_18;
    c = c * t + 0.374_091_96;
    c = c * t + 1.000_023_7;
    c = c * t + -1.265_512_2;
    // Dekker's exact product: u = uh + ul with 12-bit halves whose
    // products are exact, so u² = square + low exactly. (`mul_add` would
    // be shorter but is a library call on CPUs or paths without FMA, and
    // blocks vectorization.)
    let split = u * 4097.0;
    let uh = split - (split - u);
    let ul = u - uh;
    let square = u * u;
    let low = ((uh * uh - square) + 2.0 * uh * ul) + ul * ul;
    // Halving is exact, so hi + lo is u²/2 exactly.
    let (hi, lo) = (0.5 * square, 0.5 * low);
    let a = c - hi;
    let err = (-hi - a) + c;
    t * exp(a) * (1.0 + (err - lo))
}

/// GELU, x·Φ(x) = x/2·(1 + erf(x/√2)), to about 1e-6 relative everywhere.
///
/// Below -2, 1 + erf cancels away the approximation's accuracy, so the
/// tail takes x/2·erfc(-x/√2) instead. Both are computed and one selected,
/// which keeps the loop branch-free and vectorized: a second scalar pass
/// through libm for the tail cost about as much as the whole vector loop.
#[inline(always)]
pub(super) fn gelu(x: f32) -> f32 {
    let body = gelu_body(x);
    let tail = 0.5 * x * erfc_scaled_tail(-x);
    if x < -2.0 { tail } else { body }
}

/// GELU through erf, accurate from -2 up.
#[inline(always)]
pub(super) fn gelu_body(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// 1/(1 + e^-x).
#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

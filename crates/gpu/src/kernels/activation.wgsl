// The contract's unary ops on f32, shared by `unary` and the fused matmul
// epilogue. Codes: 0 neg, 1 abs, 2 exp, 3 log, 4 sqrt, 5 rsqrt, 6 relu,
// 7 gelu (erf), 8 gelu-tanh, 9 tanh, 10 sigmoid, 11 silu, 12 erf.

// erf to ~3e-7 absolute: x times a rational function of x^2 on [-4, 4]
// (the XLA / Eigen f32 coefficients); +-1 beyond 3.92.
fn erf_approx(x0: f32) -> f32 {
    if (abs(x0) > 3.92) {
        return sign(x0);
    }
    let x = clamp(x0, -4.0, 4.0);
    let x2 = x * x;
    var num = -2.72614225801306e-10;
    num = num * x2 + 2.77068142495902e-08;
    num = num * x2 + -2.10102402082508e-06;
    num = num * x2 + -5.69250639462346e-05;
    num = num * x2 + -7.34990630326855e-04;
    num = num * x2 + -2.95459980854025e-03;
    num = num * x2 + -1.60960333262415e-02;
    var q = -1.45660718464996e-05;
    q = q * x2 + -2.13374055278905e-04;
    q = q * x2 + -1.68282697438203e-03;
    q = q * x2 + -7.37332916720468e-03;
    q = q * x2 + -1.42647390514189e-02;
    return x * num / q;
}

// erfc(z) for z >= 0 with relative error < 1.2e-7 (Numerical Recipes'
// Chebyshev fit); keeps GELU's far negative tail accurate where 1 + erf
// cancels.
fn erfc_pos(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(-z * z + poly);
}

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

fn tanh_stable(v: f32) -> f32 {
    if (abs(v) < 0.0004) {
        return v;
    }
    let e = exp(-2.0 * abs(v));
    return sign(v) * (1.0 - e) / (1.0 + e);
}

fn unary_op(code: u32, v: f32) -> f32 {
    switch code {
        case 0u: { return -v; }
        case 1u: { return abs(v); }
        case 2u: { return exp(v); }
        case 3u: { return log(v); }
        case 4u: { return sqrt(v); }
        case 5u: { return 1.0 / sqrt(v); }
        case 6u: { return select(v, 0.0, v < 0.0); }
        case 7u: {
            if (v < -2.0) {
                return 0.5 * v * erfc_pos(-v * 0.70710678118654752);
            }
            return 0.5 * v * (1.0 + erf_approx(v * 0.70710678118654752));
        }
        case 8u: { return v * sigmoid(2.0 * 0.7978845608 * (v + 0.044715 * v * v * v)); }
        case 9u: { return tanh_stable(v); }
        case 10u: { return sigmoid(v); }
        case 11u: { return v * sigmoid(v); }
        default: { return erf_approx(v); }
    }
}

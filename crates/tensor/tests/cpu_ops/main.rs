//! Every CPU backend operation, called through the [`Ops`] front door,
//! against a plain, obviously correct reference written here (loops over
//! indices, computed in f64 where rounding matters), on deterministic
//! pseudo-random data, plus every error case. One module per op family.
//!
//! Tolerances, stated per test:
//! - matmul / conv2d / attention (f32): |got − want| ≤ 1e-4 · Σ|terms| + 1e-6,
//!   i.e. 1e-4 relative to the magnitude of the dot products involved;
//! - f16 paths: the same with 4e-3 (one f16 rounding of inputs and output);
//! - transcendental unary ops: 2e-6 relative + 1e-6 absolute;
//! - softmax / layer norm / reductions: 1e-5 relative + 1e-6 absolute;
//! - layout ops, integer ops, casts, f32 add/sub/mul/div/max/min/pow/affine:
//!   exact;
//! - linear, whose reference is matmul → add → unary (each checked above):
//!   exact in f32; in f16, exactly the f32 result rounded once, and within
//!   1e-2 relative + 1e-2 of the f16 composition, which rounds every step.
//!
//! [`Ops`]: edgeserve_tensor::Ops

#[macro_use]
mod common;

mod attention;
mod conv;
mod elementwise;
mod layout;
mod matmul;
mod plumbing;
mod properties;
mod recurrent;
mod reduce;
mod select;
mod varlen;

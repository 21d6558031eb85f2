//! The fused `linear`: a matmul whose bias and activation are applied to
//! each block of the product right after gemm writes it, in place, instead
//! of by separate passes into fresh tensors.

use super::elementwise::{UnaryVisitor, with_unary};
use super::{floats, for_rows, matmul};
use crate::shape::MatmulShape;
use crate::{Result, Tensor, UnaryOp};

pub(super) fn linear(
    a: &Tensor,
    b: &Tensor,
    transpose_b: bool,
    bias: Option<&Tensor>,
    activation: Option<UnaryOp>,
    s: &MatmulShape,
) -> Result<Tensor> {
    let bias = bias.map(|t| floats("linear", t)).transpose()?;
    let epilogue = Epilogue {
        a,
        b,
        transpose_b,
        bias: bias.as_deref(),
        s,
    };
    match (epilogue.bias, activation) {
        (_, Some(op)) => with_unary(op, epilogue),
        (Some(_), None) => epilogue.visit(|x| x, 0),
        (None, None) => matmul::matmul_with(a, b, transpose_b, s, "linear", |_| {}),
    }
}

/// The product to compute and the bias to add to it; visiting it with the
/// activation's function computes the whole op.
struct Epilogue<'a> {
    a: &'a Tensor,
    b: &'a Tensor,
    transpose_b: bool,
    /// `[n]`, widened to f32.
    bias: Option<&'a [f32]>,
    s: &'a MatmulShape,
}

impl UnaryVisitor for Epilogue<'_> {
    type Output = Result<Tensor>;

    fn visit<F: Fn(f32) -> f32 + Copy + Send + Sync>(self, f: F, cost: usize) -> Result<Tensor> {
        let Epilogue {
            a,
            b,
            transpose_b,
            bias,
            s,
        } = self;
        let n = s.n;
        // In f32 and in this order, as `binary` add then `unary` compute it,
        // so the result is the same to the bit for f32.
        let finish = |rows: &mut [f32]| {
            for_rows(
                rows,
                n,
                n * (cost + 1),
                #[inline(always)]
                |_, chunk| {
                    for row in chunk.chunks_exact_mut(n) {
                        match bias {
                            Some(bias) => {
                                for (o, &v) in row.iter_mut().zip(bias) {
                                    *o = f(*o + v);
                                }
                            }
                            None => {
                                for o in row.iter_mut() {
                                    *o = f(*o);
                                }
                            }
                        }
                    }
                },
            );
        };
        matmul::matmul_with(a, b, transpose_b, s, "linear", finish)
    }
}

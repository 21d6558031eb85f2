//! The one product kernel: `matmul`, and the fused `linear` whose bias and
//! activation are applied to each block of the product right after gemm
//! writes it, in place, instead of by separate passes into fresh tensors.

use super::buffers::floats;
use super::elementwise::{UnaryVisitor, with_unary};
use super::matmul;
use super::parallel::for_rows;
use crate::shape::MatmulPlan;
use crate::{Result, Tensor, WeightedInputs};

/// `activation(a · b + bias)` as `s` resolved it.
pub(super) fn linear(inputs: WeightedInputs<'_>, s: &MatmulPlan) -> Result<Tensor> {
    let WeightedInputs {
        x: a,
        weight: b,
        bias,
    } = inputs;
    let bias = bias.map(|t| floats("linear", t)).transpose()?;
    let epilogue = Epilogue {
        a,
        b,
        bias: bias.as_deref(),
        s,
    };
    match (epilogue.bias, s.activation) {
        (_, Some(op)) => with_unary(op, epilogue),
        (Some(_), None) => epilogue.visit(|x| x, 0),
        (None, None) => matmul::matmul_with(a, b, s, "matmul", |_| {}),
    }
}

/// The product to compute and the bias to add to it; visiting it with the
/// activation's function computes the whole op.
struct Epilogue<'a> {
    a: &'a Tensor,
    b: &'a Tensor,
    /// `[n]`, widened to f32.
    bias: Option<&'a [f32]>,
    s: &'a MatmulPlan,
}

impl UnaryVisitor for Epilogue<'_> {
    type Output = Result<Tensor>;

    fn visit<F: Fn(f32) -> f32 + Copy + Send + Sync>(self, f: F, cost: usize) -> Result<Tensor> {
        let Epilogue { a, b, bias, s } = self;
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
        matmul::matmul_with(a, b, s, "linear", finish)
    }
}

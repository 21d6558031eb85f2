//! The LSTM layer over a whole sequence: each step's product through the
//! product kernels, then every gate's activation and the state update in
//! one vectorized pass over the step's gates.

use super::buffers::{elems, tensor_of, zeroed};
use super::linear::linear;
use super::math::{sigmoid, tanh};
use super::parallel::with_simd;
use crate::shape::{self, LstmPlan};
use crate::{DType, Result, Tensor, WeightedInputs, deadline};

/// [`crate::Backend::lstm`] on the CPU. Each element goes through the same
/// operations in the same order as [`crate::composed::lstm`] (the step's
/// product, plus x-gates; σ and tanh as the unary kernels compute them; the
/// two products of the cell update, then their sum), so the two agree to
/// the product kernel's rounding.
pub(super) fn lstm(
    [x_gates, r, h0, c0]: [&Tensor; 4],
    plan: &LstmPlan,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "lstm";
    let LstmPlan { batch, hidden, .. } = *plan;
    let state = plan.state_shape();
    let x_gates: &[f32] = elems(OP, x_gates)?;
    // Every step multiplies by the same r: as a weight, the product kernels
    // pack it once for the whole sequence instead of once a step.
    let r = r.clone().into_weight();
    let mut h: Vec<f32> = elems(OP, h0)?.to_vec();
    let mut c: Vec<f32> = elems(OP, c0)?.to_vec();
    let mut y: Vec<f32> = zeroed(shape::numel(&plan.y_shape()))?;
    let step_len = batch * hidden;
    // Every step's product has the same shapes.
    let product_plan = shape::matmul(h0, &r, true)?;
    // An empty state has no steps to run (and no rows to cut it into).
    let steps = if step_len == 0 { 0 } else { plan.steps };
    for s in 0..steps {
        deadline::check(OP)?;
        let t = plan.step(s);
        let h_now = tensor_of(DType::F32, &state, std::mem::take(&mut h));
        let inputs = WeightedInputs {
            x: &h_now,
            weight: &r,
            bias: None,
        };
        let product = linear(inputs, &product_plan)?;
        let product: &[f32] = elems(OP, &product)?;
        let xt = &x_gates[t * 4 * step_len..][..4 * step_len];
        h = zeroed(step_len)?;
        with_simd(
            #[inline(always)]
            || {
                for (b, (h, c)) in h
                    .chunks_exact_mut(hidden)
                    .zip(c.chunks_exact_mut(hidden))
                    .enumerate()
                {
                    let (xt, product) = (&xt[b * 4 * hidden..], &product[b * 4 * hidden..]);
                    let pre = |k: usize, j: usize| xt[k * hidden + j] + product[k * hidden + j];
                    for j in 0..hidden {
                        let (i, o, f) =
                            (sigmoid(pre(0, j)), sigmoid(pre(1, j)), sigmoid(pre(2, j)));
                        let g = tanh(pre(3, j));
                        c[j] = f * c[j] + i * g;
                        h[j] = o * tanh(c[j]);
                    }
                }
            },
        );
        y[t * step_len..][..step_len].copy_from_slice(&h);
    }
    Ok((
        tensor_of(DType::F32, &plan.y_shape(), y),
        tensor_of(DType::F32, &state, h),
        tensor_of(DType::F32, &state, c),
    ))
}

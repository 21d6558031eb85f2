//! Operations built from a backend's other kernels, for a backend without a
//! kernel of its own for them: the same arithmetic in the same order as a
//! handler composing them from the contract's smaller operations, without
//! a call from the guest per piece.

use crate::shape::{self, LstmPlan};
use crate::{Backend, BinaryOp, Result, Tensor, UnaryOp, WeightedInputs};

/// [`Backend::lstm`] a step at a time: each step's gates from one product
/// and one sum, the i, o and f gates activated in one pass.
pub fn lstm<B: Backend + ?Sized>(
    b: &B,
    [x_gates, r, h0, c0]: [&Tensor; 4],
    plan: &LstmPlan,
) -> Result<(Tensor, Tensor, Tensor)> {
    let LstmPlan { batch, hidden, .. } = *plan;
    let state = plan.state_shape();
    let gate = |x: &Tensor, k: usize, width: usize| b.slice(x, 1, k * hidden, &[batch, width]);
    let (mut h, mut c) = (h0.clone(), c0.clone());
    // Every step's product has the same shapes.
    let product = shape::matmul(h0, r, true)?;
    // An empty state has no steps to run: y is empty too.
    let steps = if batch * hidden == 0 { 0 } else { plan.steps };
    let mut ys: Vec<Option<Tensor>> = vec![None; steps];
    for s in 0..steps {
        // Each step only records on a device: the request's deadline is
        // checked here, not at a read-back that may be thousands of steps on.
        crate::deadline::check("lstm")?;
        let t = plan.step(s);
        let xt = b.slice(x_gates, 0, t, &[1, batch, 4 * hidden])?;
        let xt = b.reshape(&xt, &[batch, 4 * hidden])?;
        let inputs = WeightedInputs {
            x: &h,
            weight: r,
            bias: None,
        };
        let pre = b.binary(
            BinaryOp::Add,
            &xt,
            &b.matmul(inputs, &product)?,
            &[batch, 4 * hidden],
        )?;
        let ifo = b.unary(UnaryOp::Sigmoid, &gate(&pre, 0, 3 * hidden)?)?;
        let g = b.unary(UnaryOp::Tanh, &gate(&pre, 3, hidden)?)?;
        let (i, o, f) = (
            gate(&ifo, 0, hidden)?,
            gate(&ifo, 1, hidden)?,
            gate(&ifo, 2, hidden)?,
        );
        let kept = b.binary(BinaryOp::Mul, &f, &c, &state)?;
        let added = b.binary(BinaryOp::Mul, &i, &g, &state)?;
        c = b.binary(BinaryOp::Add, &kept, &added, &state)?;
        h = b.binary(BinaryOp::Mul, &o, &b.unary(UnaryOp::Tanh, &c)?, &state)?;
        ys[t] = Some(b.reshape(&h, &[1, batch, hidden])?);
    }
    let ys: Vec<&Tensor> = ys.iter().flatten().collect();
    let y = if ys.is_empty() {
        b.full(x_gates.dtype(), &plan.y_shape(), 0.0)?
    } else {
        b.concat(&ys, 0, &plan.y_shape())?
    };
    Ok((y, h, c))
}

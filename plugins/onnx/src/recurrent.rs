//! ONNX `LSTM`, `GRU` and `RNN`: the input's product with every gate's
//! weights for all time steps at once (one `linear` over `[steps · batch,
//! input]`), then per step the hidden state's product and the gates'
//! elementwise update on the host: an LSTM without peepholes or clipping in
//! one call of the contract's `lstm`, the others a step at a time.
//!
//! Every sequence runs the full length: `sequence_lens` is refused at
//! import, as are activations other than the defaults and the batch-first
//! `layout=1` (which onnxruntime, the reference, does not run either).

use edgeserve_sdk::{Error, Tensor};

use crate::host::{Args, dims, reshape};

/// Which recurrence a node runs.
#[derive(Clone, Copy, PartialEq)]
enum Cell {
    /// Gates i, o, f, c; a cell state beside the hidden one.
    Lstm,
    /// Gates z, r, h.
    Gru {
        /// The hidden state's product taken before the reset gate applies.
        linear_before_reset: bool,
    },
    /// One tanh gate.
    Rnn,
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru { .. } => 3,
            Cell::Rnn => 1,
        }
    }
}

/// The weights of one direction.
struct Weights {
    /// `[gates · hidden, input]`.
    w: Tensor,
    /// `[gates · hidden, hidden]`.
    r: Tensor,
    /// The input bias `[gates · hidden]`, zeros when absent.
    wb: Tensor,
    /// The recurrence bias `[gates · hidden]`, zeros when absent.
    rb: Tensor,
    /// LSTM peepholes `[3 · hidden]` (i, o, f), when given.
    p: Option<Tensor>,
}

/// Entry `d` of a `[directions, …]` tensor, without its leading axis.
fn direction(t: &Tensor, d: usize) -> Result<Tensor, Error> {
    let rest = dims(t)[1..].to_vec();
    reshape(&t.slice(0, d as u32, d as u32 + 1)?, &rest)
}

/// Rows `gate · hidden .. (gate + 1) · hidden` of the last axis of `t`.
fn gate(t: &Tensor, gate: usize, hidden: usize) -> Result<Tensor, Error> {
    let last = t.rank() as i32 - 1;
    t.slice(last, (gate * hidden) as u32, ((gate + 1) * hidden) as u32)
}

/// ONNX `LSTM`, `GRU` or `RNN` (the op of `args.node`): its outputs `Y`,
/// `Y_h` (and `Y_c` for an LSTM).
pub fn run(args: &Args<'_>) -> Result<Vec<Tensor>, Error> {
    let node = args.node;
    let cell = match node.op.as_str() {
        "LSTM" => Cell::Lstm,
        "GRU" => Cell::Gru {
            linear_before_reset: node.int("linear_before_reset", 0) != 0,
        },
        _ => Cell::Rnn,
    };
    let x = args.host(0)?;
    let (w, r) = (args.host(1)?, args.host(2)?);
    let [steps, batch, input] = dims(&x)[..] else {
        return Err(Error::Shape(format!(
            "{} input of rank {}",
            node.op,
            x.rank()
        )));
    };
    let wd = dims(&w);
    let hidden = node.int("hidden_size", 0) as usize;
    let gates = cell.gates();
    if wd.len() != 3 || wd[1] != gates * hidden || wd[2] != input || hidden == 0 {
        return Err(Error::Shape(format!(
            "{} weights {wd:?} for hidden_size {hidden} and input {input}",
            node.op
        )));
    }
    let directions = wd[0];
    let reverse = node.string("direction") == Some("reverse");
    let clip = node
        .attrs
        .contains_key("clip")
        .then(|| node.float("clip", 0.0));
    let bias = args.opt_host(3)?;
    let (h0, c0) = (args.opt_host(5)?, args.opt_host(6)?);
    let peepholes = if cell == Cell::Lstm {
        args.opt_host(7)?
    } else {
        None
    };
    let mut ys = Vec::with_capacity(directions);
    let mut finals = Vec::with_capacity(directions);
    let mut cells = Vec::with_capacity(directions);
    for d in 0..directions {
        let zeros = || Tensor::full(x.dtype(), &[(gates * hidden) as u32], 0.0);
        let weights = Weights {
            w: direction(&w, d)?,
            r: direction(&r, d)?,
            wb: match &bias {
                Some(b) => direction(b, d)?.slice(0, 0, (gates * hidden) as u32)?,
                None => zeros()?,
            },
            rb: match &bias {
                Some(b) => direction(b, d)?.slice(
                    0,
                    (gates * hidden) as u32,
                    (2 * gates * hidden) as u32,
                )?,
                None => zeros()?,
            },
            p: peepholes.as_ref().map(|p| direction(p, d)).transpose()?,
        };
        let start = |s: Option<&Tensor>| -> Result<Tensor, Error> {
            match s {
                Some(s) => direction(s, d),
                None => Tensor::full(x.dtype(), &[batch as u32, hidden as u32], 0.0),
            }
        };
        // The second direction of a bidirectional node runs backwards.
        let backwards = reverse || d == 1;
        let (y, h, c) = recur(
            cell,
            &x,
            &weights,
            (start(h0.as_deref())?, start(c0.as_deref())?),
            Shape {
                steps,
                batch,
                hidden,
            },
            backwards,
            clip,
        )?;
        ys.push(y);
        finals.push(h);
        cells.push(c);
    }
    let stack = |parts: &[Tensor], axis: usize| -> Result<Tensor, Error> {
        let raised = parts
            .iter()
            .map(|p| {
                let mut d = dims(p);
                d.insert(axis, 1);
                reshape(p, &d)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Tensor::concat(&raised.iter().collect::<Vec<_>>(), axis as i32)
    };
    // Y [steps, directions, batch, hidden]; Y_h, Y_c [directions, batch, hidden].
    let mut outputs = vec![stack(&ys, 1)?, stack(&finals, 0)?];
    if cell == Cell::Lstm {
        outputs.push(stack(&cells, 0)?);
    }
    Ok(outputs)
}

/// An LSTM step's i, o and f gates: activated together, or (with
/// peepholes, which read the cell state) one by one from the peephole
/// weights.
enum Gates<'a> {
    Together(Tensor),
    Peepholes(&'a Tensor),
}

/// The sizes of one recurrence.
#[derive(Clone, Copy)]
struct Shape {
    steps: usize,
    batch: usize,
    hidden: usize,
}

/// One direction over every step: `(Y [steps, batch, hidden], last hidden,
/// last cell)`; the cell is the hidden state for GRU and RNN.
///
/// Each step is a dozen host calls or more, and each call costs about as
/// much as its small kernel: the states are kept `[1, batch, hidden]`, as
/// a step's slice of the input product is, so no step reshapes, and each
/// step's hidden state is its entry of `Y` as it is.
fn recur(
    cell: Cell,
    x: &Tensor,
    weights: &Weights,
    (h0, c0): (Tensor, Tensor),
    Shape {
        steps,
        batch,
        hidden,
    }: Shape,
    backwards: bool,
    clip: Option<f32>,
) -> Result<(Tensor, Tensor, Tensor), Error> {
    let gates = cell.gates();
    let input = dims(x)[2];
    // Every step's input product, with the input bias (and, where it is
    // not inside the reset gate's product, the recurrence bias too).
    let folds_rb = !matches!(cell, Cell::Gru { .. });
    let bias = if folds_rb {
        weights.wb.add(&weights.rb)?
    } else {
        crate::host::alias(&weights.wb)?
    };
    let xw = reshape(x, &[steps * batch, input])?.linear_t(&weights.w, Some(&bias), None)?;
    let xw = reshape(&xw, &[steps, batch, gates * hidden])?;
    if cell == Cell::Lstm && weights.p.is_none() && clip.is_none() {
        // The whole recurrence in one host call (contract 0.1.5), where a
        // step below is a dozen.
        return xw.lstm(&weights.r, &h0, &c0, backwards);
    }
    let act = |t: Tensor, f: fn(&Tensor) -> Result<Tensor, Error>| -> Result<Tensor, Error> {
        match clip {
            Some(limit) => f(&t.clip(Some(f64::from(-limit)), Some(f64::from(limit)))?),
            None => f(&t),
        }
    };
    let sigmoid: fn(&Tensor) -> Result<Tensor, Error> = Tensor::sigmoid;
    let tanh: fn(&Tensor) -> Result<Tensor, Error> = Tensor::tanh;
    // GRU without linear_before_reset multiplies the reset hidden state by
    // the h gate's own weights, so each step's product over the hidden
    // state takes the z and r gates' rows only.
    let rows = |from: usize, to: usize| -> Result<(Tensor, Tensor), Error> {
        Ok((
            weights
                .r
                .slice(0, (from * hidden) as u32, (to * hidden) as u32)?,
            weights
                .rb
                .slice(0, (from * hidden) as u32, (to * hidden) as u32)?,
        ))
    };
    let (h_gate, (recurrence, recurrence_bias)) = match cell {
        Cell::Gru {
            linear_before_reset: false,
        } => (Some(rows(2, 3)?), rows(0, 2)?),
        _ => (
            None,
            (
                crate::host::alias(&weights.r)?,
                crate::host::alias(&weights.rb)?,
            ),
        ),
    };
    let state = [1, batch, hidden];
    let h0 = reshape(&h0, &state)?;
    let mut c = reshape(&c0, &state)?;
    let mut ys: Vec<Tensor> = Vec::with_capacity(steps);
    for s in 0..steps {
        let t = if backwards { steps - 1 - s } else { s };
        let h = ys.last().unwrap_or(&h0);
        // [1, batch, gates · hidden].
        let xt = xw.slice(0, t as u32, t as u32 + 1)?;
        let h = match cell {
            Cell::Lstm => {
                let pre = xt.add(&h.matmul_t(&recurrence)?)?;
                // Without peepholes the i, o and f gates, side by side, take
                // one pass; with them, each its own.
                let gates = match &weights.p {
                    None => Gates::Together(act(
                        pre.slice(xt.rank() as i32 - 1, 0, (3 * hidden) as u32)?,
                        sigmoid,
                    )?),
                    Some(p) => Gates::Peepholes(p),
                };
                // Gate k (0 i, 1 o, 2 f); a peephole adds its weights times
                // `state`.
                let sig = |k: usize, state: &Tensor| -> Result<Tensor, Error> {
                    match &gates {
                        Gates::Together(ifo) => gate(ifo, k, hidden),
                        Gates::Peepholes(p) => {
                            let g = gate(&pre, k, hidden)?.add(&gate(p, k, hidden)?.mul(state)?)?;
                            act(g, sigmoid)
                        }
                    }
                };
                let (i, f) = (sig(0, &c)?, sig(2, &c)?);
                let candidate = act(gate(&pre, 3, hidden)?, tanh)?;
                c = f.mul(&c)?.add(&i.mul(&candidate)?)?;
                // The o gate's peephole reads the new cell state.
                sig(1, &c)?.mul(&c.tanh()?)?
            }
            Cell::Gru {
                linear_before_reset,
            } => {
                let hr = h.linear_t(&recurrence, Some(&recurrence_bias), None)?;
                let z = act(gate(&xt, 0, hidden)?.add(&gate(&hr, 0, hidden)?)?, sigmoid)?;
                let r = act(gate(&xt, 1, hidden)?.add(&gate(&hr, 1, hidden)?)?, sigmoid)?;
                let recurrent = if linear_before_reset {
                    r.mul(&gate(&hr, 2, hidden)?)?
                } else {
                    let (rh, rbh) = h_gate.as_ref().expect("built for this cell");
                    r.mul(h)?.linear_t(rh, Some(rbh), None)?
                };
                let candidate = act(gate(&xt, 2, hidden)?.add(&recurrent)?, tanh)?;
                // (1 − z) ⊙ candidate + z ⊙ h.
                candidate.add(&z.mul(&h.sub(&candidate)?)?)?
            }
            Cell::Rnn => act(xt.add(&h.matmul_t(&recurrence)?)?, tanh)?,
        };
        ys.push(h);
    }
    let last = reshape(ys.last().unwrap_or(&h0), &[batch, hidden])?;
    let c = match cell {
        Cell::Lstm => reshape(&c, &[batch, hidden])?,
        _ => crate::host::alias(&last)?,
    };
    if backwards {
        ys.reverse();
    }
    let y = Tensor::concat(&ys.iter().collect::<Vec<_>>(), 0)?;
    Ok((y, last, c))
}

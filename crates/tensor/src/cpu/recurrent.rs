//! The LSTM layer over a whole sequence: each step's product, then every
//! gate's activation and the state update in one vectorized pass over the
//! step's gates. A step large enough to share is cut by hidden units over
//! the threads, each keeping its units' rows of the weight in its cache for
//! the whole sequence ([`for_each_step`]); a smaller one runs its product
//! whole through the product kernels.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::buffers::{elems, tensor_of, uninit, zeroed};
use super::linear::linear;
use super::math::{sigmoid, tanh};
use super::packed::{self, PackedWeight};
use super::parallel::{SendPtr, wide_tiles, with_simd};
use super::skinny::{self, Weight};
use super::steps::for_each_step;
use crate::shape::{self, LstmPlan};
use crate::{DType, Result, Tensor, WeightedInputs, deadline};

/// [`crate::Backend::lstm`] on the CPU. Each element goes through the same
/// operations in the same order as [`crate::composed::lstm`] (the step's
/// product, plus x-gates; σ and tanh as the unary kernels compute them; the
/// two products of the cell update, then their sum), so the two agree to
/// the product kernels' rounding.
pub(super) fn lstm(
    [x_gates, r, h0, c0]: [&Tensor; 4],
    plan: &LstmPlan,
) -> Result<(Tensor, Tensor, Tensor)> {
    // Every step multiplies by the same r: as a weight, what is made of it
    // for the products is made once (and kept, for a model's weight).
    let r = r.clone().into_weight();
    lstm_in([x_gates, &r, h0, c0], plan, parts(plan))
}

/// Fewest multiply-adds in a step's product for its parts to run on
/// threads side by side.
const SHARED: usize = 1 << 17;

/// Fewest hidden units a part of a step takes.
const MIN_UNITS: usize = 16;

/// How many parts each step is cut into ([`in_parts`]): one a thread, or
/// one where the step's product is small or no product kernel of ours
/// takes a part's.
fn parts(plan: &LstmPlan) -> usize {
    let LstmPlan { batch, hidden, .. } = *plan;
    if !cuttable(batch, hidden) || batch * 4 * hidden * hidden < SHARED {
        return 1;
    }
    super::parallel::threads().min(hidden / MIN_UNITS).max(1)
}

/// Whether a product kernel of ours takes a part's product of `batch` rows
/// of `hidden` ([`Parts::product`]): none does on a CPU without them (an
/// aarch64 one), where every step runs whole.
fn cuttable(batch: usize, hidden: usize) -> bool {
    packed::takes(4 * MIN_UNITS, hidden) || skinny::takes(batch, hidden, true)
}

/// Whether the parts' products run on the packed kernel: where its AVX-512
/// tile runs (the zoo's LSTM at batch 8 in 1.32–1.36× onnxruntime's time,
/// against 1.75–1.82× on the dot kernel), or where the dot kernel does not
/// take the step. Capped at AVX2, the dot kernel reading the rows as they
/// lie ran batch 1 in 1.05–1.42× against the packed tile's 1.51–1.79×, and
/// batch 8 level (bench/RESULTS.md, session 46).
fn packs(batch: usize, hidden: usize) -> bool {
    packed::takes(4 * MIN_UNITS, hidden) && (wide_tiles() || !skinny::takes(batch, hidden, true))
}

/// [`lstm`] with each step in `parts` (see [`in_parts`]), or with its
/// product whole through the product kernels where `parts` is one.
fn lstm_in(
    [x_gates, r, h0, c0]: [&Tensor; 4],
    plan: &LstmPlan,
    parts: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "lstm";
    let LstmPlan { batch, hidden, .. } = *plan;
    let state = plan.state_shape();
    let x_gates: &[f32] = elems(OP, x_gates)?;
    let mut c: Vec<f32> = elems(OP, c0)?.to_vec();
    let mut y: Vec<f32> = zeroed(shape::numel(&plan.y_shape()))?;
    let step_len = batch * hidden;
    // An empty state has no steps to run (and no rows to cut it into).
    let steps = if step_len == 0 { 0 } else { plan.steps };
    if parts > 1 {
        let packs = packs(batch, hidden);
        let fits = |p: &Parts| (p.parts, p.hidden, p.packed()) == (parts, hidden, packs);
        let cut = r.derived(|| Parts::of(elems(OP, r)?, hidden, parts, packs), fits)?;
        in_parts(
            [x_gates, elems(OP, h0)?],
            &cut,
            plan,
            steps,
            (&mut y, &mut c),
        )?;
    } else {
        whole(x_gates, [r, h0], plan, steps, (&mut y, &mut c))?;
    }
    let h = if steps == 0 {
        elems(OP, h0)?.to_vec()
    } else {
        y[plan.step(steps - 1) * step_len..][..step_len].to_vec()
    };
    Ok((
        tensor_of(DType::F32, &plan.y_shape(), y),
        tensor_of(DType::F32, &state, h),
        tensor_of(DType::F32, &state, c),
    ))
}

/// r cut by hidden units: part `p` holds the rows of the four gates for
/// its units, gate after gate, so that its thread's product reads only
/// them and keeps them in its core's cache for the whole sequence; packed
/// for the packed kernel where [`packs`] says so, else as they are for the
/// dot kernel.
struct Parts {
    parts: usize,
    hidden: usize,
    /// Hidden units a part takes: the last part with units takes a tail
    /// narrower than [`MIN_UNITS`] too, and the parts after it none
    /// ([`Parts::units`]).
    per_part: usize,
    rows: Rows,
}

/// The parts' rows of r.
enum Rows {
    /// One packed weight a part.
    Packed(Vec<PackedWeight>),
    /// Part p's rows at `4 · hidden · (its first unit)`.
    Dense(Vec<f32>),
}

impl Parts {
    /// `r`, `[4 · hidden, hidden]`, cut into `parts`, packed if `packs`
    /// (which the packed kernel must take).
    fn of(r: &[f32], hidden: usize, parts: usize, packs: bool) -> Result<Parts> {
        // Whole vectors of units where they divide.
        let per_part = hidden
            .div_ceil(parts)
            .next_multiple_of(MIN_UNITS)
            .min(hidden);
        let mut cut = Parts {
            parts,
            hidden,
            per_part,
            rows: Rows::Dense(Vec::new()),
        };
        let mut rows = zeroed(4 * hidden * hidden)?;
        for p in 0..parts {
            let u = cut.units(p);
            if u.is_empty() {
                continue;
            }
            let part = &mut rows[4 * u.start * hidden..][..4 * u.len() * hidden];
            for (g, gate) in part.chunks_exact_mut(u.len() * hidden).enumerate() {
                gate.copy_from_slice(&r[(g * hidden + u.start) * hidden..][..u.len() * hidden]);
            }
        }
        cut.rows = Rows::Dense(rows);
        if packs {
            // Parts of no units come last.
            let packed = (0..parts)
                .map_while(|p| cut.part(p))
                .map(|part| {
                    let packed = PackedWeight::new(part, (part.len() / hidden, hidden), true)?;
                    Ok(packed.expect("a part of 16 units or more, 64 deep or more, packs"))
                })
                .collect::<Result<_>>()?;
            cut.rows = Rows::Packed(packed);
        }
        Ok(cut)
    }

    /// Whether the parts' rows are packed.
    fn packed(&self) -> bool {
        matches!(self.rows, Rows::Packed(_))
    }

    /// Part `p`'s hidden units: at least [`MIN_UNITS`] of them, or none.
    fn units(&self, p: usize) -> Range<usize> {
        let edge = |p: usize| {
            let at = (p * self.per_part).min(self.hidden);
            // A tail narrower than a part joins the part before it.
            if self.hidden - at < MIN_UNITS {
                self.hidden
            } else {
                at
            }
        };
        edge(p)..edge(p + 1)
    }

    /// Part `p`'s dense rows, `None` for a part of no units.
    fn part(&self, p: usize) -> Option<&[f32]> {
        let (u, h) = (self.units(p), self.hidden);
        match &self.rows {
            Rows::Dense(rows) if !u.is_empty() => Some(&rows[4 * u.start * h..][..4 * u.len() * h]),
            _ => None,
        }
    }

    /// `out = x · (part p's rows)ᵀ` for `m` rows of x, on this thread.
    fn product(&self, p: usize, out: &mut [MaybeUninit<f32>], x: &[f32], m: usize) {
        match &self.rows {
            Rows::Packed(packed) => packed::product(out, x, &packed[p], m, false),
            Rows::Dense(_) => {
                let Some(data) = self.part(p) else { return };
                let weight = Weight {
                    data,
                    transposed: true,
                };
                let dims = (m, data.len() / self.hidden, self.hidden);
                let done = skinny::product(out, x, weight, dims, false);
                assert!(done, "the dot kernel declined a part `parts` gave it");
            }
        }
    }
}

/// The steps, each product through the product kernels at once (r, a
/// weight, is packed once for the sequence where the packed kernel takes
/// it); every step's h into `y`, the cell into `c`.
fn whole(
    x_gates: &[f32],
    [r, h0]: [&Tensor; 2],
    plan: &LstmPlan,
    steps: usize,
    (y, c): (&mut [f32], &mut [f32]),
) -> Result<()> {
    const OP: &str = "lstm";
    let LstmPlan { batch, hidden, .. } = *plan;
    let state = plan.state_shape();
    let step_len = batch * hidden;
    // Every step's product has the same shapes.
    let product_plan = shape::matmul(h0, r, true)?;
    let mut h: Vec<f32> = elems(OP, h0)?.to_vec();
    for s in 0..steps {
        deadline::check(OP)?;
        let t = plan.step(s);
        let h_now = tensor_of(DType::F32, &state, std::mem::take(&mut h));
        let inputs = WeightedInputs {
            x: &h_now,
            weight: r,
            bias: None,
        };
        let product = linear(inputs, &product_plan)?;
        let product: &[f32] = elems(OP, &product)?;
        let xt = &x_gates[t * 4 * step_len..][..4 * step_len];
        let next = &mut y[t * step_len..][..step_len];
        with_simd(
            #[inline(always)]
            || {
                for (b, (h, c)) in next
                    .chunks_exact_mut(hidden)
                    .zip(c.chunks_exact_mut(hidden))
                    .enumerate()
                {
                    let at = b * 4 * hidden;
                    update(&xt[at..], hidden, 0..hidden, &product[at..], h, c);
                }
            },
        );
        h = next.to_vec();
    }
    Ok(())
}

/// The steps, each cut into `cut`'s parts by hidden units, a thread to a
/// part ([`for_each_step`]): a part's product of the last h by its rows of
/// r, then the cell update of its units alone; every step's h into `y`,
/// the cell into `c`.
fn in_parts(
    [x_gates, h0]: [&[f32]; 2],
    cut: &Parts,
    plan: &LstmPlan,
    steps: usize,
    (y, c): (&mut [f32], &mut [f32]),
) -> Result<()> {
    const OP: &str = "lstm";
    let LstmPlan { batch, hidden, .. } = *plan;
    let step_len = batch * hidden;
    // Part p's product, [batch, 4 · its units], at 4 · batch · (its first
    // unit).
    let mut products: Vec<f32> = zeroed(4 * step_len)?;
    let (y_at, c_at, products_at) = (
        SendPtr(y.as_mut_ptr()),
        SendPtr(c.as_mut_ptr()),
        SendPtr(products.as_mut_ptr()),
    );
    for_each_step(
        steps,
        cut.parts,
        |_| deadline::check(OP),
        |s, p| {
            let (y_at, c_at, products_at) = (y_at, c_at, products_at);
            let u = cut.units(p);
            let width = u.len();
            if width == 0 {
                return;
            }
            let t = plan.step(s);
            // SAFETY (of the slices below): the step before has finished
            // (`for_each_step`), so its h is read by every part and written
            // by none; this step's parts write disjoint units of this
            // step's h and of c, and each its own product; `y`, `c` and
            // `products` outlive the steps.
            let prev = if s == 0 {
                h0
            } else {
                let at = plan.step(s - 1) * step_len;
                unsafe { std::slice::from_raw_parts(y_at.0.add(at), step_len) }
            };
            let product = unsafe {
                let at = 4 * batch * u.start;
                std::slice::from_raw_parts_mut(products_at.0.add(at), 4 * batch * width)
            };
            // SAFETY: the product writes only floats.
            cut.product(p, unsafe { uninit(product) }, prev, batch);
            let xt = &x_gates[t * 4 * step_len..][..4 * step_len];
            with_simd(
                #[inline(always)]
                || {
                    for b in 0..batch {
                        let row = b * hidden + u.start;
                        // SAFETY: as above.
                        let (h, c) = unsafe {
                            (
                                std::slice::from_raw_parts_mut(
                                    y_at.0.add(t * step_len + row),
                                    width,
                                ),
                                std::slice::from_raw_parts_mut(c_at.0.add(row), width),
                            )
                        };
                        let product = &product[b * 4 * width..][..4 * width];
                        update(&xt[b * 4 * hidden..], hidden, u.clone(), product, h, c);
                    }
                },
            );
        },
    )
}

/// One sequence's gates at one step for hidden units `units`: σ of the
/// input, output and forget gates and tanh of the cell gate, each x-gate
/// (`xt`, all four gates' `hidden` units) plus the product (`product`, the
/// four gates' `units` only), then the cell update into `h` and `c` (the
/// units' own elements).
#[inline(always)]
fn update(
    xt: &[f32],
    hidden: usize,
    units: Range<usize>,
    product: &[f32],
    h: &mut [f32],
    c: &mut [f32],
) {
    let width = units.len();
    let (xt, h, c) = (&xt[..4 * hidden], &mut h[..width], &mut c[..width]);
    let x = |k: usize| &xt[k * hidden + units.start..][..width];
    let p = |k: usize| &product[k * width..][..width];
    let (xi, xo, xf, xc) = (x(0), x(1), x(2), x(3));
    let (pi, po, pf, pc) = (p(0), p(1), p(2), p(3));
    for j in 0..width {
        let (i, o, f) = (
            sigmoid(xi[j] + pi[j]),
            sigmoid(xo[j] + po[j]),
            sigmoid(xf[j] + pf[j]),
        );
        let g = tanh(xc[j] + pc[j]);
        c[j] = f * c[j] + i * g;
        h[j] = o * tanh(c[j]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::skinny::tests::values;
    use super::*;

    /// Cut into parts (uneven ones, a tail joined to the part before,
    /// parts left empty, in either direction), the layer agrees with the
    /// uncut one to the products' rounding, and bit for bit where both read
    /// r with the dot kernel (too shallow to pack). Where no kernel takes a
    /// part (aarch64), no step is cut.
    #[test]
    fn parts_agree_with_the_whole_step() {
        let sizes = [
            (6, 3, 40, 3),
            (3, 1, 20, 4),
            (5, 2, 16, 2),
            (4, 8, 64, 2),
            (3, 5, 100, 6),
        ];
        for (steps, batch, hidden, parts) in sizes {
            for reverse in [false, true] {
                let tensor = |shape: &[usize], seed| {
                    // In [-0.5, 0.5), as the states of a layer stay.
                    let half = values(shape.iter().product(), seed)
                        .iter()
                        .map(|v| v / 2.0)
                        .collect();
                    Tensor::from_f32(shape, half).unwrap()
                };
                let x_gates = tensor(&[steps, batch, 4 * hidden], 1);
                let r = tensor(&[4 * hidden, hidden], 2).into_weight();
                let (h0, c0) = (tensor(&[batch, hidden], 3), tensor(&[batch, hidden], 4));
                let inputs = [&x_gates, &r, &h0, &c0];
                let plan = shape::lstm(inputs, reverse).unwrap();
                if !cuttable(batch, hidden) {
                    // No product kernel of ours on this CPU: its steps are
                    // never cut.
                    assert_eq!(super::parts(&plan), 1);
                    continue;
                }
                let (y, h, c) = lstm_in(inputs, &plan, 1).unwrap();
                let (y2, h2, c2) = lstm_in(inputs, &plan, parts).unwrap();
                let what = format!("{steps}×{batch}×{hidden} in {parts} parts, reverse {reverse}");
                let exact = !packs(batch, hidden);
                for (whole, cut, name) in [(&y, &y2, "y"), (&h, &h2, "h"), (&c, &c2, "c")] {
                    let (whole, cut) = (
                        elems::<f32>("test", whole).unwrap(),
                        elems::<f32>("test", cut).unwrap(),
                    );
                    assert_eq!(whole.len(), cut.len());
                    for (i, (a, b)) in whole.iter().zip(cut).enumerate() {
                        if exact {
                            assert_eq!(a.to_bits(), b.to_bits(), "{name}[{i}], {what}");
                        } else {
                            assert!(
                                (a - b).abs() <= 1e-6,
                                "{name}[{i}]: {a} against {b}, {what}"
                            );
                        }
                    }
                }
            }
        }
    }
}

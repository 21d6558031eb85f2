//! ONNX `Conv` and `ConvTranspose` on the host's `conv2d`.
//!
//! * A 1-D convolution (audio front ends, such as Whisper's) is a 2-D one
//!   of height 1.
//! * The host pads each side as it reads (`conv2d-fused`): uneven pads, as
//!   TF-style exports and `auto_pad` write them, copy nothing. Only
//!   negative pads (a crop) are cut from the input first.
//! * A zero `Pad` of the spatial axes before a `Conv` is folded into its
//!   pads at `init` ([`fold_pads`]), and a `Relu` or a constant `Clip`
//!   after it into its output ([`fold_clips`]), so neither copies the
//!   tensor.
//! * A transposed convolution is the convolution it is the gradient of: the
//!   input spread out by the stride with zeros between, padded by the
//!   kernel's reach less the pads, convolved with the kernel flipped and its
//!   input and output channels swapped.

use std::collections::HashMap;

use edgeserve_onnx_graph::Attr;
use edgeserve_sdk::{Conv2d, Error, Tensor};

use crate::host::{Args, alias, dims, reshape};
use crate::pad::{Fill, pad};
use crate::plan::{Static, Step};
use crate::small::Small;

/// One spatial axis of a convolution, as the ONNX attributes give it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Axis {
    kernel: i64,
    stride: i64,
    dilation: i64,
    begin: i64,
    end: i64,
}

impl Axis {
    /// The kernel's reach: the span its taps cover, less one.
    fn reach(self) -> i64 {
        self.dilation * (self.kernel - 1)
    }
}

/// The spatial axes of `node` for an input of spatial dims `input` and a
/// kernel of `kernel`; pads from `pads` or `auto_pad` (`SAME_*` only for a
/// convolution, whose output is `ceil(input / stride)`).
fn axes(args: &Args<'_>, input: &[usize], kernel: &[usize]) -> Result<Vec<Axis>, Error> {
    let node = args.node;
    let n = input.len();
    let per_axis = |name: &str, default: i64| -> Result<Vec<i64>, Error> {
        match node.ints(name) {
            None => Ok(vec![default; n]),
            Some(v) if v.len() == n => Ok(v.to_vec()),
            Some(v) => Err(Error::InvalidArgument(format!(
                "{} {name} {v:?} for {n} spatial axes",
                node.op
            ))),
        }
    };
    let (stride, dilation) = (per_axis("strides", 1)?, per_axis("dilations", 1)?);
    let pads = match node.ints("pads") {
        Some(p) if p.len() == 2 * n => p.to_vec(),
        Some(p) => {
            return Err(Error::InvalidArgument(format!(
                "{} pads {p:?} for {n} spatial axes",
                node.op
            )));
        }
        None => vec![0; 2 * n],
    };
    let auto = node.string("auto_pad").unwrap_or("NOTSET");
    (0..n)
        .map(|i| {
            let mut axis = Axis {
                kernel: kernel[i] as i64,
                stride: stride[i],
                dilation: dilation[i],
                begin: pads[i],
                end: pads[n + i],
            };
            match auto {
                "NOTSET" => {}
                "VALID" => (axis.begin, axis.end) = (0, 0),
                "SAME_UPPER" | "SAME_LOWER" if node.op == "Conv" => {
                    let size = input[i] as i64;
                    let out = (size + axis.stride - 1) / axis.stride;
                    let total = ((out - 1) * axis.stride + axis.reach() + 1 - size).max(0);
                    let small = total / 2;
                    (axis.begin, axis.end) = if auto == "SAME_UPPER" {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                }
                other => {
                    return Err(Error::Unsupported(format!("{} auto_pad={other}", node.op)));
                }
            }
            if axis.stride < 1 || axis.dilation < 1 || axis.begin < 0 || axis.end < 0 {
                return Err(Error::InvalidArgument(format!(
                    "{} strides, dilations and pads must be positive: {axis:?}",
                    node.op
                )));
            }
            Ok(axis)
        })
        .collect()
}

/// `x` and `weight` with a height-1 axis inserted before their last one
/// when they are 1-D, so `conv2d` takes them; `None` for 2-D ones, which go
/// to the host as they are: a model's weight keeps its packed form there
/// only under its own handle, not a reshaped one.
fn lift(x: &Tensor, weight: &Tensor) -> Result<Option<(Tensor, Tensor)>, Error> {
    let rank = x.rank();
    if !(3..=4).contains(&rank) || weight.rank() != rank {
        return Err(Error::Unsupported(format!(
            "convolution of a rank-{rank} input with a rank-{} kernel (1-D and 2-D only)",
            weight.rank()
        )));
    }
    if rank == 4 {
        return Ok(None);
    }
    let tall = |t: &Tensor| {
        let mut d = dims(t);
        d.insert(2, 1);
        reshape(t, &d)
    };
    Ok(Some((tall(x)?, tall(weight)?)))
}

/// Height and width axes for a lifted convolution (`axes` is one or two
/// long; a 1-D one gains a height axis of one tap).
fn two_d(axes: &[Axis]) -> [Axis; 2] {
    match axes {
        [h, w] => [*h, *w],
        [w] => [
            Axis {
                kernel: 1,
                stride: 1,
                dilation: 1,
                begin: 0,
                end: 0,
            },
            *w,
        ],
        _ => unreachable!("lift admits 1-D and 2-D convolutions only"),
    }
}

/// The convolution `x ⊛ weight + bias` over `[h, w]`, clipped to `clip`:
/// the host pads each side itself; negative pads crop `x` first.
fn convolve(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    [h, w]: [Axis; 2],
    (stride, groups): ((u32, u32), u32),
    clip: (Option<f64>, Option<f64>),
) -> Result<Tensor, Error> {
    let crop = [
        (2, h.begin.min(0), h.end.min(0)),
        (3, w.begin.min(0), w.end.min(0)),
    ];
    let cropped;
    let x = if crop.iter().any(|&(_, b, e)| b != 0 || e != 0) {
        cropped = pad(x, &crop, Fill::Constant(0.0))?;
        &cropped
    } else {
        x
    };
    let zeros = |a: i64, b: i64| (a.max(0) as u32, b.max(0) as u32);
    x.conv2d(
        weight,
        bias,
        Conv2d {
            stride,
            padding: zeros(h.begin, w.begin),
            padding_end: Some(zeros(h.end, w.end)),
            dilation: (h.dilation as u32, w.dilation as u32),
            groups,
            clip,
        },
    )
}

/// `y` back to 1-D when the convolution was lifted from it.
fn lower(y: Tensor, rank: usize) -> Result<Tensor, Error> {
    if rank == 4 {
        return Ok(y);
    }
    let mut d = dims(&y);
    d.remove(2);
    reshape(&y, &d)
}

/// ONNX `Conv`, 1-D or 2-D.
pub fn conv(args: &Args<'_>) -> Result<Tensor, Error> {
    let (x, weight, bias) = (args.host(0)?, args.host(1)?, args.opt_host(2)?);
    let rank = x.rank();
    let lifted = lift(&x, &weight)?;
    let (x4, w4) = lifted.as_ref().map_or((&*x, &*weight), |(x, w)| (x, w));
    let axes = axes(args, &dims(&x)[2..], &dims(&weight)[2..])?;
    let [h, w] = two_d(&axes);
    let stride = (h.stride as u32, w.stride as u32);
    let groups = args.node.int("group", 1) as u32;
    let clip = match args.node.attrs.get(CLIP) {
        Some(Attr::Floats(bounds)) => match bounds[..] {
            [lo, hi] => {
                let bound = |v: f32| v.is_finite().then_some(f64::from(v));
                (bound(lo), bound(hi))
            }
            _ => unreachable!("fold_clips writes two bounds"),
        },
        _ => (None, None),
    };
    lower(
        convolve(x4, w4, bias.as_deref(), [h, w], (stride, groups), clip)?,
        rank,
    )
}

/// ONNX `ConvTranspose`, 1-D or 2-D, with explicit pads (`output_shape`
/// and `SAME_*` are refused at import).
pub fn conv_transpose(args: &Args<'_>) -> Result<Tensor, Error> {
    let (x, weight, bias) = (args.host(0)?, args.host(1)?, args.opt_host(2)?);
    let rank = x.rank();
    let lifted = lift(&x, &weight)?;
    let (x4, w4) = lifted.as_ref().map_or((&*x, &*weight), |(x, w)| (x, w));
    let mut axes = axes(args, &dims(&x)[2..], &dims(&weight)[2..])?;
    let extra = match args.node.ints("output_padding") {
        Some(p) if p.len() == axes.len() => p.to_vec(),
        Some(p) => {
            return Err(Error::InvalidArgument(format!(
                "ConvTranspose output_padding {p:?} for {} spatial axes",
                axes.len()
            )));
        }
        None => vec![0; axes.len()],
    };
    // The equivalent convolution's pads: the kernel's reach less the
    // transposed one's, the output padding at the end.
    for (axis, extra) in axes.iter_mut().zip(extra) {
        let reach = axis.reach();
        (axis.begin, axis.end) = (reach - axis.begin, reach - axis.end + extra);
    }
    let [h, w] = two_d(&axes);
    let spread = spread(&spread(x4, 2, h.stride)?, 3, w.stride)?;
    let groups = args.node.int("group", 1) as usize;
    let kernel = turn(w4, groups)?;
    lower(
        convolve(
            &spread,
            &kernel,
            bias.as_deref(),
            [h, w],
            ((1, 1), groups as u32),
            (None, None),
        )?,
        rank,
    )
}

/// `x` with `stride − 1` zeros between neighbours along `axis`: every row
/// gains a zero block after it, then the trailing block goes.
fn spread(x: &Tensor, axis: usize, stride: i64) -> Result<Tensor, Error> {
    if stride == 1 {
        return alias(x);
    }
    let d = dims(x);
    let mut tall = d.clone();
    tall.insert(axis + 1, 1);
    let mut zeros: Vec<u32> = tall.iter().map(|&v| v as u32).collect();
    zeros[axis + 1] = stride as u32 - 1;
    let blocks = Tensor::concat(
        &[&reshape(x, &tall)?, &Tensor::full(x.dtype(), &zeros, 0.0)?],
        axis as i32 + 1,
    )?;
    let mut flat = d.clone();
    flat[axis] *= stride as usize;
    let joined = reshape(&blocks, &flat)?;
    joined.slice(
        axis as i32,
        0,
        ((d[axis] as i64 - 1) * stride + 1).max(0) as u32,
    )
}

/// A transposed convolution's kernel `[ci, co / groups, kh, kw]` as the
/// equivalent convolution's: flipped in both spatial axes, input and output
/// channels swapped within each group (`[co, ci / groups, kh, kw]`).
fn turn(weight: &Tensor, groups: usize) -> Result<Tensor, Error> {
    let d = dims(weight);
    let mut k = alias(weight)?;
    for axis in [2, 3] {
        if d[axis] > 1 {
            let reversed: Vec<i64> = (0..d[axis] as i64).rev().collect();
            k = k.gather(
                &Tensor::from_i64(&[d[axis] as u32], &reversed)?,
                axis as i32,
            )?;
        }
    }
    if groups == 0 || !d[0].is_multiple_of(groups) {
        return Err(Error::Shape(format!(
            "ConvTranspose kernel {d:?} does not split into {groups} groups"
        )));
    }
    let grouped = reshape(&k, &[groups, d[0] / groups, d[1], d[2], d[3]])?;
    let swapped = grouped.transpose(&[0, 2, 1, 3, 4])?;
    reshape(&swapped, &[groups * d[1], d[0] / groups, d[2], d[3]])
}

/// Folds each zero-filling `Pad` of only the spatial axes into the `Conv`s
/// that alone read it (TF-style exports, such as MobileNet's, pad before
/// every convolution): the convolution pads while it reads, where the
/// `Pad` would copy the whole input into a larger tensor first. Runs at
/// `init`, once the pads are folded constants.
pub(crate) fn fold_pads(
    steps: &mut Vec<Step>,
    statics: &HashMap<usize, Static>,
    opset: i64,
    outputs: &[usize],
) {
    let mut folded = vec![false; steps.len()];
    for p in 0..steps.len() {
        let Some(spatial) = spatial_pads(&steps[p], statics, opset) else {
            continue;
        };
        let out = steps[p].outputs[0];
        let readers = readers(steps, out);
        let all_convs = readers.iter().all(|&i| {
            let s = &steps[i];
            s.node.op == "Conv"
                && s.inputs[1..].iter().all(|&input| input != Some(out))
                && s.node.string("auto_pad").is_none_or(|a| a == "NOTSET")
                && s.node.ints("pads").is_none_or(|p| p.len() == spatial.len())
        });
        if readers.is_empty() || !all_convs || outputs.contains(&out) {
            continue;
        }
        let (source, source_name) = (steps[p].inputs[0], steps[p].node.inputs[0].clone());
        for i in readers {
            let conv = &mut steps[i];
            let old = conv
                .node
                .ints("pads")
                .map_or(vec![0; spatial.len()], <[i64]>::to_vec);
            let pads = old.iter().zip(&spatial).map(|(a, b)| a + b).collect();
            conv.node.attrs.insert("pads".into(), Attr::Ints(pads));
            (conv.inputs[0], conv.node.inputs[0]) = (source, source_name.clone());
        }
        folded[p] = true;
    }
    drop_folded(steps, folded);
}

/// The attribute of a `Conv` that [`fold_clips`] gives the bounds `[lo,
/// hi]` of the `Relu` or `Clip` it took in (infinite where absent); not an
/// ONNX name, so no model sets it.
const CLIP: &str = "edgeserve:clip";

/// Folds the `Relu`, or the `Clip` with constant bounds, that alone reads a
/// `Conv`'s output into the convolution (MobileNet's ReLU6, ResNet's ReLU):
/// the host clips each output as it writes it, where the activation would
/// read and write the whole tensor again. Runs at `init`, once the bounds
/// are folded constants.
pub(crate) fn fold_clips(
    steps: &mut Vec<Step>,
    statics: &HashMap<usize, Static>,
    opset: i64,
    outputs: &[usize],
) {
    let mut folded = vec![false; steps.len()];
    for c in 0..steps.len() {
        let out = steps[c].outputs[0];
        if steps[c].node.op != "Conv" || steps[c].small || outputs.contains(&out) {
            continue;
        }
        let readers = readers(steps, out);
        let [r] = readers[..] else { continue };
        if steps[r].inputs[0] != Some(out) || steps[r].inputs[1..].contains(&Some(out)) {
            continue;
        }
        let Some((lo, hi)) = clip_bounds(&steps[r], statics, opset) else {
            continue;
        };
        let (y, name) = (steps[r].outputs[0], steps[r].node.outputs[0].clone());
        let conv = &mut steps[c];
        conv.node
            .attrs
            .insert(CLIP.into(), Attr::Floats(vec![lo, hi]));
        (conv.outputs[0], conv.node.outputs[0]) = (y, name);
        folded[r] = true;
    }
    drop_folded(steps, folded);
}

/// The bounds a `Relu` or `Clip` step clips to, infinite where absent;
/// `None` for any other step, or a `Clip` whose bounds come with the
/// request.
fn clip_bounds(step: &Step, statics: &HashMap<usize, Static>, opset: i64) -> Option<(f32, f32)> {
    let node = &step.node;
    match node.op.as_str() {
        _ if step.small => None,
        "Relu" => Some((0.0, f32::INFINITY)),
        "Clip" if opset < 11 => Some((node.float("min", f32::MIN), node.float("max", f32::MAX))),
        "Clip" => {
            let bound = |i: usize, absent: f32| match step.inputs.get(i).copied().flatten() {
                None => Some(absent),
                Some(slot) => match statics.get(&slot) {
                    Some(Static::Const(c)) => c.data.first().map(|&v| v as f32),
                    _ => None,
                },
            };
            Some((bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?))
        }
        _ => None,
    }
}

/// The steps that read `slot`.
fn readers(steps: &[Step], slot: usize) -> Vec<usize> {
    (0..steps.len())
        .filter(|&i| steps[i].inputs.contains(&Some(slot)))
        .collect()
}

/// Removes the steps marked `folded`.
fn drop_folded(steps: &mut Vec<Step>, folded: Vec<bool>) {
    let mut keep = folded.into_iter().map(|f| !f);
    steps.retain(|_| keep.next().unwrap_or(true));
}

/// A `Pad` step's pads in a `Conv`'s layout (`[begin…, end…]` of the
/// spatial axes), when it fills with zeros, its pads are known and
/// non-negative, and it leaves the batch and channel axes alone.
fn spatial_pads(step: &Step, statics: &HashMap<usize, Static>, opset: i64) -> Option<Vec<i64>> {
    let node = &step.node;
    if node.op != "Pad" || step.small || node.string("mode").is_some_and(|m| m != "constant") {
        return None;
    }
    let constant = |i: usize| match step.inputs.get(i).copied().flatten() {
        None => Some(None),
        Some(slot) => match statics.get(&slot) {
            Some(Static::Const(c)) => Some(Some(c)),
            _ => None,
        },
    };
    let pads = if opset < 11 {
        (node.float("value", 0.0) == 0.0).then(|| node.ints("pads").map(<[i64]>::to_vec))??
    } else {
        let zero_fill = constant(2)?.is_none_or(|c| c.data.iter().all(|&v| v == 0.0));
        let no_axes = constant(3)?.is_none();
        (zero_fill && no_axes).then_some(())?;
        constant(1)??.ints()
    };
    let rank = pads.len() / 2;
    let (begin, end) = pads.split_at(rank);
    let fits = (3..=4).contains(&rank)
        && pads.iter().all(|&p| p >= 0)
        && begin[..2] == [0, 0]
        && end[..2] == [0, 0];
    fits.then(|| begin[2..].iter().chain(&end[2..]).copied().collect())
}

#[cfg(test)]
mod tests {
    use edgeserve_onnx_graph::Attr;

    use crate::plan::tests::Graph;

    /// `x → Pad(pads, mode) → Conv(pads 1 each side)`, plus `also` reading
    /// the pad's output when given; returns the graph and the conv's name.
    fn padded_conv(pads: &[f64], mode: &str, also: Option<&str>) -> (Graph, String) {
        let mut g = Graph::default();
        let pads = g.constant(&[pads.len()], pads);
        let padded = g.op("Pad", &["x", &pads], &[("mode", Attr::String(mode.into()))]);
        let w = g.constant(&[4, 1, 3, 3], &[]);
        let conv = g.op(
            "Conv",
            &[&padded, &w],
            &[("pads", Attr::Ints(vec![1, 1, 1, 1]))],
        );
        if let Some(op) = also {
            g.op(op, &[&padded], &[]);
        }
        (g, conv)
    }

    fn fold(g: &mut Graph) {
        super::fold_pads(&mut g.steps, &g.statics, 17, &[]);
    }

    #[test]
    fn a_zero_pad_of_the_spatial_axes_joins_the_convolution() {
        let (mut g, conv) = padded_conv(&[0., 0., 0., 1., 0., 0., 2., 3.], "constant", None);
        fold(&mut g);
        let x = g.slot("x");
        let [step] = g.steps.as_slice() else {
            panic!(
                "the Pad stays: {:?}",
                g.steps.iter().map(|s| &s.node.op).collect::<Vec<_>>()
            );
        };
        assert_eq!(step.node.name, conv);
        assert_eq!(step.inputs[0], Some(x));
        assert_eq!(step.node.inputs[0], "x");
        // ONNX order: [top, left, bottom, right], each the conv's 1 plus the pad's.
        assert_eq!(step.node.ints("pads"), Some(&[1, 2, 3, 4][..]));
    }

    #[test]
    fn pads_that_are_not_zeros_of_spatial_axes_alone_stay() {
        let cases: [(&[f64], &str, Option<&str>); 4] = [
            (&[0., 1., 1., 1., 0., 0., 1., 1.], "constant", None),
            (&[0., 0., 1., 1., 0., 0., -1., 1.], "constant", None),
            (&[0., 0., 1., 1., 0., 0., 1., 1.], "reflect", None),
            (&[0., 0., 1., 1., 0., 0., 1., 1.], "constant", Some("Relu")),
        ];
        for (pads, mode, also) in cases {
            let (mut g, _) = padded_conv(pads, mode, also);
            let before = g.steps.len();
            fold(&mut g);
            let case = format!("pads {pads:?} {mode} read by {also:?}");
            assert_eq!(g.steps.len(), before, "{case}");
            assert_eq!(
                g.steps[1].node.ints("pads"),
                Some(&[1, 1, 1, 1][..]),
                "{case}"
            );
        }
    }

    /// Steps reading a convolution's output: (op, inputs after it).
    type Readers<'a> = &'a [(&'a str, &'a [&'a str])];

    /// `x → Conv`, then `readers` of its output.
    fn read_conv(readers: Readers<'_>) -> (Graph, String, Vec<String>) {
        let mut g = Graph::default();
        let w = g.constant(&[4, 1, 3, 3], &[]);
        let conv = g.op("Conv", &["x", &w], &[]);
        let outs = readers
            .iter()
            .map(|(op, extra)| {
                let inputs: Vec<&str> = [conv.as_str()]
                    .into_iter()
                    .chain(extra.iter().copied())
                    .collect();
                g.op(op, &inputs, &[])
            })
            .collect();
        (g, conv, outs)
    }

    fn fold_clips(g: &mut Graph, outputs: &[usize]) {
        super::fold_clips(&mut g.steps, &g.statics, 17, outputs);
    }

    #[test]
    fn a_relu_or_a_constant_clip_alone_after_a_convolution_joins_it() {
        for case in 0..3 {
            let (mut g, conv, _) = read_conv(&[]);
            let (op, inputs, want) = match case {
                0 => ("Relu", vec![conv.clone()], [0.0, f32::INFINITY]),
                1 => (
                    "Clip",
                    vec![conv.clone()],
                    [f32::NEG_INFINITY, f32::INFINITY],
                ),
                _ => {
                    let (lo, hi) = (g.constant(&[], &[0.0]), g.constant(&[], &[6.0]));
                    ("Clip", vec![conv.clone(), lo, hi], [0.0, 6.0])
                }
            };
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            let out = g.op(op, &inputs, &[]);
            let out_slot = g.slot(&out);
            fold_clips(&mut g, &[]);
            let [step] = g.steps.as_slice() else {
                panic!("{op} {inputs:?} stays");
            };
            assert_eq!(step.node.name, conv);
            assert_eq!(step.outputs, [out_slot], "{op} {inputs:?}");
            assert_eq!(step.node.outputs, std::slice::from_ref(&out));
            assert_eq!(
                step.node.attrs.get(super::CLIP),
                Some(&Attr::Floats(want.to_vec())),
                "{op} {inputs:?}"
            );
        }
    }

    #[test]
    fn activations_that_are_not_the_convolutions_only_reader_or_have_request_bounds_stay() {
        let cases: [(Readers<'_>, bool); 4] = [
            // The convolution's output is read twice.
            (&[("Relu", &[]), ("Sigmoid", &[])], false),
            // The bound is a request input.
            (&[("Clip", &["lo"])], false),
            // Not an activation the convolution can apply.
            (&[("Sigmoid", &[])], false),
            // The convolution's output is the graph's.
            (&[("Relu", &[])], true),
        ];
        for (readers, is_output) in cases {
            let (mut g, conv, _) = read_conv(readers);
            let before = g.steps.len();
            let outputs = if is_output {
                vec![g.slot(&conv)]
            } else {
                vec![]
            };
            fold_clips(&mut g, &outputs);
            let case = format!("{readers:?} output {is_output}");
            assert_eq!(g.steps.len(), before, "{case}");
            assert_eq!(g.steps[0].node.attrs.get(super::CLIP), None, "{case}");
        }
    }
}

//! ONNX `Pad`, and the explicit padding of convolutions whose pads the
//! host's symmetric `conv2d` padding cannot express.
//!
//! A constant pad is a `concat` of `full` blocks around the value; the
//! other modes pick rows by computed indices (`gather`), so every backend
//! runs them with the ops it already has.

use edgeserve_sdk::{Error, Tensor};

use crate::host::Args;
use crate::small::norm_axis;

/// How the new positions of a `Pad` are filled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fill {
    /// A constant value.
    Constant(f64),
    /// The nearest edge value.
    Edge,
    /// Mirrored about the edge, the edge itself not repeated.
    Reflect,
    /// Wrapped around from the other end.
    Wrap,
}

impl Fill {
    /// The fill a `mode` attribute names (`constant` takes `value`).
    pub fn of_mode(mode: Option<&str>, value: f64) -> Result<Fill, Error> {
        Ok(match mode.unwrap_or("constant") {
            "constant" => Fill::Constant(value),
            "edge" => Fill::Edge,
            "reflect" => Fill::Reflect,
            "wrap" => Fill::Wrap,
            other => return Err(Error::Unsupported(format!("Pad mode {other:?}"))),
        })
    }

    /// The source index along an axis of `dim` for output index `i` of a
    /// pad starting `before` positions early (`None` for constant fill).
    fn source(self, i: i64, dim: i64) -> Option<i64> {
        let last = dim - 1;
        match self {
            Fill::Constant(_) => None,
            Fill::Edge => Some(i.clamp(0, last)),
            Fill::Reflect if last == 0 => Some(0),
            Fill::Reflect => {
                let period = 2 * last;
                let j = i.rem_euclid(period);
                Some(if j > last { period - j } else { j })
            }
            Fill::Wrap => Some(i.rem_euclid(dim)),
        }
    }
}

/// `x` padded by `pads[axis] = (before, after)` per axis; negative pads
/// crop.
pub fn pad(x: &Tensor, pads: &[(usize, i64, i64)], fill: Fill) -> Result<Tensor, Error> {
    let mut y = crate::host::alias(x)?;
    for &(axis, before, after) in pads {
        if before == 0 && after == 0 {
            continue;
        }
        let dim = i64::from(y.shape()[axis]);
        // Crop first, so the fill reads the cropped value's edges.
        let (lo, hi) = ((-before).max(0), dim - (-after).max(0));
        if lo > hi {
            return Err(Error::Shape(format!(
                "pads ({before}, {after}) crop more than axis {axis} holds ({dim})"
            )));
        }
        if lo > 0 || hi < dim {
            y = y.slice(axis as i32, lo as u32, hi as u32)?;
        }
        let (before, after, dim) = (before.max(0), after.max(0), hi - lo);
        if before == 0 && after == 0 {
            continue;
        }
        y = match fill {
            Fill::Constant(value) => {
                let block = |n: i64| -> Result<Tensor, Error> {
                    let mut shape = y.shape();
                    shape[axis] = n as u32;
                    Tensor::full(y.dtype(), &shape, value)
                };
                let head = (before > 0).then(|| block(before)).transpose()?;
                let tail = (after > 0).then(|| block(after)).transpose()?;
                let refs: Vec<&Tensor> = head.iter().chain([&y]).chain(tail.iter()).collect();
                Tensor::concat(&refs, axis as i32)?
            }
            _ => {
                if dim == 0 {
                    return Err(Error::Shape(format!("cannot pad the empty axis {axis}")));
                }
                let picks: Vec<i64> = (-before..dim + after)
                    .map(|i| fill.source(i, dim).unwrap_or(0))
                    .collect();
                let picks = Tensor::from_i64(&[picks.len() as u32], &picks)?;
                y.gather(&picks, axis as i32)?
            }
        };
    }
    Ok(y)
}

/// ONNX `Pad`: `pads` from input 1 (opset 11 on) or the attribute, the
/// constant from input 2 or the `value` attribute, `axes` from input 3.
pub fn run(args: &Args<'_>, opset: i64) -> Result<Tensor, Error> {
    let node = args.node;
    let x = args.host(0)?;
    let rank = x.rank();
    let (pads, value) = if opset < 11 {
        (
            node.ints("pads").map(<[i64]>::to_vec),
            f64::from(node.float("value", 0.0)),
        )
    } else {
        let value = match args.small(2)? {
            Some(c) => c.data.first().copied().unwrap_or(0.0),
            None => 0.0,
        };
        (args.ints(1)?, value)
    };
    let pads = pads.ok_or_else(|| Error::InvalidArgument("Pad needs pads".into()))?;
    let axes: Vec<usize> = match args.ints(3)? {
        Some(axes) => axes
            .iter()
            .map(|&a| norm_axis(a, rank))
            .collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(Error::InvalidArgument(format!(
            "Pad has {} pads for {} axes",
            pads.len(),
            axes.len()
        )));
    }
    let n = axes.len();
    let per_axis: Vec<(usize, i64, i64)> = axes
        .iter()
        .enumerate()
        .map(|(k, &a)| (a, pads[k], pads[n + k]))
        .collect();
    pad(&x, &per_axis, Fill::of_mode(node.string("mode"), value)?)
}

#[cfg(test)]
mod tests {
    use super::Fill;

    fn picks(fill: Fill, before: i64, dim: i64, after: i64) -> Vec<i64> {
        (-before..dim + after)
            .map(|i| fill.source(i, dim).unwrap())
            .collect()
    }

    #[test]
    fn each_mode_picks_the_rows_numpy_does() {
        // numpy.pad(arange(4), (3, 3), mode) for edge, reflect and wrap.
        assert_eq!(picks(Fill::Edge, 3, 4, 3), [0, 0, 0, 0, 1, 2, 3, 3, 3, 3]);
        assert_eq!(
            picks(Fill::Reflect, 3, 4, 3),
            [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
        );
        assert_eq!(picks(Fill::Wrap, 3, 4, 3), [1, 2, 3, 0, 1, 2, 3, 0, 1, 2]);
        // Past one period, reflect keeps bouncing (numpy's behaviour).
        assert_eq!(picks(Fill::Reflect, 5, 3, 0), [1, 0, 1, 2, 1, 0, 1, 2]);
        assert_eq!(picks(Fill::Reflect, 2, 1, 2), [0, 0, 0, 0, 0]);
    }
}

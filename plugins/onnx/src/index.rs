//! ONNX ops that place elements by position: `Split`, `Trilu`, `CumSum` and
//! `GatherElements`, composed from the host's `slice`, `compare`, `where`,
//! `matmul` and `gather`.
//!
//! Positions are computed on the host as f32 (the GPU's arithmetic is f32
//! only), which holds every integer up to 2^24 exactly; larger tensors are
//! refused rather than indexed wrongly.

use edgeserve_sdk::{CompareOp, Dtype, Error, Tensor};

use crate::host::{Args, alias, as_bool, dims, reshape};
use crate::small::{norm_axis, strides};

/// The largest element count whose positions f32 holds exactly.
const EXACT: usize = 1 << 24;

/// ONNX `Split`: sizes from input 1 (opset 13 on), the `split` attribute,
/// or equal parts (the last one smaller, as `num_outputs` in opset 18).
pub fn split(args: &Args<'_>) -> Result<Vec<Tensor>, Error> {
    let node = args.node;
    let x = args.host(0)?;
    let d = dims(&x);
    let axis = norm_axis(node.int("axis", 0), d.len())?;
    let parts = node.outputs.len();
    let sizes: Vec<usize> = match args
        .ints(1)?
        .or_else(|| node.ints("split").map(<[i64]>::to_vec))
    {
        Some(sizes) => sizes.iter().map(|&s| s.max(0) as usize).collect(),
        None => {
            let each = d[axis].div_ceil(parts.max(1));
            (0..parts)
                .map(|i| each.min(d[axis].saturating_sub(i * each)))
                .collect()
        }
    };
    if sizes.len() != parts || sizes.iter().sum::<usize>() != d[axis] {
        return Err(Error::Shape(format!(
            "Split of axis {axis} (size {}) into {sizes:?} for {parts} outputs",
            d[axis]
        )));
    }
    let mut start = 0;
    sizes
        .iter()
        .map(|&size| {
            start += size;
            x.slice(axis as i32, (start - size) as u32, start as u32)
        })
        .collect()
}

/// A `[rows, cols]` u8 mask of where `col − row ≥ k` (`upper`) or
/// `col − row ≤ k` (lower): a triangle with its diagonal `k` places right of
/// the main one.
fn triangle(rows: usize, cols: usize, k: i64, upper: bool) -> Result<Tensor, Error> {
    if rows.max(cols) > EXACT {
        return Err(Error::Unsupported(format!(
            "a triangle of {rows} × {cols} (at most {EXACT} per axis)"
        )));
    }
    let row: Vec<f32> = (0..rows).map(|r| (r as i64 + k) as f32).collect();
    let col: Vec<f32> = (0..cols).map(|c| c as f32).collect();
    let row = Tensor::from_f32(&[rows as u32, 1], &row)?;
    let col = Tensor::from_f32(&[1, cols as u32], &col)?;
    let op = if upper {
        CompareOp::GreaterEqual
    } else {
        CompareOp::LessEqual
    };
    col.compare(op, &row)
}

/// ONNX `Trilu`: the upper (`upper=1`) or lower triangle of the last two
/// axes, `k` (input 1) diagonals over; the rest zeros.
pub fn trilu(args: &Args<'_>) -> Result<Tensor, Error> {
    let x = args.host(0)?;
    let d = dims(&x);
    if d.len() < 2 {
        return Err(Error::Shape(format!("Trilu of a rank-{} value", d.len())));
    }
    let k = args.ints(1)?.and_then(|k| k.first().copied()).unwrap_or(0);
    let mask = triangle(
        d[d.len() - 2],
        d[d.len() - 1],
        k,
        args.node.int("upper", 1) != 0,
    )?;
    mask.select(&x, &Tensor::full(x.dtype(), &[], 0.0)?)
}

/// ONNX `CumSum` along `axis` (input 1), `exclusive` and `reverse` as the
/// attributes say: a product with a triangle of ones along that axis. Sums
/// are taken in f32 (integers cast there and back, exact to 2^24).
pub fn cum_sum(args: &Args<'_>) -> Result<Tensor, Error> {
    let node = args.node;
    let x = args.host(0)?;
    let rank = x.rank();
    let axis = args
        .ints(1)?
        .and_then(|a| a.first().copied())
        .ok_or_else(|| Error::InvalidArgument("CumSum needs an axis".into()))?;
    let axis = norm_axis(axis, rank)?;
    let n = dims(&x)[axis];
    // sum[i] = Σ_j x[j] · t[j, i]: t[j, i] = 1 where j ≤ i (j < i when
    // exclusive; mirrored when reversed), so i − j ≥ 0 (≥ 1), or ≤ 0 (≤ −1).
    let (exclusive, reverse) = (node.int("exclusive", 0) != 0, node.int("reverse", 0) != 0);
    let k = match (exclusive, reverse) {
        (false, _) => 0,
        (true, false) => 1,
        (true, true) => -1,
    };
    let ones = as_bool(&triangle(n, n, k, !reverse)?)?;
    let dtype = x.dtype();
    let float = if dtype == Dtype::F32 {
        alias(&x)?
    } else {
        x.cast(Dtype::F32)?
    };
    // The summed axis goes last, where the product's contraction is.
    let mut perm: Vec<u32> = (0..rank as u32).filter(|&a| a as usize != axis).collect();
    perm.push(axis as u32);
    let last = axis + 1 == rank;
    let moved = if last { float } else { float.transpose(&perm)? };
    let summed = moved.matmul(&ones)?;
    let back = if last {
        summed
    } else {
        let mut inverse = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p as usize] = i as u32;
        }
        summed.transpose(&inverse)?
    };
    if dtype == Dtype::F32 {
        Ok(back)
    } else {
        back.cast(dtype)
    }
}

/// ONNX `GatherElements`: `out[i…] = x[i… with index[i…] on axis]`. Each
/// pick becomes a position in the flattened `x` (the index times the axis'
/// stride plus every other coordinate times its own), and one `gather`
/// reads them. An index outside `−n..n` becomes a position past the end, so
/// the gather fails the request instead of reading a neighbour.
pub fn gather_elements(args: &Args<'_>) -> Result<Tensor, Error> {
    let x = args.host(0)?;
    let index = args.host(1)?;
    let (xd, id) = (dims(&x), dims(&index));
    if xd.len() != id.len() {
        return Err(Error::Shape(format!(
            "GatherElements of {xd:?} by indices {id:?} (ranks differ)"
        )));
    }
    let axis = norm_axis(args.node.int("axis", 0), xd.len())?;
    let total: usize = xd.iter().product();
    if total >= EXACT {
        return Err(Error::Unsupported(format!(
            "GatherElements over {total} elements (fewer than {EXACT})"
        )));
    }
    if let Some(d) = (0..xd.len()).find(|&d| d != axis && id[d] > xd[d]) {
        return Err(Error::Shape(format!(
            "GatherElements indices {id:?} exceed {xd:?} on axis {d}"
        )));
    }
    let strides = strides(&xd);
    let dim = xd[axis] as f32;
    let scalar = |v: f32| Tensor::full(Dtype::F32, &[], f64::from(v));
    let pick = index.cast(Dtype::F32)?;
    let below = pick.compare(CompareOp::Less, &scalar(0.0)?)?;
    let pick = below.select(&pick.affine(1.0, dim)?, &pick)?;
    let mut flat = pick.affine(strides[axis] as f32, 0.0)?;
    for d in (0..id.len()).filter(|&d| d != axis && id[d] > 1) {
        let mut shape = vec![1u32; id.len()];
        shape[d] = id[d] as u32;
        let offsets: Vec<f32> = (0..id[d]).map(|c| (c * strides[d]) as f32).collect();
        flat = flat.add(&Tensor::from_f32(&shape, &offsets)?)?;
    }
    let past_end = scalar(total as f32)?;
    let flat = pick
        .compare(CompareOp::Less, &scalar(0.0)?)?
        .select(&past_end, &flat)?;
    let flat = pick
        .compare(CompareOp::GreaterEqual, &scalar(dim)?)?
        .select(&past_end, &flat)?;
    // Every position is in range by construction but the marked ones, so
    // a refusal means an index outside the axis.
    reshape(&x, &[total])?
        .gather(&flat.cast(Dtype::I64)?, 0)
        .map_err(|e| match e {
            Error::InvalidArgument(_) => Error::InvalidArgument(format!(
                "an index is outside -{dim}..{dim} (axis {axis} of {xd:?})"
            )),
            other => other,
        })
}

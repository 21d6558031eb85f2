//! ONNX `Resize` (nearest and linear) as one resampling per resized axis:
//! nearest picks source rows (`gather`), linear blends the two neighbours
//! of each output position by their distance. Applied axis by axis, linear
//! is exactly the bilinear (trilinear, …) interpolation onnxruntime
//! computes.

use edgeserve_sdk::{Error, Tensor};

use crate::host::{Args, alias, dims};
use crate::small::norm_axis;

/// Where output position `i` of `out` samples an axis of `size`, scaled by
/// `scale`, under coordinate transformation `mode`.
fn source(mode: &str, i: usize, scale: f64, size: usize, out: usize) -> Result<f64, Error> {
    let i = i as f64;
    Ok(match mode {
        "half_pixel" => (i + 0.5) / scale - 0.5,
        "pytorch_half_pixel" if out > 1 => (i + 0.5) / scale - 0.5,
        "pytorch_half_pixel" => 0.0,
        "align_corners" if out > 1 => i * (size as f64 - 1.0) / (out as f64 - 1.0),
        "align_corners" => 0.0,
        "asymmetric" => i / scale,
        "tf_half_pixel_for_nearest" => (i + 0.5) / scale,
        other => {
            return Err(Error::Unsupported(format!(
                "Resize coordinate_transformation_mode={other}"
            )));
        }
    })
}

/// The source row nearest to coordinate `x` under `nearest_mode`.
fn nearest(x: f64, mode: &str) -> Result<f64, Error> {
    let half = x.fract().abs() == 0.5;
    Ok(match mode {
        "round_prefer_floor" if half => x.floor(),
        "round_prefer_ceil" if half => x.ceil(),
        "round_prefer_floor" | "round_prefer_ceil" => x.round(),
        "floor" => x.floor(),
        "ceil" => x.ceil(),
        other => return Err(Error::Unsupported(format!("Resize nearest_mode={other}"))),
    })
}

/// ONNX `Resize`: `scales` or `sizes` must be constants or shape
/// arithmetic; modes `nearest` and `linear`, without antialiasing.
pub fn run(args: &Args<'_>, opset: i64) -> Result<Tensor, Error> {
    let node = args.node;
    let x = args.host(0)?;
    let d = dims(&x);
    let (scales_at, sizes_at) = if opset < 11 { (1, None) } else { (2, Some(3)) };
    let scales = args
        .small(scales_at)?
        .filter(|c| !c.data.is_empty())
        .map(|c| c.data.clone());
    let sizes = match sizes_at {
        Some(i) => args.ints(i)?.filter(|s| !s.is_empty()),
        None => None,
    };
    let axes: Vec<usize> = match node.ints("axes") {
        Some(axes) => axes
            .iter()
            .map(|&a| norm_axis(a, d.len()))
            .collect::<Result<_, _>>()?,
        None => (0..d.len()).collect(),
    };
    let mode = node.string("mode").unwrap_or("nearest");
    let transform = node
        .string("coordinate_transformation_mode")
        .unwrap_or("half_pixel");
    let rounding = node.string("nearest_mode").unwrap_or("round_prefer_floor");
    let mut y = alias(&x)?;
    for (k, &axis) in axes.iter().enumerate() {
        let size = d[axis];
        let (out, scale) = match (&sizes, &scales) {
            (Some(s), _) => {
                let out = *s
                    .get(k)
                    .ok_or_else(|| count_error("sizes", s.len(), &axes))?;
                (out.max(0) as usize, out as f64 / size as f64)
            }
            (None, Some(s)) => {
                let scale = *s
                    .get(k)
                    .ok_or_else(|| count_error("scales", s.len(), &axes))?;
                ((size as f64 * scale).floor().max(0.0) as usize, scale)
            }
            (None, None) => {
                return Err(Error::InvalidArgument(
                    "Resize needs scales or sizes".into(),
                ));
            }
        };
        if out == size && scale == 1.0 {
            continue;
        }
        if size == 0 || out == 0 {
            return Err(Error::Shape(format!(
                "Resize of axis {axis} from {size} to {out}"
            )));
        }
        let last = (size - 1) as f64;
        let coords = (0..out)
            .map(|i| source(transform, i, scale, size, out))
            .collect::<Result<Vec<f64>, _>>()?;
        let picks = |rows: &[f64]| -> Result<Tensor, Error> {
            let rows: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
            Tensor::from_i64(&[out as u32], &rows)
        };
        y = match mode {
            "nearest" => {
                let rows = coords
                    .iter()
                    .map(|&c| nearest(c, rounding).map(|r| r.clamp(0.0, last)))
                    .collect::<Result<Vec<f64>, _>>()?;
                y.gather(&picks(&rows)?, axis as i32)?
            }
            "linear" => {
                let clamped: Vec<f64> = coords.iter().map(|c| c.clamp(0.0, last)).collect();
                let low: Vec<f64> = clamped.iter().map(|c| c.floor()).collect();
                let high: Vec<f64> = low.iter().map(|l| (l + 1.0).min(last)).collect();
                let mut shape = vec![1u32; d.len()];
                shape[axis] = out as u32;
                let weights = |w: Vec<f32>| Tensor::from_f32(&shape, &w);
                let far: Vec<f32> = clamped
                    .iter()
                    .zip(&low)
                    .map(|(c, l)| (c - l) as f32)
                    .collect();
                let near: Vec<f32> = far.iter().map(|w| 1.0 - w).collect();
                let below = y.gather(&picks(&low)?, axis as i32)?;
                let above = y.gather(&picks(&high)?, axis as i32)?;
                below
                    .mul(&weights(near)?)?
                    .add(&above.mul(&weights(far)?)?)?
            }
            other => return Err(Error::Unsupported(format!("Resize mode={other}"))),
        };
    }
    Ok(y)
}

fn count_error(what: &str, len: usize, axes: &[usize]) -> Error {
    Error::InvalidArgument(format!("Resize has {len} {what} for {} axes", axes.len()))
}

#[cfg(test)]
mod tests {
    use super::{nearest, source};

    #[test]
    fn coordinates_follow_the_onnx_formulas() {
        // Upsampling 2 → 4 by 2: half_pixel reaches before the first row.
        let at = |mode, i| source(mode, i, 2.0, 2, 4).unwrap();
        assert_eq!(
            [0, 1, 2, 3].map(|i| at("half_pixel", i)),
            [-0.25, 0.25, 0.75, 1.25]
        );
        assert_eq!([0, 3].map(|i| at("align_corners", i)), [0.0, 1.0]);
        assert_eq!([1, 3].map(|i| at("asymmetric", i)), [0.5, 1.5]);
        assert_eq!(source("pytorch_half_pixel", 0, 0.5, 2, 1).unwrap(), 0.0);
        assert!(source("tf_crop_and_resize", 0, 2.0, 2, 4).is_err());
        assert_eq!(nearest(1.5, "round_prefer_floor").unwrap(), 1.0);
        assert_eq!(nearest(1.5, "round_prefer_ceil").unwrap(), 2.0);
        assert_eq!(nearest(1.6, "round_prefer_floor").unwrap(), 2.0);
        assert_eq!(nearest(1.6, "floor").unwrap(), 1.0);
    }
}

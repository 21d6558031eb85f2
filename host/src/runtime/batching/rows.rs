//! Requests' tensors stacked along axis 0 into one batch, and a batch's
//! outputs cut back into each request's rows.

use edgeserve_tensor::{DType, Tensor};

use crate::runtime::Value;

/// What two values must share to be stacked: the datatype (`None`:
/// BYTES) and every dim after axis 0. BYTES elements may differ in length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    dtype: Option<DType>,
    inner: Vec<usize>,
}

/// The layout and the rows (axis 0) of `value`; `None` when it has no axis
/// 0 (a scalar) or does not live in host memory.
pub(super) fn layout(value: &Value) -> Option<(Layout, usize)> {
    let (dtype, shape) = match value {
        Value::Numeric(tensor) => {
            tensor.host()?;
            (Some(tensor.dtype()), tensor.shape())
        }
        Value::Bytes { shape, .. } => (None, shape.as_slice()),
    };
    let (&rows, inner) = shape.split_first()?;
    Some((
        Layout {
            dtype,
            inner: inner.to_vec(),
        },
        rows,
    ))
}

/// Why a batch's output cannot be cut into its requests' rows.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SplitError {
    /// The output's axis 0 is not the batch.
    #[error(
        "output '{name}' has {got} rows along axis 0, but the batch has {want} \
         ([batching] in config.toml says axis 0 is the batch axis)"
    )]
    Rows {
        /// The output.
        name: String,
        /// Its axis 0.
        got: usize,
        /// The batch's rows.
        want: usize,
    },
    /// The output has no axis 0.
    #[error("output '{name}' is a scalar, with no batch axis to split")]
    Scalar {
        /// The output.
        name: String,
    },
    /// The output is not in host memory.
    #[error("output '{name}' is not in host memory")]
    NotOnHost {
        /// The output.
        name: String,
    },
}

/// `parts` stacked along axis 0. The caller has checked that they share
/// one [`Layout`] and are on the host.
pub(super) fn concat(parts: &[&Value]) -> Value {
    let rows: usize = parts.iter().map(|v| v.shape()[0]).sum();
    let mut shape = parts[0].shape().to_vec();
    shape[0] = rows;
    match parts[0] {
        Value::Numeric(first) => {
            let host = |v: &Value| match v {
                Value::Numeric(t) => t.host().map(|h| h.bytes().len()).unwrap_or(0),
                Value::Bytes { .. } => 0,
            };
            let mut bytes = Vec::with_capacity(parts.iter().map(|v| host(v)).sum());
            for part in parts {
                if let Value::Numeric(t) = part
                    && let Some(h) = t.host()
                {
                    bytes.extend_from_slice(h.bytes());
                }
            }
            Value::Numeric(
                Tensor::from_bytes(first.dtype(), &shape, &bytes)
                    .expect("parts of one layout fill the stacked shape"),
            )
        }
        Value::Bytes { .. } => {
            let mut elements = Vec::new();
            for part in parts {
                if let Value::Bytes { elements: e, .. } = part {
                    elements.extend(e.iter().cloned());
                }
            }
            Value::Bytes { shape, elements }
        }
    }
}

/// `value` (the batch's output `name`) cut along axis 0 into consecutive
/// pieces of `rows` rows each. Numeric pieces share the batch's buffer.
pub(super) fn split(name: &str, value: Value, rows: &[usize]) -> Result<Vec<Value>, SplitError> {
    let want: usize = rows.iter().sum();
    let Some((&got, inner)) = value.shape().split_first() else {
        return Err(SplitError::Scalar { name: name.into() });
    };
    if got != want {
        return Err(SplitError::Rows {
            name: name.into(),
            got,
            want,
        });
    }
    let inner = inner.to_vec();
    let per_row: usize = inner.iter().product();
    let shape_of = |n: usize| {
        let mut shape = Vec::with_capacity(inner.len() + 1);
        shape.push(n);
        shape.extend_from_slice(&inner);
        shape
    };
    match value {
        Value::Numeric(tensor) => {
            let Some(buffer) = tensor.host() else {
                return Err(SplitError::NotOnHost { name: name.into() });
            };
            let row_bytes = per_row * tensor.dtype().size();
            let mut start = 0;
            Ok(rows
                .iter()
                .map(|&n| {
                    let piece = buffer.slice(start..start + n * row_bytes);
                    start += n * row_bytes;
                    Value::Numeric(
                        Tensor::from_host(tensor.dtype(), &shape_of(n), piece)
                            .expect("a row-aligned window holds whole rows"),
                    )
                })
                .collect())
        }
        Value::Bytes { elements, .. } => {
            let mut elements = elements.into_iter();
            Ok(rows
                .iter()
                .map(|&n| Value::Bytes {
                    shape: shape_of(n),
                    elements: elements.by_ref().take(n * per_row).collect(),
                })
                .collect())
        }
    }
}

/// A numeric `value` of shape `[rows, width, ..]` without its trailing
/// columns (along axis 1) that are zero in every row: a request's piece of
/// an output padded with zeros to the batch's longest member, cut back to
/// its own longest. Anything else is returned as it is.
pub(super) fn trim_zero_columns(value: Value) -> Value {
    let Value::Numeric(tensor) = &value else {
        return value;
    };
    let (Some(buffer), [rows, width, rest @ ..]) = (tensor.host(), tensor.shape()) else {
        return value;
    };
    let column = rest.iter().product::<usize>() * tensor.dtype().size();
    let row = width * column;
    let bytes = buffer.bytes();
    let nonzero = |c: usize| {
        (0..*rows).any(|r| {
            let at = r * row + c * column;
            bytes[at..at + column].iter().any(|&b| b != 0)
        })
    };
    let Some(kept) = (0..*width).rev().find(|&c| nonzero(c)).map(|c| c + 1) else {
        return value;
    };
    if kept == *width {
        return value;
    }
    let trimmed: Vec<u8> = bytes
        .chunks_exact(row)
        .flat_map(|r| &r[..kept * column])
        .copied()
        .collect();
    let mut shape = tensor.shape().to_vec();
    shape[1] = kept;
    Value::Numeric(
        Tensor::from_bytes(tensor.dtype(), &shape, &trimmed).expect("whole rows of kept columns"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(value: &Value) -> (Vec<usize>, Vec<f32>) {
        match value {
            Value::Numeric(t) => (t.shape().to_vec(), t.host().unwrap().as_slice().to_vec()),
            Value::Bytes { .. } => panic!("not numeric"),
        }
    }

    fn strings(value: &Value) -> (Vec<usize>, Vec<&str>) {
        match value {
            Value::Bytes { shape, elements } => (
                shape.clone(),
                elements
                    .iter()
                    .map(|e| std::str::from_utf8(e).unwrap())
                    .collect(),
            ),
            Value::Numeric(_) => panic!("not BYTES"),
        }
    }

    fn bytes(shape: &[usize], items: &[&str]) -> Value {
        Value::Bytes {
            shape: shape.to_vec(),
            elements: items.iter().map(|s| s.as_bytes().to_vec()).collect(),
        }
    }

    #[test]
    fn numeric_rows_stack_and_split_back() {
        let a = Value::Numeric(Tensor::from_f32(&[1, 2, 2], vec![1., 2., 3., 4.]).unwrap());
        let b = Value::Numeric(
            Tensor::from_f32(&[2, 2, 2], (5..13).map(|x| x as f32).collect()).unwrap(),
        );
        assert_eq!(layout(&a).unwrap().0, layout(&b).unwrap().0);
        assert_eq!(layout(&b).unwrap().1, 2);
        let stacked = concat(&[&a, &b]);
        assert_eq!(
            floats(&stacked),
            (vec![3, 2, 2], (1..13).map(|x| x as f32).collect())
        );
        let pieces = split("y", stacked, &[1, 2]).unwrap();
        assert_eq!(floats(&pieces[0]), floats(&a));
        assert_eq!(floats(&pieces[1]), floats(&b));
    }

    #[test]
    fn integer_outputs_split_by_row() {
        let labels = Value::Numeric(
            Tensor::from_bytes(DType::I64, &[3], bytemuck::cast_slice(&[7i64, 8, 9])).unwrap(),
        );
        let pieces = split("label", labels, &[2, 1]).unwrap();
        let ints = |v: &Value| match v {
            Value::Numeric(t) => (
                t.shape().to_vec(),
                t.host().unwrap().as_slice::<i64>().to_vec(),
            ),
            Value::Bytes { .. } => unreachable!(),
        };
        assert_eq!(ints(&pieces[0]), (vec![2], vec![7, 8]));
        assert_eq!(ints(&pieces[1]), (vec![1], vec![9]));
    }

    #[test]
    fn bytes_of_any_length_stack_and_split_back() {
        let a = bytes(&[1], &["a much longer sentence than the other"]);
        let b = bytes(&[2], &["", "é"]);
        assert_eq!(layout(&a).unwrap().0, layout(&b).unwrap().0);
        let stacked = concat(&[&a, &b]);
        assert_eq!(
            strings(&stacked),
            (
                vec![3],
                vec!["a much longer sentence than the other", "", "é"]
            )
        );
        let pieces = split("text", stacked, &[1, 2]).unwrap();
        assert_eq!(strings(&pieces[0]), strings(&a));
        assert_eq!(strings(&pieces[1]), strings(&b));
        // Rows of two BYTES elements each.
        let wide = split("pairs", bytes(&[2, 2], &["a", "b", "c", "d"]), &[1, 1]).unwrap();
        assert_eq!(strings(&wide[1]), (vec![1, 2], vec!["c", "d"]));
    }

    #[test]
    fn layouts_differ_by_dtype_and_inner_dims_but_not_rows() {
        let f = |shape: &[usize]| {
            Value::Numeric(Tensor::from_f32(shape, vec![0.0; shape.iter().product()]).unwrap())
        };
        assert_eq!(
            layout(&f(&[1, 7])).unwrap().0,
            layout(&f(&[3, 7])).unwrap().0
        );
        assert_ne!(
            layout(&f(&[1, 7])).unwrap().0,
            layout(&f(&[1, 10])).unwrap().0
        );
        assert_ne!(
            layout(&f(&[2])).unwrap().0,
            layout(&bytes(&[2], &["a", "b"])).unwrap().0
        );
        assert_ne!(
            layout(&bytes(&[1, 2], &["a", "b"])).unwrap().0,
            layout(&bytes(&[2], &["a", "b"])).unwrap().0
        );
        assert!(layout(&f(&[])).is_none(), "a scalar has no batch axis");
    }

    #[test]
    fn an_output_whose_axis_0_is_not_the_batch_is_refused() {
        let value = Value::Numeric(Tensor::from_f32(&[2, 3], vec![0.0; 6]).unwrap());
        assert_eq!(
            split("logits", value, &[1, 2]).unwrap_err(),
            SplitError::Rows {
                name: "logits".into(),
                got: 2,
                want: 3
            }
        );
        let scalar = Value::Numeric(Tensor::from_f32(&[], vec![0.0]).unwrap());
        assert_eq!(
            split("loss", scalar, &[1]).unwrap_err(),
            SplitError::Scalar {
                name: "loss".into()
            }
        );
    }

    #[test]
    fn zero_padding_is_cut_back_to_a_members_longest_row() {
        let ids = |shape: &[usize], data: Vec<i64>| {
            let bytes: Vec<u8> = data.iter().flat_map(|v: &i64| v.to_le_bytes()).collect();
            Value::Numeric(Tensor::from_bytes(DType::I64, shape, &bytes).unwrap())
        };
        let ints = |value: &Value| match value {
            Value::Numeric(t) => (
                t.shape().to_vec(),
                t.host().unwrap().as_slice::<i64>().to_vec(),
            ),
            Value::Bytes { .. } => panic!("not numeric"),
        };
        // A batch's token ids, padded to its longest member (5): the first
        // member's rows are 3 and 2 long, the second's 5.
        let batch = ids(
            &[3, 5],
            vec![101, 7, 102, 0, 0, 101, 102, 0, 0, 0, 101, 1, 2, 3, 102],
        );
        let pieces = split("input_ids", batch, &[2, 1]).unwrap();
        let trimmed: Vec<_> = pieces.into_iter().map(trim_zero_columns).collect();
        assert_eq!(
            ints(&trimmed[0]),
            (vec![2, 3], vec![101, 7, 102, 101, 102, 0])
        );
        assert_eq!(ints(&trimmed[1]), (vec![1, 5], vec![101, 1, 2, 3, 102]));
        // Nothing to cut: all zero, no axis 1, or BYTES.
        let zeros = ids(&[1, 2], vec![0, 0]);
        assert_eq!(ints(&trim_zero_columns(zeros)), (vec![1, 2], vec![0, 0]));
        assert_eq!(
            ints(&trim_zero_columns(ids(&[2], vec![5, 0]))),
            (vec![2], vec![5, 0])
        );
        let text = bytes(&[1, 2], &["a", ""]);
        assert_eq!(
            strings(&trim_zero_columns(text)),
            (vec![1, 2], vec!["a", ""])
        );
    }
}

//! Requests, outputs and metadata: the types a [`Model`](crate::Model) works
//! with at its boundary.

use std::ops::RangeBounds;

use crate::bindings::edgeserve::handler::types::{InferRequest, NamedTensor};
use crate::parameter::{self, FromParameter, Shown};
use crate::{BytesTensor, InferError, ParameterValue, Tensor, TensorData, TensorMetadata};

/// One input or output in a model's metadata: name, OIP datatype and shape.
///
/// ```
/// use edgeserve_sdk::TensorSpec;
/// let x = TensorSpec::new("x", "FP32", &[-1, 1]);
/// assert_eq!(x.shape, [-1, 1]);
/// ```
pub type TensorSpec = TensorMetadata;

impl TensorMetadata {
    /// A spec named `name` with OIP `datatype` (`"FP32"`, `"FP16"`, `"INT32"`,
    /// `"INT64"`, `"UINT8"` or `"BYTES"`) and `shape`, where `-1` accepts any
    /// size.
    pub fn new(name: impl Into<String>, datatype: impl Into<String>, shape: &[i64]) -> Self {
        TensorMetadata {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
        }
    }
}

/// One named output of [`Model::infer`](crate::Model::infer).
pub type Output = NamedTensor;

impl NamedTensor {
    /// A numeric output: the host reads `tensor` when it encodes the response.
    pub fn numeric(name: impl Into<String>, tensor: Tensor) -> Self {
        NamedTensor {
            name: name.into(),
            data: TensorData::Numeric(tensor),
        }
    }

    /// A BYTES output (text, encoded images…) of `shape`, `elements` in
    /// row-major order.
    pub fn bytes<E: Into<Vec<u8>>>(
        name: impl Into<String>,
        shape: &[u32],
        elements: impl IntoIterator<Item = E>,
    ) -> Self {
        NamedTensor {
            name: name.into(),
            data: TensorData::Bytes(BytesTensor::new(shape, elements)),
        }
    }
}

impl BytesTensor {
    /// A BYTES tensor of `shape` with `elements` in row-major order.
    pub fn new<E: Into<Vec<u8>>>(shape: &[u32], elements: impl IntoIterator<Item = E>) -> Self {
        BytesTensor {
            shape: shape.to_vec(),
            elements: elements.into_iter().map(Into::into).collect(),
        }
    }

    /// The elements as UTF-8 text; a non-UTF-8 element is an
    /// [`InferError::InvalidInput`].
    pub fn strings(&self) -> Result<Vec<&str>, InferError> {
        self.elements
            .iter()
            .enumerate()
            .map(|(i, e)| {
                std::str::from_utf8(e).map_err(|err| {
                    InferError::InvalidInput(format!("BYTES element {i} is not UTF-8: {err}"))
                })
            })
            .collect()
    }
}

impl ParameterValue {
    /// The value if it is a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ParameterValue::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The value if it is an integer (or a double with no fractional part).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ParameterValue::Integer(i) => Some(*i),
            ParameterValue::Double(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Some(*d as i64),
            _ => None,
        }
    }

    /// The value if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParameterValue::Double(d) => Some(*d),
            ParameterValue::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The value if it is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ParameterValue::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// One inference request: named inputs and request parameters.
///
/// The host has already checked the inputs against the model's metadata
/// (names, datatypes, shapes), so a handler can fetch them with `?`:
///
/// ```no_run
/// # use edgeserve_sdk::{InferError, Request};
/// # fn infer(request: Request) -> Result<(), InferError> {
/// let x = request.numeric("x")?;
/// let prompt = request.bytes("text")?.strings()?;
/// let max_tokens = request
///     .parameter_in_range::<u32>("max_tokens", 1..=256)?
///     .unwrap_or(16);
/// # Ok(()) }
/// ```
pub struct Request {
    inputs: Vec<NamedTensor>,
    parameters: Vec<(String, ParameterValue)>,
    outputs: Option<Vec<String>>,
}

impl Request {
    pub(crate) fn new(request: InferRequest) -> Self {
        Request {
            inputs: request.inputs,
            parameters: request.parameters,
            outputs: request.outputs,
        }
    }

    /// Whether the client wants output `name`: it named it in the request's
    /// `outputs`, or named none (then it gets all). Outputs it does not want
    /// need not be computed: the host would drop them.
    pub fn wants(&self, name: &str) -> bool {
        self.requested_outputs().is_none() || self.names_output(name)
    }

    /// Whether the client named output `name` in the request's `outputs`;
    /// false when it named none. Optional outputs that a client must ask
    /// for can key off this.
    pub fn names_output(&self, name: &str) -> bool {
        self.requested_outputs()
            .is_some_and(|outputs| outputs.iter().any(|o| o == name))
    }

    /// The outputs the client named in the request's `outputs`; `None` when
    /// it named none. Optional, costly outputs can key off this.
    pub fn requested_outputs(&self) -> Option<&[String]> {
        self.outputs.as_deref()
    }

    /// The input called `name`, if the request has one.
    pub fn input(&self, name: &str) -> Option<&TensorData> {
        self.inputs
            .iter()
            .find(|input| input.name == name)
            .map(|input| &input.data)
    }

    /// Every input, in request order.
    pub fn inputs(&self) -> impl Iterator<Item = (&str, &TensorData)> {
        self.inputs.iter().map(|i| (i.name.as_str(), &i.data))
    }

    /// The numeric input called `name`. Missing, or a BYTES input of that
    /// name, is an [`InferError::InvalidInput`] naming it.
    pub fn numeric(&self, name: &str) -> Result<&Tensor, InferError> {
        self.input_as(name, |data| match data {
            TensorData::Numeric(t) => Some(t),
            TensorData::Bytes(_) => None,
        })
    }

    /// Moves the numeric input called `name` out of the request (to return
    /// it as an output, say); later lookups of `name` find nothing.
    pub fn take_numeric(&mut self, name: &str) -> Result<Tensor, InferError> {
        self.numeric(name)?;
        let index = self
            .inputs
            .iter()
            .position(|i| i.name == name)
            .ok_or_else(|| missing(name))?;
        match self.inputs.remove(index).data {
            TensorData::Numeric(t) => Ok(t),
            TensorData::Bytes(_) => unreachable!("checked by numeric()"),
        }
    }

    /// The BYTES input called `name`. Missing, or a numeric input of that
    /// name, is an [`InferError::InvalidInput`] naming it.
    pub fn bytes(&self, name: &str) -> Result<&BytesTensor, InferError> {
        self.input_as(name, |data| match data {
            TensorData::Bytes(b) => Some(b),
            TensorData::Numeric(_) => None,
        })
    }

    /// The input called `name`, picked out of its [`TensorData`] by `pick`;
    /// missing, or of the kind `pick` refuses, is an
    /// [`InferError::InvalidInput`] naming it.
    fn input_as<'a, T>(
        &'a self,
        name: &str,
        pick: impl FnOnce(&'a TensorData) -> Option<&'a T>,
    ) -> Result<&'a T, InferError> {
        let data = self.input(name).ok_or_else(|| missing(name))?;
        pick(data).ok_or_else(|| {
            // There are two kinds, so the one wanted is the one not given.
            let (wanted, given) = match data {
                TensorData::Numeric(_) => ("BYTES", "numeric"),
                TensorData::Bytes(_) => ("numeric", "BYTES"),
            };
            InferError::InvalidInput(format!("input '{name}' must be {wanted}, not {given}"))
        })
    }

    /// The request parameter called `key` (OIP `parameters`), if given.
    pub fn parameter(&self, key: &str) -> Option<&ParameterValue> {
        self.parameters
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The request parameter `key` read as `T`; `None` when the request does
    /// not set it. A value of another kind is an [`InferError::InvalidInput`]
    /// such as `parameter seed must be an integer, got ParameterValue::Text("abc")`.
    pub fn parameter_as<T: FromParameter>(&self, key: &str) -> Result<Option<T>, InferError> {
        self.parameter_in_range(key, ..)
    }

    /// [`Request::parameter_as`], and the value must lie in `range`, else the
    /// request is an [`InferError::InvalidInput`] naming the key, the range
    /// and the value: `parameter_in_range::<u32>("k", 1..=50)` refuses `0` with
    /// `parameter k must be an integer in 1..=50, got ParameterValue::Integer(0)`. A range
    /// that excludes its start is a pair of bounds:
    /// `(Bound::Excluded(0.0), Bound::Included(1.0))` is `(0, 1]`.
    pub fn parameter_in_range<T: FromParameter>(
        &self,
        key: &str,
        range: impl RangeBounds<T>,
    ) -> Result<Option<T>, InferError> {
        self.parameter(key)
            .map(|value| {
                parameter::check(
                    "parameter",
                    key,
                    &Shown(value),
                    T::from_value(value),
                    &range,
                )
                .map_err(InferError::InvalidInput)
            })
            .transpose()
    }

    /// Every value of the repeatable text parameter `key` (stop sequences,
    /// say), in request order; a value that is not text is an
    /// [`InferError::InvalidInput`] naming the key.
    pub fn parameter_strings(&self, key: &str) -> Result<Vec<&str>, InferError> {
        self.parameters
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, value)| {
                value.as_str().ok_or_else(|| {
                    InferError::InvalidInput(format!(
                        "parameter {key} must be text, got {:?}",
                        Shown(value)
                    ))
                })
            })
            .collect()
    }

    /// Every request parameter, in request order.
    pub fn parameters(&self) -> impl Iterator<Item = (&str, &ParameterValue)> {
        self.parameters.iter().map(|(k, v)| (k.as_str(), v))
    }
}

fn missing(name: &str) -> InferError {
    InferError::InvalidInput(format!("missing input '{name}'"))
}

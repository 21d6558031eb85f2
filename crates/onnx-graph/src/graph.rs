//! The serialised graph: values, constants and nodes in topological order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An element type, as ONNX names it (`TensorProto.DataType`), restricted to
/// the ones a graph asset can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DType {
    /// 32-bit float (`FLOAT`).
    F32,
    /// 16-bit float (`FLOAT16`).
    F16,
    /// 32-bit signed integer (`INT32`).
    I32,
    /// 64-bit signed integer (`INT64`).
    I64,
    /// 8-bit unsigned integer (`UINT8`).
    U8,
    /// Boolean (`BOOL`): only for constants and shape arithmetic.
    Bool,
}

impl DType {
    /// The ONNX `TensorProto.DataType` code of this type.
    pub fn onnx_code(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::U8 => 2,
            DType::I32 => 6,
            DType::I64 => 7,
            DType::Bool => 9,
            DType::F16 => 10,
        }
    }

    /// The type for an ONNX `TensorProto.DataType` code, if a graph asset
    /// can hold it.
    pub fn from_onnx(code: i32) -> Option<DType> {
        Some(match code {
            1 => DType::F32,
            2 => DType::U8,
            6 => DType::I32,
            7 => DType::I64,
            9 => DType::Bool,
            10 => DType::F16,
            _ => return None,
        })
    }

    /// The Open Inference Protocol datatype, for the types a request or
    /// response can carry.
    pub fn oip_name(self) -> Option<&'static str> {
        Some(match self {
            DType::F32 => "FP32",
            DType::F16 => "FP16",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
            DType::U8 => "UINT8",
            DType::Bool => return None,
        })
    }
}

/// A graph input or output: name, element type and dims (`-1` for a
/// symbolic or unknown dim).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueSpec {
    /// The value's name in the graph.
    pub name: String,
    /// Its element type.
    pub dtype: DType,
    /// Its dims, outermost first; `-1` accepts any size.
    pub shape: Vec<i64>,
    /// Per dim, the name of a symbolic one (ONNX's `dim_param`: `batch`,
    /// `sequence`); empty when none is named. Inputs that name a dim alike
    /// must agree on its size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbols: Vec<Option<String>>,
}

/// A small constant kept inline (shape arithmetic, axes, scalars).
///
/// Values are held as `f64`: exact for every float32 and for integers up to
/// 2⁵³; larger integers (ONNX's `INT64_MAX` "to the end" in `Slice`)
/// saturate back to `i64::MAX` when read as integers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constant {
    /// Element type.
    pub dtype: DType,
    /// Dims, outermost first (empty for a scalar).
    pub shape: Vec<usize>,
    /// Elements, row-major.
    #[serde(with = "json_floats")]
    pub data: Vec<f64>,
}

/// JSON has no infinities or NaN (serde_json writes them as `null`, which
/// then fails to load), so constant data writes those as the strings
/// `"inf"`, `"-inf"` and `"nan"`: exporters put `-inf` in attention masks.
mod json_floats {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Float {
        Number(f64),
        Named(String),
    }

    pub fn serialize<S: Serializer>(data: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(data.iter().map(|&v| match v {
            v if v.is_finite() => Float::Number(v),
            v if v.is_nan() => Float::Named("nan".into()),
            v if v > 0.0 => Float::Named("inf".into()),
            _ => Float::Named("-inf".into()),
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Vec::<Float>::deserialize(d)?
            .into_iter()
            .map(|f| match f {
                Float::Number(v) => Ok(v),
                Float::Named(name) => match name.as_str() {
                    "inf" => Ok(f64::INFINITY),
                    "-inf" => Ok(f64::NEG_INFINITY),
                    "nan" => Ok(f64::NAN),
                    _ => Err(D::Error::custom(format!(
                        "{name:?} is not a number (only \"inf\", \"-inf\" and \"nan\" may be written as strings)"
                    ))),
                },
            })
            .collect()
    }
}

/// A node attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Attr {
    /// `INT`.
    Int(i64),
    /// `FLOAT`.
    Float(f32),
    /// `STRING` (as UTF-8; ONNX strings in op attributes are ASCII words).
    String(String),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `FLOATS`.
    Floats(Vec<f32>),
    /// `STRINGS` (as UTF-8, like `STRING`).
    Strings(Vec<String>),
    /// `TENSOR`, when small enough to stay inline.
    Tensor(Constant),
    /// Any other kind (a subgraph, strings…): kept by name so validation
    /// can name it.
    Other(String),
}

/// One node: an ONNX op with its inputs, outputs and attributes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The node's name (made unique by the importer when the export left
    /// it empty).
    pub name: String,
    /// The op type, with its domain when not the default one
    /// (`ai.onnx.ml.ArrayFeatureExtractor`).
    pub op: String,
    /// Input value names; an empty name is an omitted optional input.
    pub inputs: Vec<String>,
    /// Output value names.
    pub outputs: Vec<String>,
    /// Attributes by name.
    #[serde(default)]
    pub attrs: BTreeMap<String, Attr>,
}

impl Node {
    /// Integer attribute `name`, or `default`.
    pub fn int(&self, name: &str, default: i64) -> i64 {
        match self.attrs.get(name) {
            Some(Attr::Int(v)) => *v,
            _ => default,
        }
    }

    /// Float attribute `name`, or `default`.
    pub fn float(&self, name: &str, default: f32) -> f32 {
        match self.attrs.get(name) {
            Some(Attr::Float(v)) => *v,
            _ => default,
        }
    }

    /// Integer-list attribute `name`, if present.
    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        match self.attrs.get(name) {
            Some(Attr::Ints(v)) => Some(v),
            _ => None,
        }
    }

    /// String attribute `name`, if present.
    pub fn string(&self, name: &str) -> Option<&str> {
        match self.attrs.get(name) {
            Some(Attr::String(v)) => Some(v),
            _ => None,
        }
    }

    /// Input `i` when present and not omitted (`""`).
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// An imported graph, as `graph.json` holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// The default-domain opset the model was exported with.
    pub opset: i64,
    /// Graph inputs, in declaration order (initializers excluded).
    pub inputs: Vec<ValueSpec>,
    /// Graph outputs, in declaration order.
    pub outputs: Vec<ValueSpec>,
    /// Values stored as weights in `model.safetensors`, by name.
    pub weights: Vec<String>,
    /// Small constants kept inline, by value name.
    pub constants: BTreeMap<String, Constant>,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_with_infinities_and_nan_round_trip_through_json() {
        let c = Constant {
            dtype: DType::F32,
            shape: vec![5],
            data: vec![1.5, f64::NEG_INFINITY, f64::INFINITY, f64::NAN, -0.25],
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#"[1.5,"-inf","inf","nan",-0.25]"#), "{json}");
        let back: Constant = serde_json::from_str(&json).unwrap();
        assert_eq!(back.data[..3], c.data[..3]);
        assert!(back.data[3].is_nan());
        assert_eq!(back.data[4], -0.25);
        let bad = json.replace(r#""nan""#, r#""many""#);
        let err = serde_json::from_str::<Constant>(&bad).unwrap_err();
        assert!(
            err.to_string().contains("\"many\" is not a number"),
            "{err}"
        );
    }
}

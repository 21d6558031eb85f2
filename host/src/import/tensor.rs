//! ONNX tensors (initializers, `Constant` values) decoded to little-endian
//! bytes of a graph-asset element type.

use edgeserve_onnx_graph::{Constant, DType};
use half::f16;

use super::ImportError;
use super::proto::TensorProto;

/// A decoded tensor.
#[derive(Clone, Debug)]
pub struct Raw {
    /// Element type.
    pub dtype: DType,
    /// Dims, outermost first.
    pub dims: Vec<usize>,
    /// Elements as little-endian bytes.
    pub bytes: Vec<u8>,
}

/// Constants of at most this many elements stay inline in `graph.json`;
/// larger float tensors become weights. Integer tensors are shape arithmetic
/// and indices, inline up to [`MAX_INLINE_INTS`].
const MAX_INLINE_FLOATS: usize = 16;
const MAX_INLINE_INTS: usize = 4096;

impl Raw {
    /// Decodes `t`, refusing external data and element types the handler
    /// cannot hold.
    pub fn decode(t: &TensorProto) -> Result<Raw, ImportError> {
        if t.data_location == 1 || !t.external_data.is_empty() {
            let location = t
                .external_data
                .iter()
                .find(|e| e.key == "location")
                .map_or("an external file", |e| e.value.as_str());
            return Err(ImportError::ExternalData {
                tensor: t.name.clone(),
                location: location.to_string(),
            });
        }
        let dtype = DType::from_onnx(t.data_type).ok_or_else(|| ImportError::Dtype {
            tensor: t.name.clone(),
            code: t.data_type,
        })?;
        let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        let numel: usize = dims.iter().product();
        let bytes = if !t.raw_data.is_empty() {
            t.raw_data.clone()
        } else {
            match dtype {
                DType::F32 => t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                DType::I64 => t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                DType::I32 => t.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                // ONNX keeps these in int32_data, one element per entry.
                DType::F16 => t
                    .int32_data
                    .iter()
                    .flat_map(|&v| (v as u16).to_le_bytes())
                    .collect(),
                DType::U8 | DType::Bool => t.int32_data.iter().map(|&v| v as u8).collect(),
            }
        };
        if bytes.len() != numel * size(dtype) {
            return Err(ImportError::Corrupt(format!(
                "tensor {:?} of dims {dims:?} holds {} bytes, not {}",
                t.name,
                bytes.len(),
                numel * size(dtype)
            )));
        }
        Ok(Raw { dtype, dims, bytes })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// Whether this stays inline in the graph rather than in the weights.
    pub fn inline(&self) -> bool {
        match self.dtype {
            DType::F32 | DType::F16 => self.numel() <= MAX_INLINE_FLOATS,
            DType::Bool => true,
            DType::I32 | DType::I64 | DType::U8 => self.numel() <= MAX_INLINE_INTS,
        }
    }

    /// The elements as `f64`.
    pub fn values(&self) -> Vec<f64> {
        let chunks = self.bytes.chunks_exact(size(self.dtype));
        match self.dtype {
            DType::F32 => chunks
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            DType::F16 => chunks
                .map(|c| f16::from_le_bytes(c.try_into().unwrap()).to_f64())
                .collect(),
            DType::I32 => chunks
                .map(|c| f64::from(i32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            DType::I64 => chunks
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            DType::U8 | DType::Bool => self.bytes.iter().map(|&b| f64::from(b)).collect(),
        }
    }

    /// The elements as `f32` (for folding float weights).
    pub fn floats(&self) -> Vec<f32> {
        self.values().into_iter().map(|v| v as f32).collect()
    }

    /// A float tensor of `dims` holding `values`.
    pub fn from_floats(dims: Vec<usize>, values: &[f32]) -> Raw {
        Raw {
            dtype: DType::F32,
            dims,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// An i64 tensor of `dims` holding `values`.
    pub fn from_ints(dims: Vec<usize>, values: &[i64]) -> Raw {
        Raw {
            dtype: DType::I64,
            dims,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// This tensor as an inline constant.
    pub fn constant(&self) -> Constant {
        Constant {
            dtype: self.dtype,
            shape: self.dims.clone(),
            data: self.values(),
        }
    }

    /// The safetensors element type of this tensor.
    pub fn safetensors_dtype(&self) -> safetensors::Dtype {
        match self.dtype {
            DType::F32 => safetensors::Dtype::F32,
            DType::F16 => safetensors::Dtype::F16,
            DType::I32 => safetensors::Dtype::I32,
            DType::I64 => safetensors::Dtype::I64,
            DType::U8 => safetensors::Dtype::U8,
            DType::Bool => safetensors::Dtype::BOOL,
        }
    }
}

/// Bytes per element.
fn size(dtype: DType) -> usize {
    match dtype {
        DType::F32 | DType::I32 => 4,
        DType::F16 => 2,
        DType::I64 => 8,
        DType::U8 | DType::Bool => 1,
    }
}

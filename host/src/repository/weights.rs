//! Model weights, memory-mapped from a safetensors file once per model.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use edgeserve_tensor::{DType, HostBuffer, Tensor};
use safetensors::SafeTensors;

use super::RepositoryError;

/// Every tensor of a safetensors file, as host tensors that borrow the
/// memory map (no copy unless a tensor is misaligned for its dtype).
#[derive(Clone, Default)]
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
}

impl Weights {
    /// Maps `path` and indexes its tensors.
    pub fn open(path: &Path) -> Result<Weights, RepositoryError> {
        let io = |source| RepositoryError::Io {
            path: path.to_owned(),
            source,
        };
        let invalid = |message: String| RepositoryError::Weights {
            path: path.to_owned(),
            message,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; edgeserve never writes model files while
        // serving them, and a repository `load` maps a fresh copy.
        let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?);
        let parsed = SafeTensors::deserialize(&map).map_err(|e| invalid(e.to_string()))?;
        let base = map.as_ptr() as usize;
        let mut tensors = BTreeMap::new();
        for (name, view) in parsed.tensors() {
            let dtype_name = format!("{:?}", view.dtype());
            let dtype = DType::from_safetensors(&dtype_name).ok_or_else(|| {
                invalid(format!(
                    "tensor '{name}' has dtype {dtype_name}; edgeserve carries F32, F16, I32, I64 and U8"
                ))
            })?;
            let start = view.data().as_ptr() as usize - base;
            let range = start..start + view.data().len();
            let buffer = HostBuffer::mapped(map.clone(), range, dtype)
                .unwrap_or_else(|| HostBuffer::copy_from_bytes(dtype, view.data()));
            let tensor = Tensor::from_host(dtype, view.shape(), buffer)
                .map_err(|e| invalid(format!("tensor '{name}': {e}")))?
                .into_weight();
            tensors.insert(name, tensor);
        }
        Ok(Weights { tensors })
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Total size of all tensors in bytes.
    pub fn byte_len(&self) -> usize {
        self.tensors.values().map(Tensor::byte_len).sum()
    }

    /// The same weights with every tensor passed through `f` (e.g. an upload
    /// to a device), failing on the first error.
    pub fn try_map<E>(
        &self,
        mut f: impl FnMut(&Tensor) -> Result<Tensor, E>,
    ) -> Result<Weights, E> {
        let tensors = self
            .tensors
            .iter()
            .map(|(name, t)| Ok((name.clone(), f(t)?)))
            .collect::<Result<_, E>>()?;
        Ok(Weights { tensors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_tensors_without_copying_and_reads_their_values() {
        let dir = std::env::temp_dir().join(format!("edgeserve-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        let w: Vec<u8> = [1.5f32, -2.0, 3.25, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let ids: Vec<u8> = [7i64, 9].iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = [
            (
                "w",
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &w)
                    .unwrap(),
            ),
            (
                "ids",
                safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![2], &ids)
                    .unwrap(),
            ),
        ];
        safetensors::serialize_to_file(views, None, &path).unwrap();

        let weights = Weights::open(&path).unwrap();
        assert_eq!(weights.names().collect::<Vec<_>>(), ["ids", "w"]);
        let t = weights.get("w").unwrap();
        assert_eq!(t.shape(), [2, 2]);
        assert_eq!(t.host().unwrap().as_slice::<f32>(), [1.5, -2.0, 3.25, 4.0]);
        assert!(t.is_weight(), "backends would repack it on every call");
        assert_eq!(
            weights
                .get("ids")
                .unwrap()
                .host()
                .unwrap()
                .as_slice::<i64>(),
            [7, 9]
        );
        assert_eq!(weights.byte_len(), 32);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_file_names_itself() {
        let dir = std::env::temp_dir().join(format!("edgeserve-badweights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        std::fs::write(&path, b"not a safetensors file").unwrap();
        let err = Weights::open(&path).err().unwrap().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

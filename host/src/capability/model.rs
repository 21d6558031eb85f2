//! The contract's `model` interface: the weights, parameters and assets of
//! the model an instance serves, as its [`ModelContext`](crate::runtime::ModelContext)
//! got them from the repository.

use edgeserve_tensor::TensorError;
use wasmtime::component::Resource;

use crate::runtime::bindings::{HostError, ModelHost};
use crate::runtime::state::{InstanceState, TensorHandle};

impl ModelHost for InstanceState {
    fn weight(&mut self, name: String) -> Result<Resource<TensorHandle>, HostError> {
        let model = self.model();
        let Some(tensor) = model.weights.get(&name).cloned() else {
            let known: Vec<&str> = model.weights.names().take(20).collect();
            return Err(TensorError::InvalidArgument(format!(
                "model {} has no weight '{name}' (it has: {})",
                model.label,
                known.join(", ")
            ))
            .into());
        };
        Ok(self.lend_weight(tensor)?)
    }

    fn weight_names(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.model().weights.names().map(str::to_owned).collect())
    }

    fn parameter(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.model().files.parameter(&key).map(str::to_owned))
    }

    fn asset(&mut self, name: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.model().files.asset(&name))
    }
}

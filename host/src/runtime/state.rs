//! The data of one instance's store: its WASI context, the tensors it holds
//! and what they count against its caps.

use std::sync::Arc;

use edgeserve_tensor::{self as et, Budget, Ops, Tensor, TensorError};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::context::ModelContext;
use super::limits::Limiter;
use crate::capability::OutputSink;

/// A guest's handle on a host tensor, with the bytes it is charged for
/// (zero for shared weights, which no instance owns).
pub struct TensorHandle {
    tensor: Tensor,
    charged: usize,
}

/// The data of one instance's store.
pub struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory caps, consulted by wasmtime through `Store::limiter`.
    pub limiter: Limiter,
    model: Arc<ModelContext>,
    /// Where the request being served streams its output, when it does.
    pub(crate) output: Option<OutputSink>,
    live_tensors: usize,
    live_bytes: usize,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl InstanceState {
    /// State for a new instance of `model`.
    pub fn new(wasi: WasiCtx, model: Arc<ModelContext>, memory_limit: usize) -> InstanceState {
        InstanceState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(memory_limit),
            model,
            output: None,
            live_tensors: 0,
            live_bytes: 0,
        }
    }

    /// The model this instance serves.
    pub fn model(&self) -> &Arc<ModelContext> {
        &self.model
    }

    /// Hands `tensor` to the guest, charging its bytes against the cap.
    pub fn push_tensor(&mut self, tensor: Tensor) -> Result<Resource<TensorHandle>, TensorError> {
        self.push(tensor, true)
    }

    /// Hands a shared weight to the guest: it counts against the handle cap
    /// but not the byte cap, since no instance owns it.
    pub(crate) fn lend_weight(
        &mut self,
        tensor: Tensor,
    ) -> Result<Resource<TensorHandle>, TensorError> {
        self.push(tensor, false)
    }

    /// Takes back a tensor the guest returned.
    pub fn take_tensor(&mut self, handle: Resource<TensorHandle>) -> wasmtime::Result<Tensor> {
        let handle = self.table.delete(handle)?;
        self.live_tensors -= 1;
        self.live_bytes -= handle.charged;
        Ok(handle.tensor)
    }

    fn push(
        &mut self,
        tensor: Tensor,
        charge: bool,
    ) -> Result<Resource<TensorHandle>, TensorError> {
        let model = &self.model;
        if self.live_tensors >= model.max_tensors {
            return Err(TensorError::OutOfMemory(format!(
                "model {} holds {} tensors, its limit (max_tensors)",
                model.label, model.max_tensors
            )));
        }
        let charged = if charge { tensor.byte_len() } else { 0 };
        if self.live_bytes + charged > model.max_tensor_bytes {
            return Err(TensorError::OutOfMemory(format!(
                "a {} byte tensor would take model {} past its {} MiB of live tensors (max_tensor_mib)",
                charged,
                model.label,
                model.max_tensor_bytes >> 20
            )));
        }
        let handle = self
            .table
            .push(TensorHandle { tensor, charged })
            .map_err(|e| TensorError::OutOfMemory(e.to_string()))?;
        self.live_tensors += 1;
        self.live_bytes += charged;
        Ok(handle)
    }

    /// The tensor operations on this model's backend, with results charged
    /// to this instance.
    pub(crate) fn ops(&self) -> Ops<'_> {
        Ops::new(self.model.backend.as_ref(), self)
    }

    /// The tensor behind a guest's handle; a stale handle traps.
    pub(crate) fn get(&self, handle: &Resource<TensorHandle>) -> wasmtime::Result<Tensor> {
        Ok(self.table.get(handle)?.tensor.clone())
    }

    /// The tensors behind several handles.
    pub(crate) fn tensors(
        &self,
        handles: &[Resource<TensorHandle>],
    ) -> wasmtime::Result<Vec<Tensor>> {
        handles.iter().map(|h| self.get(h)).collect()
    }

    /// The tensor behind an optional handle.
    pub(crate) fn opt(
        &self,
        handle: &Option<Resource<TensorHandle>>,
    ) -> wasmtime::Result<Option<Tensor>> {
        handle.as_ref().map(|h| self.get(h)).transpose()
    }
}

impl Budget for InstanceState {
    /// Refuses results larger than what the instance may still hold, before
    /// the backend allocates them.
    fn reserve(&self, bytes: usize) -> et::Result<()> {
        if self.live_bytes.saturating_add(bytes) > self.model.max_tensor_bytes {
            return Err(TensorError::OutOfMemory(format!(
                "a {bytes} byte result would take model {} past its {} MiB of live tensors (max_tensor_mib)",
                self.model.label,
                self.model.max_tensor_bytes >> 20
            )));
        }
        Ok(())
    }
}

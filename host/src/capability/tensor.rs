//! The contract's `tensor` interface: each operation looks up its operands'
//! handles and makes one call into the tensor crate's [`Ops`] front door.

use edgeserve_tensor::{self as et, Ops, Tensor};
use wasmtime::component::Resource;

use crate::runtime::bindings::{HostError, wit};
use crate::runtime::state::{InstanceState, TensorHandle};

type Handle = Resource<TensorHandle>;
type OpResult = Result<Handle, HostError>;

impl InstanceState {
    /// Runs an op charged to this instance and hands the result to the guest.
    fn op(&mut self, f: impl FnOnce(Ops<'_>) -> et::Result<Tensor>) -> OpResult {
        let tensor = f(self.ops())?;
        Ok(self.push_tensor(tensor)?)
    }

    /// Hands an op's several results to the guest: all of them, or none
    /// (a handle already made is taken back when a later one fails).
    fn push_all<const N: usize>(&mut self, results: [Tensor; N]) -> Result<[Handle; N], HostError> {
        let mut pushed = Vec::with_capacity(N);
        for t in results {
            match self.push_tensor(t) {
                Ok(handle) => pushed.push(handle),
                Err(e) => {
                    for handle in pushed {
                        self.take_tensor(handle)?;
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(pushed
            .try_into()
            .unwrap_or_else(|_| unreachable!("{N} pushed")))
    }
}

fn dims(shape: &[u32]) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}

fn pair((a, b): (u32, u32)) -> (usize, usize) {
    (a as usize, b as usize)
}

impl wit::HostTensor for InstanceState {
    fn from_bytes(&mut self, dtype: wit::Dtype, shape: Vec<u32>, data: Vec<u8>) -> OpResult {
        let shape = dims(&shape);
        self.op(|ops| ops.from_bytes(dtype.into(), &shape, &data))
    }

    fn full(&mut self, dtype: wit::Dtype, shape: Vec<u32>, value: f64) -> OpResult {
        let shape = dims(&shape);
        self.op(|ops| ops.full(dtype.into(), &shape, value))
    }

    fn shape(&mut self, this: Handle) -> wasmtime::Result<Vec<u32>> {
        Ok(self.get(&this)?.shape().iter().map(|&d| d as u32).collect())
    }

    fn dtype(&mut self, this: Handle) -> wasmtime::Result<wit::Dtype> {
        Ok(self.get(&this)?.dtype().into())
    }

    fn read(&mut self, this: Handle) -> Result<Vec<u8>, HostError> {
        let tensor = self.get(&this)?;
        // A readback allocates nothing the instance keeps: no budget.
        let host = Ops::unlimited(self.model().backend.as_ref()).to_host(&tensor)?;
        Ok(host.host().map(|h| h.bytes().to_vec()).unwrap_or_default())
    }

    fn drop(&mut self, this: Handle) -> wasmtime::Result<()> {
        self.take_tensor(this).map(drop)
    }
}

impl wit::Host for InstanceState {
    fn convert_error(&mut self, err: HostError) -> wasmtime::Result<wit::Error> {
        err.into_wit()
    }

    fn matmul(&mut self, a: Handle, b: Handle, transpose_b: bool) -> OpResult {
        let (a, b) = (self.get(&a)?, self.get(&b)?);
        self.op(|ops| ops.matmul(&a, &b, transpose_b))
    }

    fn linear(
        &mut self,
        a: Handle,
        b: Handle,
        transpose_b: bool,
        bias: Option<Handle>,
        activation: Option<wit::UnaryOp>,
    ) -> OpResult {
        let (a, b, bias) = (self.get(&a)?, self.get(&b)?, self.opt(&bias)?);
        let activation = activation.map(Into::into);
        self.op(|ops| ops.linear(&a, &b, transpose_b, bias.as_ref(), activation))
    }

    fn binary(&mut self, op: wit::BinaryOp, a: Handle, b: Handle) -> OpResult {
        let (a, b) = (self.get(&a)?, self.get(&b)?);
        self.op(|ops| ops.binary(op.into(), &a, &b))
    }

    fn unary(&mut self, op: wit::UnaryOp, x: Handle) -> OpResult {
        let x = self.get(&x)?;
        self.op(|ops| ops.unary(op.into(), &x))
    }

    fn affine(&mut self, x: Handle, factor: f32, offset: f32) -> OpResult {
        let x = self.get(&x)?;
        self.op(|ops| ops.affine(&x, factor, offset))
    }

    fn softmax(&mut self, x: Handle, axis: i32) -> OpResult {
        let x = self.get(&x)?;
        self.op(|ops| ops.softmax(&x, axis))
    }

    fn layer_norm(
        &mut self,
        x: Handle,
        gamma: Option<Handle>,
        beta: Option<Handle>,
        eps: f32,
    ) -> OpResult {
        let (x, gamma, beta) = (self.get(&x)?, self.opt(&gamma)?, self.opt(&beta)?);
        self.op(|ops| ops.layer_norm(&x, gamma.as_ref(), beta.as_ref(), eps))
    }

    fn embedding(&mut self, table: Handle, ids: Handle) -> OpResult {
        let (table, ids) = (self.get(&table)?, self.get(&ids)?);
        self.op(|ops| ops.embedding(&table, &ids))
    }

    fn reshape(&mut self, x: Handle, shape: Vec<i32>) -> OpResult {
        let x = self.get(&x)?;
        self.op(|ops| ops.reshape(&x, &shape))
    }

    fn transpose(&mut self, x: Handle, perm: Vec<u32>) -> OpResult {
        let (x, perm) = (self.get(&x)?, dims(&perm));
        self.op(|ops| ops.transpose(&x, &perm))
    }

    fn slice(&mut self, x: Handle, axis: i32, start: u32, end: u32) -> OpResult {
        let x = self.get(&x)?;
        self.op(|ops| ops.slice(&x, axis, start as usize, end as usize))
    }

    fn concat(&mut self, xs: Vec<Handle>, axis: i32) -> OpResult {
        let xs = self.tensors(&xs)?;
        self.op(|ops| ops.concat(&xs.iter().collect::<Vec<_>>(), axis))
    }

    fn reduce(&mut self, op: wit::ReduceOp, x: Handle, axis: i32, keep_dims: bool) -> OpResult {
        let x = self.get(&x)?;
        self.op(|ops| ops.reduce(op.into(), &x, axis, keep_dims))
    }

    fn cast(&mut self, x: Handle, to: wit::Dtype) -> OpResult {
        let x = self.get(&x)?;
        self.op(|ops| ops.cast(&x, to.into()))
    }

    #[allow(clippy::too_many_arguments)] // the contract's signature
    fn conv2d(
        &mut self,
        x: Handle,
        weight: Handle,
        bias: Option<Handle>,
        stride: (u32, u32),
        padding: (u32, u32),
        dilation: (u32, u32),
        groups: u32,
    ) -> OpResult {
        let (x, weight, bias) = (self.get(&x)?, self.get(&weight)?, self.opt(&bias)?);
        let params =
            et::Conv2d::symmetric(pair(stride), pair(padding), pair(dilation), groups as usize);
        self.op(|ops| ops.conv2d(&x, &weight, bias.as_ref(), params))
    }

    fn conv2d_fused(
        &mut self,
        x: Handle,
        weight: Handle,
        bias: Option<Handle>,
        options: wit::Conv2dOptions,
    ) -> OpResult {
        let (x, weight, bias) = (self.get(&x)?, self.get(&weight)?, self.opt(&bias)?);
        let params = et::Conv2d {
            stride: pair(options.stride),
            padding: pair(options.padding_begin),
            padding_end: pair(options.padding_end),
            dilation: pair(options.dilation),
            groups: options.groups as usize,
            clip: et::shape::ClipBounds {
                lo: options.clip_lo,
                hi: options.clip_hi,
            },
        };
        self.op(|ops| ops.conv2d(&x, &weight, bias.as_ref(), params))
    }

    fn pool2d(
        &mut self,
        kind: wit::PoolKind,
        x: Handle,
        kernel: (u32, u32),
        stride: (u32, u32),
        padding: (u32, u32),
    ) -> OpResult {
        let x = self.get(&x)?;
        let params = et::Pool2d {
            kind: kind.into(),
            kernel: pair(kernel),
            stride: pair(stride),
            padding: pair(padding),
        };
        self.op(|ops| ops.pool2d(&x, params))
    }

    fn attention(
        &mut self,
        q: Handle,
        k: Handle,
        v: Handle,
        mask: Option<Handle>,
        scale: Option<f32>,
        causal: bool,
    ) -> OpResult {
        let (q, k, v) = (self.get(&q)?, self.get(&k)?, self.get(&v)?);
        let (mask, params) = (self.opt(&mask)?, et::Attention { scale, causal });
        self.op(|ops| ops.attention(&q, &k, &v, mask.as_ref(), params))
    }

    fn compare(&mut self, op: wit::CompareOp, a: Handle, b: Handle) -> OpResult {
        let (a, b) = (self.get(&a)?, self.get(&b)?);
        self.op(|ops| ops.compare(op.into(), &a, &b))
    }

    fn where_(&mut self, condition: Handle, a: Handle, b: Handle) -> OpResult {
        let (c, a, b) = (self.get(&condition)?, self.get(&a)?, self.get(&b)?);
        self.op(|ops| ops.select(&c, &a, &b))
    }

    fn gather(&mut self, x: Handle, indices: Handle, axis: i32) -> OpResult {
        let (x, indices) = (self.get(&x)?, self.get(&indices)?);
        self.op(|ops| ops.gather(&x, &indices, axis))
    }

    fn expand(&mut self, x: Handle, shape: Vec<u32>) -> OpResult {
        let (x, shape) = (self.get(&x)?, dims(&shape));
        self.op(|ops| ops.expand(&x, &shape))
    }

    fn clip(&mut self, x: Handle, lo: Option<f64>, hi: Option<f64>) -> OpResult {
        let x = self.get(&x)?;
        self.op(|ops| ops.clip(&x, lo, hi))
    }

    fn attention_varlen(
        &mut self,
        q: Handle,
        k: Handle,
        v: Handle,
        offsets: Vec<u32>,
        scale: Option<f32>,
        causal: bool,
    ) -> OpResult {
        let (q, k, v) = (self.get(&q)?, self.get(&k)?, self.get(&v)?);
        let (offsets, params) = (dims(&offsets), et::Attention { scale, causal });
        self.op(|ops| ops.attention_varlen([&q, &k, &v], &offsets, params))
    }

    fn lstm(
        &mut self,
        x_gates: Handle,
        r: Handle,
        h0: Handle,
        c0: Handle,
        reverse: bool,
    ) -> Result<(Handle, Handle, Handle), HostError> {
        let inputs = [
            self.get(&x_gates)?,
            self.get(&r)?,
            self.get(&h0)?,
            self.get(&c0)?,
        ];
        let [x_gates, r, h0, c0] = &inputs;
        let (y, h, c) = self.ops().lstm([x_gates, r, h0, c0], reverse)?;
        let [y, h, c] = self.push_all([y, h, c])?;
        Ok((y, h, c))
    }

    fn top_k(&mut self, x: Handle, k: u32) -> Result<(Handle, Handle), HostError> {
        let x = self.get(&x)?;
        let (values, indices) = self.ops().top_k(&x, k as usize)?;
        let [values, indices] = self.push_all([values, indices])?;
        Ok((values, indices))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use edgeserve_tensor::Tensor;
    use edgeserve_tensor::cpu::CpuBackend;
    use wasmtime_wasi::WasiCtxBuilder;

    use super::wit::Host;
    use crate::repository::ModelConfig;
    use crate::runtime::ModelContext;
    use crate::runtime::state::InstanceState;

    /// An op with several results gives the guest all of them or none: an
    /// `lstm` whose third result would pass the tensor cap fails naming the
    /// cap, and takes back the two it had made, so the instance can still
    /// hold as many tensors as before.
    #[test]
    fn several_results_are_handed_over_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let config = ModelConfig {
            max_tensors: 6,
            ..ModelConfig::default()
        };
        let backend = Arc::new(CpuBackend::new());
        let model = ModelContext::open("m", dir.path(), &config, backend).unwrap();
        let mut state = InstanceState::new(WasiCtxBuilder::new().build(), Arc::new(model), 1 << 20);
        let push = |state: &mut InstanceState, shape: &[usize]| {
            let n = shape.iter().product();
            state.push_tensor(Tensor::from_f32(shape, vec![0.5; n]).unwrap())
        };
        let inputs =
            [&[2, 1, 8][..], &[8, 2], &[1, 2], &[1, 2]].map(|s| push(&mut state, s).unwrap());
        let [x_gates, r, h0, c0] = inputs;
        let refused = state.lstm(x_gates, r, h0, c0, false).unwrap_err();
        assert!(
            format!("{refused:?}").contains("max_tensors"),
            "{refused:?}"
        );
        // Two slots left, as before the call.
        push(&mut state, &[1]).unwrap();
        push(&mut state, &[1]).unwrap();
        push(&mut state, &[1]).unwrap_err();
    }
}

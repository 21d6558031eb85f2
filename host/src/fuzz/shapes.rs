//! The shape rules through the front door, on shapes and arguments read
//! from fuzz bytes: every operation a handler can call, run on the CPU
//! backend. Dimensions include huge ones (on tensors with a zero dimension,
//! so they hold no data), where size arithmetic would overflow.

use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::{
    Attention, BinaryOp, Budget, CompareOp, Conv2d, DType, HostBuffer, Ops, Pool2d, PoolKind,
    ReduceOp, Tensor, TensorError, UnaryOp, shape,
};

use crate::protocol::Datatype;

/// Dimensions a shape is made of: small ones, and ones whose products
/// overflow.
const DIMS: [usize; 12] = [
    0,
    1,
    2,
    3,
    4,
    5,
    7,
    1 << 32,
    1 << 40,
    isize::MAX as usize,
    usize::MAX / 2,
    usize::MAX,
];

/// Sizes, offsets and strides for operation arguments.
const ARGS: [usize; 10] = [
    0,
    1,
    2,
    3,
    4,
    5,
    1 << 32,
    isize::MAX as usize,
    usize::MAX - 1,
    usize::MAX,
];

/// Element values: ordinary and special floats, ids in and out of range.
const VALUES: [f64; 12] = [
    0.0,
    1.0,
    -1.0,
    2.0,
    0.5,
    3.0,
    -7.0,
    1e30,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    9.2e18,
];

/// Inputs with more elements than this get their dimensions folded small, so
/// every execution stays fast.
const MAX_ELEMENTS: usize = 1024;

/// Results larger than this are refused by the budget, as an instance's
/// budget would refuse them.
const MAX_RESULT_BYTES: usize = 256 << 10;

struct Cap;

impl Budget for Cap {
    fn reserve(&self, bytes: usize) -> edgeserve_tensor::Result<()> {
        if bytes > MAX_RESULT_BYTES {
            return Err(TensorError::OutOfMemory(format!("{bytes} bytes")));
        }
        Ok(())
    }
}

/// Reads choices from the fuzz bytes; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte()) % from.len()]
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// An axis, possibly counting from the end or out of range.
    fn axis(&mut self) -> i32 {
        i32::from(self.byte() as i8) % 6
    }

    fn dtype(&mut self) -> DType {
        let b = self.byte();
        if b < 160 {
            return DType::F32;
        }
        match Datatype::ALL[usize::from(b) % Datatype::ALL.len()] {
            Datatype::Numeric(dtype) => dtype,
            Datatype::Bytes => DType::F16,
        }
    }

    fn shape(&mut self) -> Vec<usize> {
        let rank = usize::from(self.byte() % 6);
        let mut dims: Vec<usize> = (0..rank).map(|_| self.pick(&DIMS)).collect();
        let fits = shape::checked_numel(&dims).is_some_and(|n| n <= MAX_ELEMENTS);
        if !fits && !dims.contains(&0) {
            dims.iter_mut().for_each(|d| *d %= 6);
        }
        dims
    }

    fn tensor(&mut self) -> Option<Tensor> {
        let dtype = self.dtype();
        let dims = self.shape();
        self.tensor_of(dtype, &dims)
    }

    /// A tensor of `dtype` and `dims` with values from [`VALUES`], or `None`
    /// for a shape no buffer can hold.
    fn tensor_of(&mut self, dtype: DType, dims: &[usize]) -> Option<Tensor> {
        let n = shape::checked_numel(dims)?;
        let seed = usize::from(self.byte());
        let value = |i: usize| VALUES[(seed + i * 7) % VALUES.len()];
        let buffer = match dtype {
            DType::F32 => HostBuffer::from_vec((0..n).map(|i| value(i) as f32).collect()),
            DType::F16 => HostBuffer::from_vec(
                (0..n)
                    .map(|i| half::f16::from_f64(value(i)))
                    .collect::<Vec<_>>(),
            ),
            DType::I32 => HostBuffer::from_vec((0..n).map(|i| value(i) as i32).collect()),
            DType::I64 => HostBuffer::from_vec((0..n).map(|i| value(i) as i64).collect()),
            DType::U8 => HostBuffer::from_vec((0..n).map(|i| value(i) as u8).collect()),
        };
        Tensor::from_host(dtype, dims, buffer).ok()
    }

    /// A tensor that mostly shares `like`'s dtype, as a second operand must.
    fn operand(&mut self, like: &Tensor) -> Option<Tensor> {
        let dtype = if self.flag() {
            like.dtype()
        } else {
            self.dtype()
        };
        let dims = self.shape();
        self.tensor_of(dtype, &dims)
    }

    /// Indices: mostly i64 or i32 (the dtypes gather takes), with values
    /// in and out of range.
    fn indices(&mut self) -> Option<Tensor> {
        let dtype = match self.byte() % 3 {
            0 => DType::I64,
            1 => DType::I32,
            _ => self.dtype(),
        };
        let dims = self.shape();
        self.tensor_of(dtype, &dims)
    }

    /// A bound for clip, or none.
    fn bound(&mut self) -> Option<f64> {
        self.flag().then(|| self.pick(&VALUES))
    }

    fn pair(&mut self) -> (usize, usize) {
        (self.pick(&ARGS), self.pick(&ARGS))
    }
}

/// One operation, chosen and parameterised by the bytes. A result must
/// hold exactly its shape's bytes.
pub fn shape_rules(data: &[u8]) {
    static CPU: CpuBackend = CpuBackend::new();
    let ops = Ops::new(&CPU, &Cap);
    let mut input = Input(data);
    let op = input.byte();
    let Some(x) = input.tensor() else {
        return;
    };
    let result = match op % 25 {
        0 | 1 => {
            let Some(w) = input.tensor() else { return };
            let transpose_b = input.flag();
            if op % 25 == 0 {
                ops.matmul(&x, &w, transpose_b)
            } else {
                let bias = input.tensor();
                let activation = input.flag().then(|| input.pick(UnaryOp::ALL));
                ops.linear(&x, &w, transpose_b, bias.as_ref(), activation)
            }
        }
        2 => {
            let Some(y) = input.tensor() else { return };
            ops.binary(input.pick(BinaryOp::ALL), &x, &y)
        }
        3 => ops.unary(input.pick(UnaryOp::ALL), &x),
        4 => ops.affine(&x, 2.0, -1.0),
        5 => ops.softmax(&x, input.axis()),
        6 => {
            let gamma = input.flag().then(|| input.tensor()).flatten();
            let beta = input.flag().then(|| input.tensor()).flatten();
            ops.layer_norm(&x, gamma.as_ref(), beta.as_ref(), 1e-5)
        }
        7 => {
            let Some(ids) = input.tensor() else { return };
            ops.embedding(&x, &ids)
        }
        8 => {
            let rank = usize::from(input.byte() % 6);
            let target: Vec<i32> = (0..rank)
                .map(|_| input.pick(&[-1, 0, 1, 2, 3, 4, 6, -2, i32::MAX, i32::MIN]))
                .collect();
            ops.reshape(&x, &target)
        }
        9 => {
            let rank = usize::from(input.byte() % 6);
            let perm: Vec<usize> = (0..rank).map(|_| usize::from(input.byte() % 6)).collect();
            ops.transpose(&x, &perm)
        }
        10 => {
            let axis = input.axis();
            let (start, end) = input.pair();
            ops.slice(&x, axis, start, end)
        }
        11 => {
            let mut rest = Vec::new();
            for _ in 0..input.byte() % 3 {
                let Some(t) = input.tensor() else { return };
                rest.push(t);
            }
            let all: Vec<&Tensor> = std::iter::once(&x).chain(&rest).collect();
            ops.concat(&all, input.axis())
        }
        12 => {
            let op = input.pick(ReduceOp::ALL);
            ops.reduce(op, &x, input.axis(), input.flag())
        }
        13 => ops.cast(&x, input.dtype()),
        14 => {
            let Some(w) = input.tensor() else { return };
            let bias = input.flag().then(|| input.tensor()).flatten();
            let params = Conv2d {
                stride: input.pair(),
                padding: input.pair(),
                padding_end: input.pair(),
                dilation: input.pair(),
                groups: input.pick(&ARGS),
                clip: shape::ClipBounds {
                    lo: input.bound(),
                    hi: input.bound(),
                },
            };
            ops.conv2d(&x, &w, bias.as_ref(), params)
        }
        15 => {
            let params = Pool2d {
                kind: input.pick(PoolKind::ALL),
                kernel: input.pair(),
                stride: input.pair(),
                padding: input.pair(),
            };
            ops.pool2d(&x, params)
        }
        16 => {
            let (Some(k), Some(v)) = (input.tensor(), input.tensor()) else {
                return;
            };
            let mask = input.flag().then(|| input.tensor()).flatten();
            let params = Attention {
                scale: input.flag().then_some(0.5),
                causal: input.flag(),
            };
            ops.attention(&x, &k, &v, mask.as_ref(), params)
        }
        17 => ops.top_k(&x, input.pick(&ARGS)).map(|(values, indices)| {
            assert_whole(&indices);
            values
        }),
        18 => {
            let dims = input.shape();
            ops.full(input.dtype(), &dims, input.pick(&VALUES))
        }
        19 => {
            let Some(y) = input.operand(&x) else { return };
            ops.compare(input.pick(CompareOp::ALL), &x, &y)
        }
        20 => {
            let Some(a) = input.tensor() else { return };
            let Some(b) = input.operand(&a) else { return };
            ops.select(&x, &a, &b)
        }
        21 => {
            let Some(indices) = input.indices() else {
                return;
            };
            ops.gather(&x, &indices, input.axis())
        }
        22 => {
            let dims = input.shape();
            ops.expand(&x, &dims)
        }
        23 => {
            let (lo, hi) = (input.bound(), input.bound());
            ops.clip(&x, lo, hi)
        }
        // The last slot's odd rounds: its even ones (op 24 first) stay
        // attention-varlen's, as the corpus has them.
        _ if op / 25 % 2 == 1 => {
            let (Some(r), Some(h0), Some(c0)) = (input.tensor(), input.tensor(), input.tensor())
            else {
                return;
            };
            ops.lstm([&x, &r, &h0, &c0], input.flag()).map(|(y, h, c)| {
                assert_whole(&h);
                assert_whole(&c);
                y
            })
        }
        _ => {
            let (Some(k), Some(v)) = (input.tensor(), input.tensor()) else {
                return;
            };
            let offsets: Vec<usize> = (0..input.byte() % 5).map(|_| input.pick(&ARGS)).collect();
            let params = Attention {
                scale: input.flag().then_some(0.5),
                causal: input.flag(),
            };
            ops.attention_varlen([&x, &k, &v], &offsets, params)
        }
    };
    if let Ok(out) = result {
        assert_whole(&out);
    }
}

/// The tensor holds exactly the bytes its dtype and shape need.
fn assert_whole(t: &Tensor) {
    let host = t.host().expect("a CPU result lives on the host");
    assert_eq!(host.len(), t.byte_len(), "{t:?}");
}

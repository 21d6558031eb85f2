//! The front door, [`Ops`], on its own: every op is validated, charged to
//! the [`Budget`] for exactly its result's bytes, and only then handed to a
//! kernel; axes may count from the end; and errors name the op.
//!
//! A probe backend records which kernels run and fails each with
//! `OutOfMemory`, so these tests see what the front door does and in which
//! order, independently of any real kernel; the CPU backend then shows that
//! the bytes reserved are the bytes the results hold.

use std::sync::Mutex;

use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::{
    Attention, Backend, BackendInfo, BinaryOp, Budget, CompareOp, Conv2d, DType, Ops, Pool2d,
    PoolKind, ReduceOp, Result, Tensor, TensorError, UnaryOp,
};

/// What happened, in order.
#[derive(Clone, Debug, PartialEq)]
enum Event {
    /// The budget was asked for this many bytes.
    Reserve(usize),
    /// This `Backend` method ran.
    Kernel(&'static str),
}

type Log = Mutex<Vec<Event>>;

fn take(log: &Log) -> Vec<Event> {
    std::mem::take(&mut log.lock().unwrap())
}

/// A budget that logs each request and grants or refuses it.
struct Ledger<'a> {
    log: &'a Log,
    grant: bool,
}

impl<'a> Ledger<'a> {
    fn new(log: &'a Log, grant: bool) -> Ledger<'a> {
        Ledger { log, grant }
    }
}

impl Budget for Ledger<'_> {
    fn reserve(&self, bytes: usize) -> Result<()> {
        self.log.lock().unwrap().push(Event::Reserve(bytes));
        if self.grant {
            Ok(())
        } else {
            Err(refusal(bytes))
        }
    }
}

/// The error a refusing [`Ledger`] returns: it does not start with any op's
/// name, so a prefix added on the way out would show.
fn refusal(bytes: usize) -> TensorError {
    TensorError::OutOfMemory(format!("tensor budget: {bytes} more bytes refused"))
}

/// A backend whose every kernel logs its name and runs out of memory.
struct Probe<'a> {
    log: &'a Log,
    /// Starts each error message: empty, or the op's name as a kernel
    /// that knows its op would write it.
    prefix: Mutex<String>,
}

const NO_MEMORY: &str = "no memory for the result";

impl<'a> Probe<'a> {
    fn new(log: &'a Log) -> Probe<'a> {
        Probe {
            log,
            prefix: Mutex::default(),
        }
    }

    /// From now on, errors name `op` themselves.
    fn name_errors(&self, op: &str) {
        *self.prefix.lock().unwrap() = format!("{op}: ");
    }

    /// Logs `kernel` and fails.
    fn kernel<T>(&self, kernel: &'static str) -> Result<T> {
        self.log.lock().unwrap().push(Event::Kernel(kernel));
        let prefix = self.prefix.lock().unwrap();
        Err(TensorError::OutOfMemory(format!("{prefix}{NO_MEMORY}")))
    }
}

/// Implements each listed `Backend` method as a call to [`Probe::kernel`].
macro_rules! probe_kernels {
    ($($kernel:ident($($arg:ident: $ty:ty),*) -> $made:ty;)*) => {
        $(fn $kernel(&self, $(_: $ty),*) -> Result<$made> {
            self.kernel(stringify!($kernel))
        })*
    };
}

impl Backend for Probe<'_> {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "probe",
            device: String::new(),
            api: String::new(),
            driver: String::new(),
        }
    }

    edgeserve_tensor::backend_kernels!(probe_kernels);
}

/// The real kernels, to compare results.
static CPU: CpuBackend = CpuBackend::new();

fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
    let bytes = shape.iter().product::<usize>() * dtype.size();
    Tensor::from_bytes(dtype, shape, &vec![0; bytes]).unwrap()
}

fn f32s(shape: &[usize]) -> Tensor {
    zeros(DType::F32, shape)
}

fn halves(shape: &[usize]) -> Tensor {
    zeros(DType::F16, shape)
}

/// One op through the front door, returning its results.
type Run = Box<dyn Fn(&Ops<'_>) -> Result<Vec<Tensor>>>;

/// What an op returns, as a list.
trait Results {
    fn into_vec(self) -> Vec<Tensor>;
}

impl Results for Tensor {
    fn into_vec(self) -> Vec<Tensor> {
        vec![self]
    }
}

impl Results for (Tensor, Tensor) {
    fn into_vec(self) -> Vec<Tensor> {
        vec![self.0, self.1]
    }
}

impl Results for (Tensor, Tensor, Tensor) {
    fn into_vec(self) -> Vec<Tensor> {
        vec![self.0, self.1, self.2]
    }
}

/// An op and what the front door must do with it.
struct Case {
    /// The name its errors carry.
    op: &'static str,
    /// The `Backend` method it must reach.
    kernel: &'static str,
    /// The bytes it must reserve: its results, plus `scratch`.
    bytes: usize,
    /// Bytes reserved beyond the results (attention's scores).
    scratch: usize,
    run: Run,
}

fn case<T: Results>(
    op: &'static str,
    kernel: &'static str,
    bytes: usize,
    run: impl Fn(&Ops<'_>) -> Result<T> + 'static,
) -> Case {
    Case {
        op,
        kernel,
        bytes,
        scratch: 0,
        run: Box::new(move |ops| run(ops).map(Results::into_vec)),
    }
}

const CONV: Conv2d = Conv2d::symmetric((1, 1), (0, 0), (1, 1), 1);

const POOL: Pool2d = Pool2d {
    kind: PoolKind::Max,
    kernel: (2, 2),
    stride: (2, 2),
    padding: (0, 0),
};

const CAUSAL: Attention = Attention {
    scale: None,
    causal: true,
};

/// Every op that creates a tensor, on inputs whose results differ in size
/// (shape or dtype) from their first input wherever the op allows it. The
/// comments give each result.
fn cases() -> Vec<Case> {
    // Attention's [2, 3, 5] f32 scores.
    let scores = 2 * 3 * 5 * 4;
    vec![
        // 6 f32.
        case("from-bytes", "from_host", 24, |o| {
            o.from_bytes(DType::F32, &[2, 3], &[0; 24])
        }),
        case("from-host", "from_host", 24, |o| {
            o.from_host(&f32s(&[2, 3]))
        }),
        // 15 i64.
        case("full", "full", 120, |o| o.full(DType::I64, &[3, 5], 1.0)),
        // [2, 4] f32.
        case("matmul", "matmul", 32, |o| {
            o.matmul(&f32s(&[2, 3]), &f32s(&[3, 4]), false)
        }),
        // [2, 4] f16.
        case("linear", "matmul", 16, |o| {
            let (a, b, bias) = (halves(&[2, 3]), halves(&[4, 3]), halves(&[4]));
            o.linear(&a, &b, true, Some(&bias), Some(UnaryOp::Relu))
        }),
        // [4, 1] - [1, 5] broadcast to [4, 5] f32.
        case("sub", "binary", 80, |o| {
            o.binary(BinaryOp::Sub, &f32s(&[4, 1]), &f32s(&[1, 5]))
        }),
        // 6 f16.
        case("exp", "unary", 12, |o| {
            o.unary(UnaryOp::Exp, &halves(&[2, 3]))
        }),
        // 6 f32 each.
        case("affine", "affine", 24, |o| {
            o.affine(&f32s(&[2, 3]), 2.0, 1.0)
        }),
        case("softmax", "softmax", 24, |o| o.softmax(&f32s(&[2, 3]), -1)),
        case("layer-norm", "layer_norm", 24, |o| {
            o.layer_norm(&f32s(&[2, 3]), None, None, 1e-5)
        }),
        // [2, 3, 4] f32.
        case("embedding", "embedding", 96, |o| {
            o.embedding(&f32s(&[10, 4]), &zeros(DType::I64, &[2, 3]))
        }),
        // [3, 2] and [3, 2] f32.
        case("reshape", "reshape", 24, |o| {
            o.reshape(&f32s(&[2, 3]), &[3, -1])
        }),
        case("transpose", "transpose", 24, |o| {
            o.transpose(&f32s(&[2, 3]), &[1, 0])
        }),
        // Rows 1..3 of [4, 3]: [2, 3] f32.
        case("slice", "slice", 24, |o| o.slice(&f32s(&[4, 3]), -2, 1, 3)),
        // [2, 4] f32.
        case("concat", "concat", 32, |o| {
            o.concat(&[&f32s(&[2, 3]), &f32s(&[2, 1])], -1)
        }),
        // Two i64 indices.
        case("reduce", "reduce", 16, |o| {
            o.reduce(ReduceOp::ArgMax, &f32s(&[2, 3]), -1, false)
        }),
        // 6 u8.
        case("cast", "cast", 6, |o| o.cast(&f32s(&[2, 3]), DType::U8)),
        // [1, 3, 3, 3] f32.
        case("conv2d", "conv2d", 108, |o| {
            o.conv2d(&f32s(&[1, 2, 5, 5]), &f32s(&[3, 2, 3, 3]), None, CONV)
        }),
        // [1, 1, 2, 2] f32.
        case("pool2d", "pool2d", 16, |o| {
            o.pool2d(&f32s(&[1, 1, 4, 4]), POOL)
        }),
        // [2, 3, 6] f32, and the scores.
        Case {
            scratch: scores,
            ..case("attention", "attention", 144 + scores, |o| {
                let (q, k, v) = (f32s(&[2, 3, 4]), f32s(&[2, 5, 4]), f32s(&[2, 5, 6]));
                o.attention(&q, &k, &v, None, CAUSAL)
            })
        },
        // [2, 2] f32 values and [2, 2] i64 indices.
        case("top-k", "top_k", 16 + 32, |o| o.top_k(&f32s(&[2, 5]), 2)),
        // [2, 3] u8.
        case("less", "compare", 6, |o| {
            o.compare(CompareOp::Less, &f32s(&[2, 3]), &f32s(&[3]))
        }),
        // [2, 3] f32.
        case("where", "select", 24, |o| {
            o.select(&zeros(DType::U8, &[2, 1]), &f32s(&[2, 3]), &f32s(&[3]))
        }),
        // [4, 2] f32.
        case("gather", "gather", 32, |o| {
            o.gather(&f32s(&[4, 3]), &zeros(DType::I64, &[2]), 1)
        }),
        // [4, 3] f32.
        case("expand", "expand", 48, |o| {
            o.expand(&f32s(&[1, 3]), &[4, 3])
        }),
        // [2, 3] f32.
        case("clip", "clip", 24, |o| {
            o.clip(&f32s(&[2, 3]), Some(0.0), None)
        }),
        // [5, 2, 3] f32, and the scores: 2 heads of 2² + 3² per head.
        Case {
            scratch: 2 * (4 + 9) * 4,
            ..case(
                "attention-varlen",
                "attention_varlen",
                120 + 2 * (4 + 9) * 4,
                |o| {
                    let (q, v) = (f32s(&[5, 2, 4]), f32s(&[5, 2, 3]));
                    o.attention_varlen([&q, &q, &v], &[0, 2, 5], CAUSAL)
                },
            )
        },
        // y [3, 2, 2] and the last h and c [2, 2] f32, and a step's gates
        // ([2, 8] f32).
        Case {
            scratch: 64,
            ..case("lstm", "lstm", 80 + 64, |o| {
                let (x_gates, r, state) = (f32s(&[3, 2, 8]), f32s(&[8, 2]), f32s(&[2, 2]));
                o.lstm([&x_gates, &r, &state, &state], false)
            })
        },
    ]
}

/// Runs `check` on ops over a [`Probe`] with a [`Ledger`] that grants or
/// refuses, both writing to the log it gets.
fn probed(grant: bool, check: impl FnOnce(&Ops<'_>, &Probe<'_>, &Log)) {
    let log = Log::default();
    let probe = Probe::new(&log);
    let budget = Ledger::new(&log, grant);
    check(&Ops::new(&probe, &budget), &probe, &log);
}

#[test]
fn a_refusing_budget_stops_every_op_before_its_kernel() {
    probed(false, |ops, _, log| {
        for case in cases() {
            let err = (case.run)(ops).unwrap_err();
            assert_eq!(err, refusal(case.bytes), "{}", case.op);
            assert_eq!(take(log), [Event::Reserve(case.bytes)], "{}", case.op);
        }
    });
}

#[test]
fn kernels_run_after_the_reservation_and_their_errors_name_the_op() {
    probed(true, |ops, probe, log| {
        // Then again with kernels that name the op themselves: not named
        // twice.
        for named in [false, true] {
            for case in cases() {
                if named {
                    probe.name_errors(case.op);
                }
                let err = (case.run)(ops).unwrap_err();
                let want = TensorError::OutOfMemory(format!("{}: {NO_MEMORY}", case.op));
                assert_eq!(err, want, "named {named}");
                let events = [Event::Reserve(case.bytes), Event::Kernel(case.kernel)];
                assert_eq!(take(log), events, "{}", case.op);
            }
            // Reading back allocates nothing, so only its errors pass the
            // door.
            if named {
                probe.name_errors("to-host");
            }
            let err = ops.to_host(&f32s(&[2])).unwrap_err();
            let want = TensorError::OutOfMemory(format!("to-host: {NO_MEMORY}"));
            assert_eq!(err, want);
            assert_eq!(take(log), [Event::Kernel("to_host")]);
        }
    });
}

#[test]
fn reservations_are_what_the_results_hold() {
    let log = Log::default();
    let budget = Ledger::new(&log, true);
    let ops = Ops::new(&CPU, &budget);
    for case in cases() {
        let results = (case.run)(&ops).unwrap();
        let held: usize = results.iter().map(Tensor::byte_len).sum();
        assert_eq!(held + case.scratch, case.bytes, "{}", case.op);
        assert_eq!(take(&log), [Event::Reserve(case.bytes)], "{}", case.op);
    }
}

#[test]
fn invalid_ops_reserve_nothing_and_reach_no_kernel() {
    probed(true, |ops, _, log| {
        let x = f32s(&[2, 3]);
        let ints = zeros(DType::I32, &[2, 3]);
        let refusals = [
            ops.matmul(&x, &x, false).unwrap_err(),
            ops.binary(BinaryOp::Add, &x, &f32s(&[4])).unwrap_err(),
            ops.unary(UnaryOp::Exp, &ints).unwrap_err(),
            ops.softmax(&x, 2).unwrap_err(),
            ops.reshape(&x, &[4, -1]).unwrap_err(),
            ops.concat(&[&x, &ints], 0).unwrap_err(),
            ops.reduce(ReduceOp::Mean, &ints, 0, false).unwrap_err(),
            ops.top_k(&x, 4).unwrap_err(),
        ];
        for err in refusals {
            assert!(!matches!(err, TensorError::OutOfMemory(_)), "{err:?}");
        }
        assert_eq!(take(log), []);
    });
}

#[test]
fn negative_axes_count_from_the_end() {
    let ops = CPU.ops();
    let data: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
    let x = Tensor::from_f32(&[2, 3, 4], data).unwrap();
    let bits = |t: Result<Tensor>| -> (Vec<usize>, Vec<u32>) {
        let t = t.unwrap();
        let values = t
            .host()
            .unwrap()
            .as_slice::<f32>()
            .iter()
            .map(|v| v.to_bits());
        (t.shape().to_vec(), values.collect())
    };
    for (negative, axis) in [(-1, 2), (-2, 1), (-3, 0)] {
        let what = format!("axis {negative}");
        assert_eq!(
            bits(ops.softmax(&x, negative)),
            bits(ops.softmax(&x, axis)),
            "{what}"
        );
        assert_eq!(
            bits(ops.slice(&x, negative, 1, 2)),
            bits(ops.slice(&x, axis, 1, 2)),
            "{what}"
        );
        assert_eq!(
            bits(ops.concat(&[&x, &x], negative)),
            bits(ops.concat(&[&x, &x], axis)),
            "{what}"
        );
        for keep in [false, true] {
            let reduce = |axis| ops.reduce(ReduceOp::Sum, &x, axis, keep);
            assert_eq!(bits(reduce(negative)), bits(reduce(axis)), "{what}");
        }
    }
    assert_eq!(ops.reshape(&x, &[-1, 4]).unwrap().shape(), [6, 4]);
}

#[test]
fn out_of_range_axes_name_the_op() {
    let ops = CPU.ops();
    let x = f32s(&[2, 3]);
    for axis in [2, -3] {
        let why = format!("axis {axis} is out of range for rank 2");
        let refusals = [
            ("softmax", ops.softmax(&x, axis).unwrap_err()),
            ("slice", ops.slice(&x, axis, 0, 1).unwrap_err()),
            ("concat", ops.concat(&[&x, &x], axis).unwrap_err()),
            (
                "reduce",
                ops.reduce(ReduceOp::Max, &x, axis, true).unwrap_err(),
            ),
        ];
        for (op, err) in refusals {
            assert_eq!(err, TensorError::InvalidArgument(format!("{op}: {why}")));
        }
    }
}

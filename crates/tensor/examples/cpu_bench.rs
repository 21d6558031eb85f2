//! Rough timings of the CPU backend's kernels, for tuning thresholds.
//!
//! `cargo run --release -p edgeserve-tensor --example cpu_bench [filter]`
//! prints the median time of each case whose name contains `filter`, at
//! every vector width the CPU has (widest first, then the narrower ones as
//! the same run's baselines). Ops
//! go through the [`Ops`] front door, as every caller's do, so the times
//! include validation.

use std::time::{Duration, Instant};

use edgeserve_tensor::cpu::{CpuBackend, Simd, cap_simd, simd};
use edgeserve_tensor::shape::ClipBounds;
use edgeserve_tensor::{
    Attention, Backend, BinaryOp, Conv2d, DType, Ops, Pool2d, PoolKind, ReduceOp, Result, Tensor,
    UnaryOp,
};

const USAGE: &str = "usage: cpu_bench [filter]
Prints the median time of each case whose name contains `filter` (all when
it is empty) at every SIMD level the CPU has, after gemm's own timings with and without threads, the backend's weight
products against gemm alone, and MiniLM's linear products in GFLOP/s.";

/// A named benchmark.
type Case = (&'static str, Box<dyn Fn()>);

/// The [`distinct_weights`] cases: MiniLM's weight shapes `[n, k]` (read
/// transposed), each under activations of these many rows (one sentence
/// and a few, up to batches), and GPT-2's `[k, n]` (Conv1D layout) under
/// the one to three rows of token-by-token decoding.
const DISTINCT: [((usize, usize), bool, &[usize]); 6] = [
    (
        (1536, 384),
        true,
        &[1, 2, 3, 4, 9, 13, 16, 24, 48, 72, 128, 256, 512],
    ),
    ((384, 1536), true, &[1, 9, 13, 24, 72, 256]),
    ((384, 384), true, &[13]),
    ((2304, 768), false, &[1, 2, 3]),
    ((3072, 768), false, &[1, 2, 3]),
    ((768, 3072), false, &[1, 2, 3]),
];

/// `[m, k]` against 24 distinct weights in turn, `[n, k]` transposed or
/// `[k, n]`.
fn distinct_weights((m, n, k): (usize, usize, usize), transposed: bool) -> Case {
    let shape = if transposed { [n, k] } else { [k, n] };
    // Case names live as long as the run.
    let name = format!(
        "linear [{m},{k}]x24 distinct {shape:?}{}",
        if transposed { "^T" } else { "" }
    )
    .leak();
    let x = tensor(&[m, k]);
    let weights: Vec<Tensor> = (0..24).map(|_| tensor(&shape)).collect();
    (
        name,
        Box::new(move || {
            for w in &weights {
                drop(cpu().matmul(&x, w, transposed).expect("matmul"));
            }
        }),
    )
}

/// MiniLM's linear products, `[rows, k] · [n, k]ᵀ`, as GFLOP/s: the weight
/// hot in cache, and 24 distinct weights in turn (as a model's layers read
/// theirs, more than the L3 holds for the larger shapes).
fn linear_gflops(filter: &str) {
    for (n, k) in [(384, 384), (1536, 384), (384, 1536)] {
        for m in [
            8, 12, 14, 16, 18, 24, 32, 33, 36, 40, 48, 56, 64, 128, 256, 512,
        ] {
            let name = format!("gflops [{m},{k}]x[{n},{k}]^T");
            if !name.contains(filter) {
                continue;
            }
            let x = tensor(&[m, k]);
            // Model weights, as a linear layer's are: kept packed from 16 rows
            // on the AVX-512 tiles, above 32 on the AVX2 ones.
            let weights: Vec<Tensor> = (0..24).map(|_| tensor(&[n, k]).into_weight()).collect();
            let flops = 2.0 * (m * n * k) as f64;
            // At the two widths the product kernels come in, widest first:
            // the narrower is the same run's baseline.
            for level in [Simd::Avx512, Simd::Avx2]
                .into_iter()
                .filter(|&l| l <= simd())
            {
                cap_simd(level);
                let hot = time(|| drop(cpu().matmul(&x, &weights[0], true).expect("matmul")));
                let distinct = time(|| {
                    for w in &weights {
                        drop(cpu().matmul(&x, w, true).expect("matmul"));
                    }
                });
                let gflops = |t: Duration, count: f64| count * flops / t.as_secs_f64() / 1e9;
                println!(
                    "{name:40} {:>6} hot {hot:>10.1?} {:6.1} GFLOP/s   x24 distinct {distinct:>10.1?} {:6.1} GFLOP/s",
                    level.name(),
                    gflops(hot, 1.0),
                    gflops(distinct, 24.0)
                );
            }
            cap_simd(Simd::Avx512);
        }
    }
}

/// The CPU backend's ops, for every case to call.
fn cpu() -> Ops<'static> {
    static CPU: CpuBackend = CpuBackend::new();
    CPU.ops()
}

/// A case that runs `op` on random inputs of `shapes`, made once.
fn case<T>(
    name: &'static str,
    shapes: &[&[usize]],
    op: impl Fn(Ops<'_>, &[Tensor]) -> Result<T> + 'static,
) -> Case {
    let inputs: Vec<Tensor> = shapes.iter().map(|shape| tensor(shape)).collect();
    (
        name,
        Box::new(move || drop(op(cpu(), &inputs).expect(name))),
    )
}

/// A matmul of an `a` by a `b` (read `[..., n, k]` when `transpose_b`).
fn product(name: &'static str, a: &[usize], b: &[usize], transpose_b: bool) -> Case {
    case(name, &[a, b], move |o, t| {
        o.matmul(&t[0], &t[1], transpose_b)
    })
}

/// A 1×1 convolution of `n` `[c, side, side]` images by a model's `[o, c, 1, 1]` weight.
fn pointwise(name: &'static str, n: usize, c: usize, o: usize, side: usize) -> Case {
    pointwise_with(name, n, c, o, side, false)
}

/// [`pointwise`] with a bias and ReLU6 (`fused`), as MobileNetV2's
/// expanding layers run, or without.
fn pointwise_with(
    name: &'static str,
    n: usize,
    c: usize,
    o: usize,
    side: usize,
    fused: bool,
) -> Case {
    let (x, w, b) = (
        tensor(&[n, c, side, side]),
        tensor(&[o, c, 1, 1]).into_weight(),
        tensor(&[o]),
    );
    let mut params = Conv2d::symmetric((1, 1), (0, 0), (1, 1), 1);
    if fused {
        params.clip = ClipBounds {
            lo: Some(0.0),
            hi: Some(6.0),
        };
    }
    let run = move || {
        let bias = fused.then_some(&b);
        drop(cpu().conv2d(&x, &w, bias, params).expect(name))
    };
    (name, Box::new(run))
}

/// MobileNetV2's first layer: a 3×3 convolution of the `[n, 3, 224, 224]`
/// image to 32 channels, stride 2, padded at the end, with a bias and
/// ReLU6.
fn stem(name: &'static str, n: usize) -> Case {
    let (x, w, b) = (
        tensor(&[n, 3, 224, 224]),
        tensor(&[32, 3, 3, 3]).into_weight(),
        tensor(&[32]),
    );
    let params = Conv2d {
        padding_end: (1, 1),
        clip: ClipBounds {
            lo: Some(0.0),
            hi: Some(6.0),
        },
        ..Conv2d::symmetric((2, 2), (0, 0), (1, 1), 1)
    };
    let run = move || drop(cpu().conv2d(&x, &w, Some(&b), params).expect(name));
    (name, Box::new(run))
}

/// `op` over a tensor of `shape`.
fn unary(name: &'static str, op: UnaryOp, shape: &[usize]) -> Case {
    case(name, &[shape], move |o, t| o.unary(op, &t[0]))
}

/// GELU over inputs spread over [-4.5, 2.5], a third of them in the left
/// tail (below -2) as in a transformer's feed-forward layer, where most
/// runs of elements hold one.
fn gelu_with_a_tail() -> Case {
    let x = cpu()
        .affine(&tensor(&[1 << 20]), 7.0, -1.0)
        .expect("affine");
    (
        "gelu [1M], a third below -2",
        Box::new(move || drop(cpu().unary(UnaryOp::Gelu, &x).expect("gelu"))),
    )
}

fn tensor(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let data = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    Tensor::from_f32(shape, data).expect("shape fits data")
}

/// Median of enough runs to fill about 200 ms.
fn time(mut f: impl FnMut()) -> Duration {
    f();
    let once = Instant::now();
    f();
    let runs = (Duration::from_millis(200).as_secs_f64() / once.elapsed().as_secs_f64().max(1e-7))
        .clamp(3.0, 2000.0) as usize;
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// `c = a · b` by `gemm` alone: `a` row-major `m × k`, `c` row-major
/// `m × n`, element (p, j) of `b` at `p · b_rs + j · b_cs`.
fn gemm_alone(
    c: &mut [f32],
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    (b_cs, b_rs): (usize, usize),
    parallelism: gemm::Parallelism,
) {
    assert!(c.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    // SAFETY: the three buffers hold the asserted sizes, and the strides
    // address only elements inside them.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Times `gemm` directly with and without threads, to place the threshold.
fn gemm_threads(filter: &str) {
    for size in [16, 32, 48, 64, 96, 128, 192, 256] {
        let name = format!("gemm {size}^3");
        if !name.contains(filter) {
            continue;
        }
        let a = vec![0.5f32; size * size];
        let b = vec![0.25f32; size * size];
        let mut c = vec![0.0f32; size * size];
        let mut run = |parallelism| {
            time(|| gemm_alone(&mut c, (size, size, size), &a, &b, (1, size), parallelism))
        };
        let one = run(gemm::Parallelism::None);
        let all = run(gemm::Parallelism::Rayon(0));
        println!("{name:40} none {one:>10.1?}  rayon {all:>10.1?}");
    }
}

/// A layer's weight under few to many activation rows: the backend's
/// product (which reads a weight in place when the activation is small)
/// against `gemm` alone on the same operands, threaded as the backend
/// would thread it. The two alternate three times; each prints its best
/// median.
fn weight_products(filter: &str) {
    for (n, k) in [(1536, 384), (384, 1536)] {
        for transposed in [true, false] {
            for m in [1, 4, 16, 32, 64, 128] {
                let w_shape = if transposed { [n, k] } else { [k, n] };
                let name = format!(
                    "weight [{m},{k}]x{w_shape:?}{}",
                    if transposed { "^T" } else { "" }
                );
                if !name.contains(filter) {
                    continue;
                }
                let (x, w) = (tensor(&[m, k]), tensor(&w_shape));
                let host = |t: &Tensor| t.host().expect("host tensor").as_slice::<f32>().to_vec();
                let (xs, ws) = (host(&x), host(&w));
                let mut c = vec![0.0f32; m * n];
                let parallelism = if m * n * k >= 112 * 112 * 112 {
                    gemm::Parallelism::Rayon(0)
                } else {
                    gemm::Parallelism::None
                };
                // Element (r, c) of w read as k × n: [n, k] transposed has
                // column stride k and row stride 1.
                let (w_cs, w_rs) = if transposed { (k, 1) } else { (1, n) };
                let mut backend = Duration::MAX;
                let mut alone = Duration::MAX;
                for _ in 0..3 {
                    backend = backend.min(time(|| {
                        drop(cpu().matmul(&x, &w, transposed).expect("matmul"))
                    }));
                    alone = alone.min(time(|| {
                        gemm_alone(&mut c, (m, n, k), &xs, &ws, (w_cs, w_rs), parallelism)
                    }));
                }
                let ratio = alone.as_secs_f64() / backend.as_secs_f64();
                println!(
                    "{name:40} backend {backend:>10.1?}  gemm {alone:>10.1?}  gemm/backend {ratio:.2}"
                );
            }
        }
    }
}

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    if filter == "--help" || filter == "-h" {
        println!("{USAGE}");
        return;
    }
    println!("{}", cpu().backend().info().device);
    gemm_threads(&filter);
    weight_products(&filter);
    linear_gflops(&filter);
    let causal = Attention {
        scale: None,
        causal: true,
    };
    let conv = |groups| Conv2d::symmetric((1, 1), (1, 1), (1, 1), groups);
    let relu6 = |p: Conv2d| Conv2d {
        clip: ClipBounds {
            lo: Some(0.0),
            hi: Some(6.0),
        },
        ..p
    };
    let strided = relu6(Conv2d {
        padding_end: (1, 1),
        ..Conv2d::symmetric((2, 2), (0, 0), (1, 1), 96)
    });
    let pool = Pool2d {
        kind: PoolKind::Max,
        kernel: (3, 3),
        stride: (2, 2),
        padding: (1, 1),
    };
    let (conv1, conv32) = (conv(1), conv(32));
    let gelu = Some(UnaryOp::Gelu);
    let mut cases: Vec<Case> = vec![
        product(
            "matmul [128,384,384]x[384,1536]",
            &[128, 384],
            &[384, 1536],
            false,
        ),
        case(
            "linear [128,384]x[1536,384]^T+bias gelu",
            &[&[128, 384], &[1536, 384], &[1536]],
            move |o, t| o.linear(&t[0], &t[1], true, Some(&t[2]), gelu),
        ),
        case(
            "linear unfused: matmul, add, gelu",
            &[&[128, 384], &[1536, 384], &[1536]],
            |o, t| {
                let y = o.matmul(&t[0], &t[1], true)?;
                let y = o.binary(BinaryOp::Add, &y, &t[2])?;
                o.unary(UnaryOp::Gelu, &y)
            },
        ),
        // One short sentence through a BERT feed-forward: the weight in
        // PyTorch's [out, in] layout against the same weight stored [in, out].
        product(
            "linear [16,384]x[1536,384]^T",
            &[16, 384],
            &[1536, 384],
            true,
        ),
        product(
            "linear [16,384]x[384,1536]",
            &[16, 384],
            &[384, 1536],
            false,
        ),
        // An LSTM step's recurrence (hidden 256, gates i, o, f, c), its
        // weight hot across the steps.
        product(
            "lstm step [1,256]x[1024,256]^T",
            &[1, 256],
            &[1024, 256],
            true,
        ),
        product(
            "lstm step [8,256]x[1024,256]^T",
            &[8, 256],
            &[1024, 256],
            true,
        ),
        product(
            "matmul [12,128,64]x[12,128,64]^T",
            &[12, 128, 64],
            &[12, 128, 64],
            true,
        ),
        case("add [128,1536]+[1536]", &[&[128, 1536], &[1536]], |o, t| {
            o.binary(BinaryOp::Add, &t[0], &t[1])
        }),
        case("add [1M]+[1M]", &[&[1 << 20], &[1 << 20]], |o, t| {
            o.binary(BinaryOp::Add, &t[0], &t[1])
        }),
        case(
            "mul [64,1,512]*[64,512,1]",
            &[&[64, 1, 512], &[64, 512, 1]],
            |o, t| o.binary(BinaryOp::Mul, &t[0], &t[1]),
        ),
        unary("exp [1M]", UnaryOp::Exp, &[1 << 20]),
        unary("exp [4096]", UnaryOp::Exp, &[4096]),
        unary("neg [4096]", UnaryOp::Neg, &[4096]),
        unary("gelu [4096]", UnaryOp::Gelu, &[4096]),
        unary("tanh [4096]", UnaryOp::Tanh, &[4096]),
        unary("log [4096]", UnaryOp::Log, &[4096]),
        unary("gelu [1M]", UnaryOp::Gelu, &[1 << 20]),
        gelu_with_a_tail(),
        unary("gelu-tanh [1M]", UnaryOp::GeluTanh, &[1 << 20]),
        case("softmax [12,128,128] last", &[&[12, 128, 128]], |o, t| {
            o.softmax(&t[0], -1)
        }),
        case("softmax [12,128,128] axis 1", &[&[12, 128, 128]], |o, t| {
            o.softmax(&t[0], 1)
        }),
        case(
            "layer-norm [128,768]",
            &[&[128, 768], &[768], &[768]],
            |o, t| o.layer_norm(&t[0], Some(&t[1]), Some(&t[2]), 1e-5),
        ),
        case("reduce sum [1024,1024] axis 0", &[&[1024, 1024]], |o, t| {
            o.reduce(ReduceOp::Sum, &t[0], 0, false)
        }),
        case("reduce max [1024,1024] axis 1", &[&[1024, 1024]], |o, t| {
            o.reduce(ReduceOp::Max, &t[0], 1, false)
        }),
        case("transpose [1024,1024] [1,0]", &[&[1024, 1024]], |o, t| {
            o.transpose(&t[0], &[1, 0])
        }),
        case(
            "transpose [1,128,12,64] heads",
            &[&[1, 128, 12, 64]],
            |o, t| o.transpose(&t[0], &[0, 2, 1, 3]),
        ),
        case("cast f32->f16 [1M]", &[&[1 << 20]], |o, t| {
            o.cast(&t[0], DType::F16)
        }),
        case(
            "attention causal [12,128,64]",
            &[&[12, 128, 64], &[12, 128, 64], &[12, 128, 64]],
            move |o, t| o.attention(&t[0], &t[1], &t[2], None, causal),
        ),
        case(
            "attention decode [12,1,64] over 1024",
            &[&[12, 1, 64], &[12, 1024, 64], &[12, 1024, 64]],
            move |o, t| o.attention(&t[0], &t[1], &t[2], None, causal),
        ),
        case(
            "conv2d [1,64,56,56] 3x3x64",
            &[&[1, 64, 56, 56], &[64, 64, 3, 3]],
            move |o, t| o.conv2d(&t[0], &t[1], None, conv1),
        ),
        case(
            "conv2d [8,32,28,28] depthwise",
            &[&[8, 32, 28, 28], &[32, 1, 3, 3]],
            move |o, t| o.conv2d(&t[0], &t[1], None, conv32),
        ),
        // MobileNetV2's largest depthwise layers at batch 1, ReLU6 fused:
        // stride 2 with TF-style padding (one zero row and column after),
        // and stride 1.
        case(
            "conv2d [1,96,112,112] depthwise/2 relu6",
            &[&[1, 96, 112, 112], &[96, 1, 3, 3]],
            move |o, t| o.conv2d(&t[0], &t[1], None, strided),
        ),
        case(
            "conv2d [1,144,56,56] depthwise relu6",
            &[&[1, 144, 56, 56], &[144, 1, 3, 3]],
            move |o, t| o.conv2d(&t[0], &t[1], None, relu6(conv(144))),
        ),
        // MobileNetV2's last stage at batch 1: 49 output positions, a
        // model's weight.
        pointwise("conv2d [1,160,7,7] 1x1x960 weight", 1, 160, 960, 7),
        pointwise("conv2d [1,960,7,7] 1x1x160 weight", 1, 960, 160, 7),
        pointwise("conv2d [1,320,7,7] 1x1x1280 weight", 1, 320, 1280, 7),
        // Its middle stages, at 14×14.
        pointwise("conv2d [1,64,14,14] 1x1x384 weight", 1, 64, 384, 14),
        pointwise("conv2d [1,384,14,14] 1x1x64 weight", 1, 384, 64, 14),
        pointwise("conv2d [1,576,14,14] 1x1x96 weight", 1, 576, 96, 14),
        pointwise("conv2d [1,96,14,14] 1x1x576 weight", 1, 96, 576, 14),
        // At batch 8.
        pointwise("conv2d [8,160,7,7] 1x1x960 weight", 8, 160, 960, 7),
        pointwise("conv2d [8,64,14,14] 1x1x384 weight", 8, 64, 384, 14),
        pointwise("conv2d [8,384,14,14] 1x1x64 weight", 8, 384, 64, 14),
        pointwise("conv2d [8,144,56,56] 1x1x24 weight", 8, 144, 24, 56),
        // Its narrow early layers: fewer than 64 input or output channels.
        stem("conv2d [1,3,224,224] 3x3x32 stride 2 weight bias relu6", 1),
        stem("conv2d [8,3,224,224] 3x3x32 stride 2 weight bias relu6", 8),
        pointwise("conv2d [1,16,112,112] 1x1x96 weight", 1, 16, 96, 112),
        pointwise_with(
            "conv2d [1,16,112,112] 1x1x96 weight bias relu6",
            1,
            16,
            96,
            112,
            true,
        ),
        pointwise_with(
            "conv2d [1,24,56,56] 1x1x144 weight bias relu6",
            1,
            24,
            144,
            56,
            true,
        ),
        pointwise("conv2d [1,96,56,56] 1x1x24 weight", 1, 96, 24, 56),
        pointwise("conv2d [1,144,56,56] 1x1x24 weight", 1, 144, 24, 56),
        pointwise("conv2d [1,24,56,56] 1x1x144 weight", 1, 24, 144, 56),
        pointwise("conv2d [1,192,28,28] 1x1x32 weight", 1, 192, 32, 28),
        pointwise("conv2d [1,32,28,28] 1x1x192 weight", 1, 32, 192, 28),
        case(
            "pool2d max [8,64,56,56] 3x3/2",
            &[&[8, 64, 56, 56]],
            move |o, t| o.pool2d(&t[0], pool),
        ),
        case("top-k 50 of [32,50000]", &[&[32, 50_000]], |o, t| {
            o.top_k(&t[0], 50)
        }),
    ];
    // The same products over 24 distinct weights (56 MB for [1536,384],
    // more than any cache), as a model's layers read theirs: memory, not
    // arithmetic.
    cases.extend(DISTINCT.iter().flat_map(|&((n, k), transposed, rows)| {
        rows.iter()
            .map(move |&m| distinct_weights((m, n, k), transposed))
    }));
    // Each case at every vector width this CPU has, widest first, one
    // after the other: the narrower ones are the same run's baselines
    // (every width computes the same bits).
    let levels: Vec<Simd> = [Simd::Avx512, Simd::Avx2, Simd::Baseline]
        .into_iter()
        .filter(|&level| level <= simd())
        .collect();
    let header: String = levels
        .iter()
        .map(|l| format!(" {:>10}", format!("{l:?}")))
        .collect();
    println!("{:40}{header}", "case (median at each SIMD level)");
    for (name, f) in &cases {
        if name.contains(&filter) {
            let times: String = levels
                .iter()
                .map(|&level| {
                    cap_simd(level);
                    format!(" {:>10.1?}", time(f))
                })
                .collect();
            cap_simd(Simd::Avx512);
            println!("{name:40}{times}");
        }
    }
}

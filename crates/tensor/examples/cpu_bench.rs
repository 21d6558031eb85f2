//! Rough timings of the CPU backend's kernels, for tuning thresholds.
//!
//! `cargo run --release -p edgeserve-tensor --example cpu_bench [filter]`
//! prints the median time of each case whose name contains `filter`.

use std::time::{Duration, Instant};

use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::{
    Attention, Backend, BinaryOp, Conv2d, DType, Pool2d, PoolKind, ReduceOp, Tensor, UnaryOp,
};

/// A named benchmark.
type Case = (&'static str, Box<dyn Fn()>);

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
            time(|| unsafe {
                gemm::gemm(
                    size,
                    size,
                    size,
                    c.as_mut_ptr(),
                    1,
                    size as isize,
                    false,
                    a.as_ptr(),
                    1,
                    size as isize,
                    b.as_ptr(),
                    1,
                    size as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                )
            })
        };
        let one = run(gemm::Parallelism::None);
        let all = run(gemm::Parallelism::Rayon(0));
        println!("{name:40} none {one:>10.1?}  rayon {all:>10.1?}");
    }
}

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    // 'static so that every boxed case can capture it by copy.
    let cpu: &'static CpuBackend = Box::leak(Box::new(CpuBackend::new()));
    println!("{}", cpu.info().device);
    gemm_threads(&filter);
    let p = Attention {
        scale: None,
        causal: true,
    };
    let cases: Vec<Case> = vec![
        ("matmul [128,384,384]x[384,1536]", {
            let (a, b) = (tensor(&[128, 384]), tensor(&[384, 1536]));
            Box::new(move || drop(cpu.matmul(&a, &b, false).unwrap()))
        }),
        ("linear [128,384]x[1536,384]^T+bias gelu", {
            let (a, b, bias) = (tensor(&[128, 384]), tensor(&[1536, 384]), tensor(&[1536]));
            let gelu = Some(UnaryOp::Gelu);
            Box::new(move || drop(cpu.linear(&a, &b, true, Some(&bias), gelu).unwrap()))
        }),
        ("linear unfused: matmul, add, gelu", {
            let (a, b, bias) = (tensor(&[128, 384]), tensor(&[1536, 384]), tensor(&[1536]));
            Box::new(move || {
                let y = cpu.matmul(&a, &b, true).unwrap();
                let y = cpu.binary(BinaryOp::Add, &y, &bias).unwrap();
                drop(cpu.unary(UnaryOp::Gelu, &y).unwrap())
            })
        }),
        ("matmul [12,128,64]x[12,128,64]^T", {
            let (a, b) = (tensor(&[12, 128, 64]), tensor(&[12, 128, 64]));
            Box::new(move || drop(cpu.matmul(&a, &b, true).unwrap()))
        }),
        ("add [128,1536]+[1536]", {
            let (a, b) = (tensor(&[128, 1536]), tensor(&[1536]));
            Box::new(move || drop(cpu.binary(BinaryOp::Add, &a, &b).unwrap()))
        }),
        ("add [1M]+[1M]", {
            let (a, b) = (tensor(&[1 << 20]), tensor(&[1 << 20]));
            Box::new(move || drop(cpu.binary(BinaryOp::Add, &a, &b).unwrap()))
        }),
        ("mul [64,1,512]*[64,512,1]", {
            let (a, b) = (tensor(&[64, 1, 512]), tensor(&[64, 512, 1]));
            Box::new(move || drop(cpu.binary(BinaryOp::Mul, &a, &b).unwrap()))
        }),
        ("exp [1M]", {
            let a = tensor(&[1 << 20]);
            Box::new(move || drop(cpu.unary(UnaryOp::Exp, &a).unwrap()))
        }),
        ("exp [4096]", {
            let a = tensor(&[4096]);
            Box::new(move || drop(cpu.unary(UnaryOp::Exp, &a).unwrap()))
        }),
        ("neg [4096]", {
            let a = tensor(&[4096]);
            Box::new(move || drop(cpu.unary(UnaryOp::Neg, &a).unwrap()))
        }),
        ("gelu [4096]", {
            let a = tensor(&[4096]);
            Box::new(move || drop(cpu.unary(UnaryOp::Gelu, &a).unwrap()))
        }),
        ("tanh [4096]", {
            let a = tensor(&[4096]);
            Box::new(move || drop(cpu.unary(UnaryOp::Tanh, &a).unwrap()))
        }),
        ("gelu [1M]", {
            let a = tensor(&[1 << 20]);
            Box::new(move || drop(cpu.unary(UnaryOp::Gelu, &a).unwrap()))
        }),
        ("gelu-tanh [1M]", {
            let a = tensor(&[1 << 20]);
            Box::new(move || drop(cpu.unary(UnaryOp::GeluTanh, &a).unwrap()))
        }),
        ("softmax [12,128,128] last", {
            let a = tensor(&[12, 128, 128]);
            Box::new(move || drop(cpu.softmax(&a, 2).unwrap()))
        }),
        ("softmax [12,128,128] axis 1", {
            let a = tensor(&[12, 128, 128]);
            Box::new(move || drop(cpu.softmax(&a, 1).unwrap()))
        }),
        ("layer-norm [128,768]", {
            let (a, g, b) = (tensor(&[128, 768]), tensor(&[768]), tensor(&[768]));
            Box::new(move || drop(cpu.layer_norm(&a, Some(&g), Some(&b), 1e-5).unwrap()))
        }),
        ("reduce sum [1024,1024] axis 0", {
            let a = tensor(&[1024, 1024]);
            Box::new(move || drop(cpu.reduce(ReduceOp::Sum, &a, 0, false).unwrap()))
        }),
        ("reduce max [1024,1024] axis 1", {
            let a = tensor(&[1024, 1024]);
            Box::new(move || drop(cpu.reduce(ReduceOp::Max, &a, 1, false).unwrap()))
        }),
        ("transpose [1024,1024] [1,0]", {
            let a = tensor(&[1024, 1024]);
            Box::new(move || drop(cpu.transpose(&a, &[1, 0]).unwrap()))
        }),
        ("transpose [1,128,12,64] heads", {
            let a = tensor(&[1, 128, 12, 64]);
            Box::new(move || drop(cpu.transpose(&a, &[0, 2, 1, 3]).unwrap()))
        }),
        ("cast f32->f16 [1M]", {
            let a = tensor(&[1 << 20]);
            Box::new(move || drop(cpu.cast(&a, DType::F16).unwrap()))
        }),
        ("attention causal [12,128,64]", {
            let (q, k, v) = (
                tensor(&[12, 128, 64]),
                tensor(&[12, 128, 64]),
                tensor(&[12, 128, 64]),
            );
            Box::new(move || drop(cpu.attention(&q, &k, &v, None, p).unwrap()))
        }),
        ("attention decode [12,1,64] over 1024", {
            let (q, k, v) = (
                tensor(&[12, 1, 64]),
                tensor(&[12, 1024, 64]),
                tensor(&[12, 1024, 64]),
            );
            Box::new(move || drop(cpu.attention(&q, &k, &v, None, p).unwrap()))
        }),
        ("conv2d [1,64,56,56] 3x3x64", {
            let (x, w) = (tensor(&[1, 64, 56, 56]), tensor(&[64, 64, 3, 3]));
            let params = Conv2d {
                stride: (1, 1),
                padding: (1, 1),
                dilation: (1, 1),
                groups: 1,
            };
            Box::new(move || drop(cpu.conv2d(&x, &w, None, params).unwrap()))
        }),
        ("conv2d [8,32,28,28] depthwise", {
            let (x, w) = (tensor(&[8, 32, 28, 28]), tensor(&[32, 1, 3, 3]));
            let params = Conv2d {
                stride: (1, 1),
                padding: (1, 1),
                dilation: (1, 1),
                groups: 32,
            };
            Box::new(move || drop(cpu.conv2d(&x, &w, None, params).unwrap()))
        }),
        ("pool2d max [8,64,56,56] 3x3/2", {
            let x = tensor(&[8, 64, 56, 56]);
            let params = Pool2d {
                kind: PoolKind::Max,
                kernel: (3, 3),
                stride: (2, 2),
                padding: (1, 1),
            };
            Box::new(move || drop(cpu.pool2d(&x, params).unwrap()))
        }),
        ("top-k 50 of [32,50000]", {
            let x = tensor(&[32, 50_000]);
            Box::new(move || drop(cpu.top_k(&x, 50).unwrap()))
        }),
    ];
    for (name, f) in &cases {
        if name.contains(&filter) {
            println!("{name:40} {:>10.1?}", time(f));
        }
    }
}

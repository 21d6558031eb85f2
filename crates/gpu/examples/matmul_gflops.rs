//! Square matmul throughput of the GPU backend next to the CPU backend, as a
//! Markdown table. `cargo run --release -p edgeserve-gpu --example
//! matmul_gflops [sizes...]` (default 256 512 1024 2048 4096; on a software
//! adapter such as lavapipe sizes above 1024 are skipped, with a note,
//! unless named explicitly).
//!
//! GPU timings include recording, one submission and reading the last
//! result back, averaged over several products.

use std::time::{Duration, Instant};

use edgeserve_gpu::GpuBackend;
use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::{Backend, Tensor};

/// Average seconds per call of `f`, repeated until about `budget` elapsed.
fn time(budget: Duration, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    f(1);
    let once = start.elapsed().as_secs_f64().max(1e-6);
    let reps = ((budget.as_secs_f64() / once) as usize).clamp(1, 50);
    let start = Instant::now();
    f(reps);
    start.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let gpu = GpuBackend::new().unwrap_or_else(|e| panic!("{e}"));
    let sizes = if !sizes.is_empty() {
        sizes
    } else if gpu.is_software() {
        // A software rasterizer needs minutes for 4096³; name the sizes to
        // run them anyway.
        println!("(software adapter: 2048³ and 4096³ skipped; pass sizes to run them)\n");
        vec![256, 512, 1024]
    } else {
        vec![256, 512, 1024, 2048, 4096]
    };
    let cpu = CpuBackend::new();
    let (gi, ci) = (gpu.info(), cpu.info());
    println!(
        "GPU: {} ({}, {}; shader-f16: {})  ",
        gi.device,
        gi.api,
        gi.driver,
        if gpu.adapter_has_shader_f16() {
            "yes"
        } else {
            "no"
        }
    );
    println!("CPU: {}\n", ci.device);
    println!("| size | GPU GFLOP/s | CPU GFLOP/s | GPU/CPU |");
    println!("|-----:|------------:|------------:|--------:|");
    for n in sizes {
        let data: Vec<f32> = (0..n * n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let a = Tensor::from_f32(&[n, n], data.clone()).expect("shape fits");
        let b = Tensor::from_f32(&[n, n], data).expect("shape fits");
        let (ga, gb) = (
            gpu.from_host(&a).expect("upload"),
            gpu.from_host(&b).expect("upload"),
        );
        let flops = 2.0 * (n as f64).powi(3);
        let budget = Duration::from_millis(700);
        let g = time(budget, |reps| {
            let mut last = None;
            for _ in 0..reps {
                last = Some(gpu.matmul(&ga, &gb, false).expect("gpu matmul"));
            }
            gpu.to_host(&last.expect("reps >= 1")).expect("read back");
        });
        let c = time(budget, |reps| {
            for _ in 0..reps {
                cpu.matmul(&a, &b, false).expect("cpu matmul");
            }
        });
        let (gg, cg) = (flops / g / 1e9, flops / c / 1e9);
        println!("| {n}³ | {gg:.1} | {cg:.1} | {:.2} |", gg / cg);
    }
}

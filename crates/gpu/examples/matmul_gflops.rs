//! Square matmul throughput of the GPU backend next to the CPU backend, as a
//! Markdown table. `cargo run --release -p edgeserve-gpu --example
//! matmul_gflops [sizes...]` (default 256 512 1024 2048 4096; on a software
//! adapter such as lavapipe sizes above 1024 are skipped, with a note,
//! unless named explicitly).
//!
//! GPU timings include recording, one submission and waiting for the last
//! product, averaged over up to 1000 products in about a second (as
//! `bench/torch_sgemm.py` times PyTorch): the wait reads back one row of the
//! last result, since copying a whole 4096² result to the host would cost
//! more than the product it follows. The f16 column runs the
//! native f16 kernel where the device has `shader-f16` (otherwise widening
//! through f32). A second table times `linear` (bias + gelu fused into the
//! product) against matmul, add and gelu as three calls, on each backend. A
//! third times the f32 product in each grid order of the kernel
//! ([`GpuBackend::set_matmul_tile_group`]), the orders taking turns twice.

use std::time::{Duration, Instant};

use edgeserve_gpu::GpuBackend;
use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::{Backend, BinaryOp, DType, Ops, Tensor, UnaryOp};

/// Average seconds per call of `f`, repeated until about `budget` elapsed.
fn time(budget: Duration, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    f(1);
    let once = start.elapsed().as_secs_f64().max(1e-6);
    let reps = ((budget.as_secs_f64() / once) as usize).clamp(1, 1000);
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
    let (gops, cops) = (gpu.ops(), cpu.ops());
    println!(
        "GPU: {} ({}, {}; shader-f16: {})  ",
        gi.device,
        gi.api,
        gi.driver,
        if gpu.has_shader_f16() { "yes" } else { "no" }
    );
    println!("CPU: {}\n", ci.device);
    println!("| size | GPU GFLOP/s | GPU f16 GFLOP/s | CPU GFLOP/s | GPU/CPU |");
    println!("|-----:|------------:|----------------:|------------:|--------:|");
    let mut fusion = Vec::new();
    let mut orders = Vec::new();
    for &n in &sizes {
        let data: Vec<f32> = (0..n * n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let a = Tensor::from_f32(&[n, n], data.clone()).expect("shape fits");
        let b = Tensor::from_f32(&[n, n], data).expect("shape fits");
        let (ga, gb) = (
            gops.from_host(&a).expect("upload"),
            gops.from_host(&b).expect("upload"),
        );
        let flops = 2.0 * (n as f64).powi(3);
        let budget = Duration::from_secs(1);
        // Averages `op` on `ops`' backend, waiting for the last result by
        // reading its first row back.
        let run = |ops: Ops<'_>, op: &dyn Fn() -> Tensor| {
            time(budget, |reps| {
                let mut last = None;
                for _ in 0..reps {
                    last = Some(op());
                }
                // (Through f32: the GPU backend slices f32 only.)
                let last = ops.cast(&last.expect("reps >= 1"), DType::F32);
                let row = ops.slice(&last.expect("cast"), 0, 0, 1).expect("first row");
                ops.to_host(&row).expect("read back");
            })
        };
        let g = run(gops, &|| gops.matmul(&ga, &gb, false).expect("gpu matmul"));
        let mut by_order = vec![Vec::new(); ORDERS.len()];
        for _ in 0..2 {
            for (rows, samples) in ORDERS.iter().zip(&mut by_order) {
                gpu.set_matmul_tile_group(*rows);
                let t = run(gops, &|| gops.matmul(&ga, &gb, false).expect("gpu matmul"));
                samples.push(flops / t / 1e9);
            }
        }
        gpu.set_matmul_tile_group(1);
        orders.push((n, by_order));
        let (ha, hb) = (
            gops.cast(&ga, DType::F16).expect("cast"),
            gops.cast(&gb, DType::F16).expect("cast"),
        );
        let h = run(gops, &|| {
            gops.matmul(&ha, &hb, false).expect("gpu f16 matmul")
        });
        let c = run(cops, &|| cops.matmul(&a, &b, false).expect("cpu matmul"));
        let (gg, hg, cg) = (flops / g / 1e9, flops / h / 1e9, flops / c / 1e9);
        println!("| {n}³ | {gg:.1} | {hg:.1} | {cg:.1} | {:.2} |", gg / cg);

        let bias = Tensor::from_f32(&[n], vec![0.25; n]).expect("shape fits");
        let gbias = gops.from_host(&bias).expect("upload");
        let fused = |be: Ops<'_>, a: &Tensor, b: &Tensor, bias: &Tensor| {
            be.linear(a, b, false, Some(bias), Some(UnaryOp::Gelu))
                .expect("linear")
        };
        let apart = |be: Ops<'_>, a: &Tensor, b: &Tensor, bias: &Tensor| {
            let y = be.matmul(a, b, false).expect("matmul");
            let y = be.binary(BinaryOp::Add, &y, bias).expect("add");
            be.unary(UnaryOp::Gelu, &y).expect("gelu")
        };
        let gf = run(gops, &|| fused(gops, &ga, &gb, &gbias));
        let gs = run(gops, &|| apart(gops, &ga, &gb, &gbias));
        let cf = run(cops, &|| fused(cops, &a, &b, &bias));
        let cs = run(cops, &|| apart(cops, &a, &b, &bias));
        fusion.push((n, gs / gf, cs / cf));
    }
    println!("\n| size | GPU separate/fused | CPU separate/fused |");
    println!("|-----:|-------------------:|-------------------:|");
    for (n, g, c) in fusion {
        println!("| {n}³ | {g:.2} | {c:.2} |");
    }
    let heads: Vec<String> = ORDERS
        .iter()
        .map(|rows| match rows {
            1 => "row after row".to_owned(),
            rows => format!("groups of {rows} tile rows"),
        })
        .collect();
    println!(
        "\n| size (GPU f32 GFLOP/s, two turns) | {} |",
        heads.join(" | ")
    );
    println!("|-----:|{}", "---:|".repeat(ORDERS.len()));
    for (n, by_order) in orders {
        let cells: Vec<String> = by_order
            .iter()
            .map(|turns| {
                // A software adapter's figures of about 1 keep a decimal.
                let turns: Vec<String> = turns
                    .iter()
                    .map(|&g| {
                        if g < 100.0 {
                            format!("{g:.1}")
                        } else {
                            format!("{g:.0}")
                        }
                    })
                    .collect();
                turns.join(", ")
            })
            .collect();
        println!("| {n}³ | {} |", cells.join(" | "));
    }
}

/// The matmul grid orders timed side by side: tile rows per group.
const ORDERS: [u32; 3] = [1, 4, 8];

//! Per-op dispatch overhead of the GPU backend, and how requests on several
//! threads share the device, as Markdown tables. `cargo run --release -p
//! edgeserve-gpu --example dispatch_overhead [ops-per-chain]` (default 400).
//!
//! The first table records chains of small ops (a 64-element `affine`, and
//! a 16x64 block of linear, softmax and layer-norm) and reads the last result
//! back: microseconds per op, recording and device time together (on such
//! tiny tensors that is the backend's fixed cost per op), and the part of it
//! spent recording, before the read-back submits. The affine chain runs
//! twice: over a few recycled buffers, where dispatches bind the same
//! buffers again and reuse a bind group, and keeping every result, where
//! none does. The second runs a model-like request, 24 linear layers with
//! weights of their own, 100 times: microseconds per layer, and the part
//! of it spent recording. The third runs the same request (a chain of 16
//! small ops and one read-back) on 1, 2, 4 and 8 threads at once, each
//! thread with its own inputs, and reports requests per second over all
//! of them: with the inputs resident, and with each request's input
//! uploaded and freed as a served request's is; and, per request, the time
//! spent recording and reading back, which tells whether requests side by
//! side contend while they record or while they wait for the device. The
//! fourth has one thread free a 1 MiB weight (a buffer destroyed, not
//! pooled, as when a model is unloaded) while a request waits for a long
//! read-back, and another request record a small op just after: how long
//! the free and that recording take.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use edgeserve_gpu::GpuBackend;
use edgeserve_tensor::{Backend, Ops, Tensor, UnaryOp};

/// Small inputs of one request: `x` `[16, 64]`, a `[64, 64]` weight, a bias,
/// and the [`LAYERS`] weights of a model-like request.
#[derive(Clone)]
struct Inputs {
    x: Tensor,
    w: Tensor,
    bias: Tensor,
    row: Tensor,
    layers: Vec<Tensor>,
}

/// Layers of [`model_request`], each with weights of its own.
const LAYERS: usize = 24;

fn inputs(ops: Ops<'_>, seed: usize) -> Inputs {
    let data = |n: usize, k: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * k) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    };
    let up = |shape: &[usize], k| {
        let n = shape.iter().product();
        ops.from_host(&Tensor::from_f32(shape, data(n, k)).expect("shape fits"))
            .expect("upload")
    };
    Inputs {
        x: up(&[16, 64], 7919),
        w: up(&[64, 64], 104_729),
        bias: up(&[64], 31),
        row: up(&[64], 17),
        layers: (0..LAYERS).map(|l| up(&[64, 64], 1009 + 2 * l)).collect(),
    }
}

/// A model's request: `x` through [`LAYERS`] linear layers (bias + gelu),
/// each binding weights no other dispatch of the request binds, as a real
/// model's layers do; only the next request binds them again.
fn model_request(ops: Ops<'_>, i: &Inputs) -> Tensor {
    let mut t = i.x.clone();
    for w in &i.layers {
        t = ops
            .linear(&t, w, false, Some(&i.bias), Some(UnaryOp::Gelu))
            .expect("linear");
    }
    t
}

/// Records a chain of `len` ops on a request's inputs.
type Chain = fn(Ops<'_>, &Inputs, usize) -> Tensor;

/// A chain of `len` tiny affine ops on a 64-element tensor.
fn affine_chain(ops: Ops<'_>, i: &Inputs, len: usize) -> Tensor {
    let mut t = i.row.clone();
    for _ in 0..len {
        t = ops.affine(&t, 0.5, 0.25).expect("affine");
    }
    t
}

/// [`affine_chain`] keeping every result alive until the end, so that no
/// two of its dispatches bind the same buffers: none reuses a bind group.
fn affine_kept_chain(ops: Ops<'_>, i: &Inputs, len: usize) -> Tensor {
    let mut kept = Vec::with_capacity(len);
    let mut t = i.row.clone();
    for _ in 0..len {
        t = ops.affine(&t, 0.5, 0.25).expect("affine");
        kept.push(t.clone());
    }
    t
}

/// A chain of `len` ops cycling linear (bias + gelu), softmax, layer-norm.
fn mixed_chain(ops: Ops<'_>, i: &Inputs, len: usize) -> Tensor {
    let mut t = i.x.clone();
    for step in 0..len {
        t = match step % 3 {
            0 => ops
                .linear(&t, &i.w, false, Some(&i.bias), Some(UnaryOp::Gelu))
                .expect("linear"),
            1 => ops.softmax(&t, -1).expect("softmax"),
            _ => ops.layer_norm(&t, None, None, 1e-5).expect("layer-norm"),
        };
    }
    t
}

/// Best of `rounds` timings of `f`.
fn best(rounds: usize, mut f: impl FnMut()) -> Duration {
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .expect("rounds >= 1")
}

fn main() {
    let len: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(400);
    let gpu = GpuBackend::new().unwrap_or_else(|e| panic!("{e}"));
    let ops = gpu.ops();
    let info = gpu.info();
    println!("GPU: {} ({}, {})\n", info.device, info.api, info.driver);
    let one = inputs(ops, 1);
    // Pipelines built and the pool filled before timing.
    ops.to_host(&affine_chain(ops, &one, 8)).expect("read back");
    ops.to_host(&mixed_chain(ops, &one, 8)).expect("read back");

    println!("| chain ({len} ops, one read-back) | µs per op | of which recording |");
    println!("|:--|--:|--:|");
    let per_op = |d: Duration| d.as_secs_f64() * 1e6 / len as f64;
    let chains: [(&str, Chain); 3] = [
        ("affine [64]", affine_chain),
        ("affine [64], every result kept", affine_kept_chain),
        ("linear+gelu / softmax / layer-norm [16, 64]", mixed_chain),
    ];
    for (name, chain) in chains {
        let mut recording = Duration::MAX;
        let total = best(5, || {
            let start = Instant::now();
            let t = chain(ops, &one, len);
            recording = recording.min(start.elapsed());
            ops.to_host(&t).expect("read back");
        });
        println!(
            "| {name} | {:.1} | {:.1} |",
            per_op(total),
            per_op(recording)
        );
    }

    println!(
        "\n| {LAYERS} layers, each its own weights, then a read-back (100 requests) | µs per op | of which recording |"
    );
    println!("|:--|--:|--:|");
    const MODEL_REQUESTS: usize = 100;
    let (mut total, mut recording) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..MODEL_REQUESTS {
        let start = Instant::now();
        let t = model_request(ops, &one);
        recording += start.elapsed();
        ops.to_host(&t).expect("read back");
        total += start.elapsed();
    }
    let per_layer = |d: Duration| d.as_secs_f64() * 1e6 / (MODEL_REQUESTS * LAYERS) as f64;
    println!(
        "| linear+gelu [16, 64] | {:.1} | {:.1} |",
        per_layer(total),
        per_layer(recording)
    );

    println!(
        "\n| threads | inputs | requests/s | vs 1 thread | recording, µs per request | read-back, µs per request |"
    );
    println!("|--:|:--|--:|--:|--:|--:|");
    let mut single = [0.0; 2];
    for threads in [1usize, 2, 4, 8] {
        let per_thread: Vec<Inputs> = (0..threads).map(|t| inputs(ops, 100 + t)).collect();
        let hosts: Vec<Tensor> = per_thread
            .iter()
            .map(|i| ops.to_host(&i.x).expect("read back"))
            .collect();
        for (column, upload) in [false, true].into_iter().enumerate() {
            let round = (0..3)
                .map(|_| threads_round(&gpu, &per_thread, &hosts, upload))
                .min_by_key(|round| round.took)
                .expect("three rounds");
            let requests = (threads * THREAD_REQUESTS) as f64;
            let rate = requests / round.took.as_secs_f64();
            if threads == 1 {
                single[column] = rate;
            }
            let per_request = |d: Duration| d.as_secs_f64() * 1e6 / requests;
            println!(
                "| {threads} | {} | {rate:.0} | {:.2} | {:.1} | {:.1} |",
                if upload {
                    "uploaded per request"
                } else {
                    "resident"
                },
                rate / single[column],
                per_request(round.recording),
                per_request(round.read_back),
            );
        }
    }

    free_during_read_back(&gpu);
}

/// The fourth table: request A waits for a long read-back, B frees a 1 MiB
/// weight meanwhile, and request C records an op 2 ms after B starts
/// freeing. Medians of 3 rounds, in ms.
fn free_during_read_back(gpu: &GpuBackend) {
    let ops = gpu.ops();
    const N: usize = 512;
    let a = ops
        .from_host(&Tensor::from_f32(&[N, N], vec![1.0 / N as f32; N * N]).expect("shape"))
        .expect("upload");
    let chain = |ops: Ops<'_>, len: usize| {
        (0..len).fold(a.clone(), |t, _| ops.matmul(&t, &a, false).expect("matmul"))
    };
    // A chain long enough that A's wait lasts at least 50 ms on this device
    // (timed once the matmul pipeline is built).
    ops.to_host(&chain(ops, 1)).expect("read back");
    let mut len = 1;
    while best(1, || {
        drop(ops.to_host(&chain(ops, len)).expect("read back"))
    }) < Duration::from_millis(50)
        && len < 1 << 16
    {
        len *= 2;
    }
    let large = Tensor::from_f32(&[1 << 18], vec![1.0; 1 << 18])
        .expect("shape")
        .into_weight();
    let small = Tensor::from_f32(&[64], vec![1.0; 64]).expect("shape");
    let mut rounds: Vec<[Duration; 4]> = (0..3)
        .map(|_| {
            let (waiting, waits) = mpsc::channel();
            let (freeing, frees) = mpsc::channel();
            let (chain, small) = (&chain, &small);
            std::thread::scope(|s| {
                let a = s.spawn(move || {
                    let ops = gpu.ops();
                    let t = chain(ops, len);
                    let start = Instant::now();
                    waiting.send(()).expect("main thread");
                    ops.to_host(&t).expect("read back");
                    start.elapsed()
                });
                let c = s.spawn(move || {
                    let ops = gpu.ops();
                    frees.recv().expect("main thread");
                    std::thread::sleep(Duration::from_millis(2));
                    let start = Instant::now();
                    let y = ops
                        .affine(&ops.from_host(small).expect("upload"), 2.0, 1.0)
                        .expect("affine");
                    let recorded = start.elapsed();
                    ops.to_host(&y).expect("read back");
                    (recorded, start.elapsed())
                });
                let input = ops.from_host(&large).expect("upload");
                waits.recv().expect("request A");
                // A is inside its wait by now.
                std::thread::sleep(Duration::from_millis(5));
                freeing.send(()).expect("request C");
                let start = Instant::now();
                drop(input);
                let freed = start.elapsed();
                let (recorded, answered) = c.join().expect("request C");
                [a.join().expect("request A"), freed, recorded, answered]
            })
        })
        .collect();
    let ms = |column: usize, rounds: &mut Vec<[Duration; 4]>| {
        rounds.sort_by_key(|r| r[column]);
        rounds[rounds.len() / 2][column].as_secs_f64() * 1e3
    };
    println!(
        "\n| A's read-back ({len} matmuls [{N}, {N}]) | B frees a 1 MiB weight | C records an affine [64] | C's request, read-back included |"
    );
    println!("|--:|--:|--:|--:|");
    println!(
        "| {:.1} ms | {:.3} ms | {:.3} ms | {:.1} ms |",
        ms(0, &mut rounds),
        ms(1, &mut rounds),
        ms(2, &mut rounds),
        ms(3, &mut rounds),
    );
}

/// Requests each thread of the third table makes per round.
const THREAD_REQUESTS: usize = 60;

/// One round of the third table: its wall time, and the time its threads
/// spent recording and reading back, summed over them. Where concurrent
/// requests contend shows as which of the two grows with the threads.
struct ThreadsRound {
    took: Duration,
    recording: Duration,
    read_back: Duration,
}

/// [`THREAD_REQUESTS`] requests (a chain of 16 small ops and one read-back)
/// on each of `per_thread`'s threads at once; with `upload`, each request's
/// input is uploaded from `hosts` and freed when it is done, as a served
/// request's is.
fn threads_round(
    gpu: &GpuBackend,
    per_thread: &[Inputs],
    hosts: &[Tensor],
    upload: bool,
) -> ThreadsRound {
    let start = Instant::now();
    let spent: Vec<(Duration, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = per_thread
            .iter()
            .zip(hosts)
            .map(|(i, host)| {
                s.spawn(move || {
                    let ops = gpu.ops();
                    let (mut recording, mut read_back) = (Duration::ZERO, Duration::ZERO);
                    for _ in 0..THREAD_REQUESTS {
                        let started = Instant::now();
                        let x = upload.then(|| ops.from_host(host).expect("upload"));
                        let request = Inputs {
                            x: x.unwrap_or_else(|| i.x.clone()),
                            ..i.clone()
                        };
                        let y = mixed_chain(ops, &request, 16);
                        let recorded = Instant::now();
                        ops.to_host(&y).expect("read back");
                        recording += recorded - started;
                        read_back += recorded.elapsed();
                    }
                    (recording, read_back)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a request thread"))
            .collect()
    });
    ThreadsRound {
        took: start.elapsed(),
        recording: spent.iter().map(|s| s.0).sum(),
        read_back: spent.iter().map(|s| s.1).sum(),
    }
}

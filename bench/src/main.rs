//! Benchmarks of edgeserve, each against a baseline measured in the same run
//! on the same machine — the ratios are the figures, never absolute times:
//!
//! 1. [`startup`]: a fresh initialized `linear` instance (against a warm
//!    infer call), and compiling cold (against a compile-cache hit);
//! 2. [`infer`]: `Instance::infer` through wasm (against the same two host
//!    ops called natively);
//! 3. [`http`]: OIP over loopback under concurrent load (against a native
//!    axum handler doing the same JSON work, [`native`]).
//!
//! `cargo run --release -p edgeserve-bench [-- --quick]` prints a Markdown
//! report. `-- --tls` measures instead what the post-quantum hybrid key
//! exchange costs a TLS handshake ([`tls`], against X25519 alone).

mod http;
mod infer;
mod native;
mod startup;
mod stats;
mod tls;

use std::time::Duration;

use anyhow::Context as _;

use edgeserve::runtime::Runtime;
use edgeserve_e2e::runtime_config;

use crate::stats::{Samples, duration_ratio, fmt_duration, median_with_ci, ratio};
use edgeserve_e2e::linear::Linear;

// The `edgeserve` binary's allocator, so the in-process server (and the
// native handler beside it) allocate as the shipped server does.
#[global_allocator]
static ALLOCATOR: edgeserve::malloc::Allocator = edgeserve::malloc::Allocator;

/// Iteration counts and durations of a run.
struct Plan {
    quick: bool,
    /// HTTP rounds asked for on the command line.
    rounds: Option<u32>,
    startup: startup::Config,
    infer_calls: usize,
    http: http::Config,
}

impl Plan {
    /// The full plan, or the quick one; `rounds` of 1 s per server
    /// instead of the plan's HTTP rounds.
    fn new(quick: bool, rounds: Option<u32>) -> Plan {
        let pick = |full: usize, fast: usize| if quick { fast } else { full };
        let millis = |full, fast| Duration::from_millis(if quick { fast } else { full });
        Plan {
            quick,
            rounds,
            startup: startup::Config {
                compiles: pick(5, 2),
                cache_loads: pick(100, 20),
                instances: pick(1000, 100),
            },
            infer_calls: pick(20_000, 2_000),
            http: http::Config {
                connections: 32,
                warmup: millis(1000, 250),
                // Slices of 1 s, alternating: the machine's speed drifts by
                // tens of percent over seconds, and each server must see it alike.
                duration: match rounds {
                    Some(n) => Duration::from_secs(n.into()),
                    None => millis(12_000, 1000),
                },
                rounds: rounds.unwrap_or(if quick { 1 } else { 12 }),
            },
        }
    }

    fn command(&self) -> String {
        let mut args = Vec::new();
        if self.quick {
            args.push("--quick".to_owned());
        }
        if let Some(n) = self.rounds {
            args.push(format!("--rounds {n}"));
        }
        let command = "cargo run --release -p edgeserve-bench";
        if args.is_empty() {
            command.to_owned()
        } else {
            format!("{command} -- {}", args.join(" "))
        }
    }
}

/// One line of the report: a measurement, its baseline, and their ratio.
struct Row {
    what: String,
    value: String,
    baseline: String,
    baseline_value: String,
    ratio: String,
}

impl Row {
    fn new(
        what: impl Into<String>,
        value: impl Into<String>,
        baseline: impl Into<String>,
        baseline_value: impl Into<String>,
        ratio: impl Into<String>,
    ) -> Row {
        Row {
            what: what.into(),
            value: value.into(),
            baseline: baseline.into(),
            baseline_value: baseline_value.into(),
            ratio: ratio.into(),
        }
    }

    /// A row of two durations, with their ratio.
    fn durations(
        what: impl Into<String>,
        value: Duration,
        baseline: impl Into<String>,
        baseline_value: Duration,
    ) -> Row {
        Row::new(
            what,
            fmt_duration(value),
            baseline,
            fmt_duration(baseline_value),
            duration_ratio(value, baseline_value),
        )
    }

    /// A row of two medians, the measurement's labelled with its sample
    /// count.
    fn medians(
        what: &str,
        samples: &Samples,
        baseline: impl Into<String>,
        baseline_samples: &Samples,
    ) -> Row {
        Row::durations(
            format!("{what}, median, n={}", samples.len()),
            samples.median(),
            baseline,
            baseline_samples.median(),
        )
    }
}

const USAGE: &str = "usage: edgeserve-bench [--quick] [--rounds N]
       edgeserve-bench --tls [--rounds N] (TLS handshakes: the post-quantum
                                         hybrid against X25519)
       edgeserve-bench --serve-native   (the native handler alone: prints its
                                         address, serves until stopped)";

fn main() -> anyhow::Result<()> {
    let mut quick = false;
    let mut native_only = false;
    let mut handshakes = false;
    let mut rounds = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--rounds" => {
                let n = args.next().and_then(|n| n.parse::<u32>().ok());
                rounds = Some(n.filter(|&n| n > 0).context(USAGE)?);
            }
            "--serve-native" => native_only = true,
            "--tls" => handshakes = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    edgeserve::malloc::purge_after(edgeserve::malloc::DEFAULT_PURGE_MS);
    if native_only {
        return serve_native();
    }
    if handshakes {
        return report_handshakes(rounds.unwrap_or(10));
    }
    let plan = Plan::new(quick, rounds);
    // The compute threads the binary runs with by default.
    edgeserve_tensor::cpu::use_threads(edgeserve::cli::compute_threads(None))?;

    eprintln!("preparing linear…");
    let linear = Linear::load()?;
    let runtime = Runtime::new(&runtime_config(None))?;
    let allocator = runtime.allocator();
    eprintln!("1/3 compile and instance creation…");
    let startup = startup::run(&linear, &runtime, &plan.startup)?;
    eprintln!("2/3 host→guest infer…");
    let infer = infer::run(&linear, &runtime, plan.infer_calls)?;
    drop(runtime);
    eprintln!("3/3 HTTP load…");
    let (edgeserve, native) = tokio::runtime::Runtime::new()?.block_on(http::run(&plan.http))?;

    // Both servers see a round's slice of the machine's drift alike, so the
    // ratio of each round resolves what the totals blur.
    let round_ratios: Vec<f64> = edgeserve
        .rounds
        .iter()
        .zip(&native.rounds)
        .map(|(e, n)| e / n)
        .collect();
    let (median, low, high) = median_with_ci(&round_ratios);
    let s = &startup;
    let overhead = infer.wasm.median().saturating_sub(infer.native.median());
    let latency = |q: f64, name: &str| {
        Row::durations(
            format!("HTTP latency {name}"),
            edgeserve.latency.quantile(q),
            format!("native handler, {name}"),
            native.latency.quantile(q),
        )
    };
    let rows = [
        Row::medians(
            "Instance creation (instantiate + init)",
            &s.create,
            "warm `Instance::infer` [1,1], median",
            &infer.wasm,
        ),
        Row::durations(
            "Instance creation, p99",
            s.create.p99(),
            "warm `Instance::infer` [1,1], p99",
            infer.wasm.p99(),
        ),
        Row::medians(
            "Compile cold (no cache)",
            &s.compile_cold,
            format!("compile-cache hit, median, n={}", s.compile_cached.len()),
            &s.compile_cached,
        ),
        Row::medians(
            "`Instance::infer` [1,1] through wasm",
            &infer.wasm,
            "native `CpuBackend` matmul + add, median",
            &infer.native,
        ),
        Row::new(
            "Host→guest overhead per call (difference of medians)",
            fmt_duration(overhead),
            "",
            "",
            "",
        ),
        Row::new(
            format!("HTTP throughput, {} connections", plan.http.connections),
            format!("{:.0} req/s", edgeserve.throughput()),
            "native handler",
            format!("{:.0} req/s", native.throughput()),
            ratio(edgeserve.throughput(), native.throughput()),
        ),
        Row::new(
            format!(
                "HTTP throughput ratio per round, median [95% CI], n={}",
                round_ratios.len()
            ),
            "",
            "native handler, same round",
            "",
            format!("{median:.3}× [{low:.3}, {high:.3}]"),
        ),
        latency(0.5, "p50"),
        latency(0.99, "p99"),
    ];

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("## edgeserve benchmark\n");
    println!("- Command: `{}`", plan.command());
    println!("- Machine: {}, {cores} cores, {}", cpu_model(), os());
    println!("- Model: `linear` (y = 0.1·x + 0.3), {allocator} allocator, CPU backend");
    println!(
        "- HTTP: `POST /v2/models/linear/infer`, JSON, x of shape [4,1]; {} keep-alive \
         connections, {:?} warm-up + {:?} timed per server in {} round(s) alternating between the servers; edgeserve serves with its \
         shipped `instances = {}`; client, edgeserve and the native server share the \
         {cores} cores (the load generator competes with the server it measures); \
         {} / {} requests failed (edgeserve / native)",
        plan.http.connections,
        plan.http.warmup,
        plan.http.duration,
        plan.http.rounds,
        linear.config.instances,
        edgeserve.errors,
        native.errors,
    );
    println!("- Ratio = value ÷ baseline value, both measured in this run\n");
    println!("| Measurement | Value | Baseline (same run) | Baseline value | Ratio |");
    println!("|---|---:|---|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.what, r.value, r.baseline, r.baseline_value, r.ratio
        );
    }
    Ok(())
}

/// Handshakes per round and group: about a second's worth.
const HANDSHAKES_PER_ROUND: usize = 500;

/// Runs [`tls::run`] and prints its table.
fn report_handshakes(rounds: u32) -> anyhow::Result<()> {
    eprintln!("TLS handshakes, {rounds} rounds…");
    let run = tokio::runtime::Runtime::new()?.block_on(tls::run(rounds, HANDSHAKES_PER_ROUND))?;
    let [hybrid, classical] = &run.samples;
    let round_ratios: Vec<f64> = (run.rounds[0].iter())
        .zip(&run.rounds[1])
        .map(|(h, c)| h.as_secs_f64() / c.as_secs_f64())
        .collect();
    let (median, low, high) = median_with_ci(&round_ratios);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("## TLS handshakes: the post-quantum hybrid against X25519\n");
    println!("- Command: `cargo run --release -p edgeserve-bench -- --tls --rounds {rounds}`");
    println!("- Machine: {}, {cores} cores, {}", cpu_model(), os());
    println!(
        "- Each: a fresh TCP connection to an in-process edgeserve (aws-lc-rs, P-256 \
         certificate), TLS 1.3 handshake, `GET /v2/health/live`, answer read to its end; \
         {HANDSHAKES_PER_ROUND} per key exchange per round, the two taking turns; client and \
         server share the {cores} cores"
    );
    println!("- Ratio = value ÷ baseline value, both measured in this run\n");
    println!("| Measurement | Value | Baseline (same run) | Baseline value | Ratio |");
    println!("|---|---:|---|---:|---:|");
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        let (h, c) = (hybrid.quantile(q), classical.quantile(q));
        println!(
            "| Connection with X25519MLKEM768, {name} | {} | X25519, {name} | {} | {} |",
            fmt_duration(h),
            fmt_duration(c),
            duration_ratio(h, c)
        );
    }
    println!(
        "| Ratio of the round medians, median [95% CI], n={} | | X25519, same round | | {median:.3}× [{low:.3}, {high:.3}] |",
        round_ratios.len()
    );
    Ok(())
}

/// The CPU's model name, from /proc/cpuinfo where there is one.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH))
}

/// The operating system and, on Linux, the kernel release.
fn os() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{} {}", std::env::consts::OS, release.trim())
        .trim()
        .to_owned()
}

/// Serves the native handler alone, as `bench/server_cpu.py --native`
/// measures it against an `edgeserve serve` process: its address on the
/// first line of stdout, then until SIGTERM or Ctrl-C.
fn serve_native() -> anyhow::Result<()> {
    use std::io::Write as _;
    use tokio::signal::unix::{SignalKind, signal};

    tokio::runtime::Runtime::new()?.block_on(async {
        let mut terminate = signal(SignalKind::terminate())?;
        let server = native::NativeServer::start().await?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{}", server.addr())?;
        stdout.flush()?;
        tokio::select! {
            _ = terminate.recv() => {}
            stopped = tokio::signal::ctrl_c() => stopped?,
        }
        server.shutdown().await
    })
}

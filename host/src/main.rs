//! The `edgeserve` binary: parse the command line, start, wait for a signal.

use clap::Parser;
use edgeserve::cli::{Cli, Command};

#[global_allocator]
static ALLOCATOR: edgeserve::malloc::Allocator = edgeserve::malloc::Allocator;

fn main() -> anyhow::Result<()> {
    let Cli {
        command,
        log_format,
        memory_purge_ms,
        cpu_simd,
        compute_threads,
    } = Cli::parse();
    edgeserve::logging::init(log_format);
    edgeserve::malloc::purge_after(memory_purge_ms);
    edgeserve_tensor::cpu::cap_simd(cpu_simd.into());
    edgeserve_tensor::cpu::use_threads(edgeserve::cli::compute_threads(compute_threads))?;
    edgeserve::malloc::cap_arenas();
    match edgeserve::accept::raise_descriptor_limit() {
        Ok(files) => tracing::debug!(files, "open file limit"),
        Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
    }
    if edgeserve::devices::skip_device_select_layer(|name| std::env::var_os(name)) {
        let (name, value) = edgeserve::devices::DEVICE_SELECT_OFF;
        // SAFETY: no other thread exists yet (the runtime starts below), so
        // nothing reads the environment while it changes.
        unsafe { std::env::set_var(name, value) };
    }
    tokio::runtime::Runtime::new()?.block_on(run(command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            // Installed before the server starts: a SIGTERM during start-up
            // (a rollout, a test that stops the server as soon as it logs
            // that it serves) would otherwise end the process at once,
            // without the graceful shutdown.
            let stop = shutdown_signal()?;
            let running = edgeserve::app::start(args.settings()).await?;
            stop.await;
            tracing::info!("shutting down: finishing in-flight requests");
            running.shutdown().await?;
        }
        Command::Import(args) => args.run()?,
        Command::New(args) => drop(args.run()?),
        Command::Build(args) => drop(args.run()?),
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C elsewhere); the handlers are
/// installed when this is called, so a signal that arrives before it is
/// awaited is not lost.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

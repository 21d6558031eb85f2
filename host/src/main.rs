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
    } = Cli::parse();
    edgeserve::logging::init(log_format);
    edgeserve::malloc::purge_after(memory_purge_ms);
    edgeserve_tensor::cpu::cap_simd(cpu_simd.into());
    edgeserve::malloc::cap_arenas();
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
            let running = edgeserve::app::start(args.settings()).await?;
            shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            running.shutdown().await?;
        }
        Command::Import(args) => args.run()?,
        Command::New(args) => drop(args.run()?),
        Command::Build(args) => drop(args.run()?),
    }
    Ok(())
}
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

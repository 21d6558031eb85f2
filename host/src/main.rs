//! The `edgeserve` binary: parse the command line, start, wait for a signal.

use clap::Parser;
use edgeserve::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let Cli {
        command,
        log_format,
    } = Cli::parse();
    edgeserve::logging::init(log_format);
    cap_malloc_arenas();
    if edgeserve::devices::skip_device_select_layer(|name| std::env::var_os(name)) {
        let (name, value) = edgeserve::devices::DEVICE_SELECT_OFF;
        // SAFETY: no other thread exists yet (the runtime starts below), so
        // nothing reads the environment while it changes.
        unsafe { std::env::set_var(name, value) };
    }
    tokio::runtime::Runtime::new()?.block_on(run(command))
}

/// At most [`MALLOC_ARENAS`] glibc malloc arenas, unless the deployer set
/// `MALLOC_ARENA_MAX`. glibc gives each thread that finds an arena locked
/// one of its own (up to 8 per core) and keeps their freed memory, so under
/// load the server's RSS grew in steps that never came back (+12% in a
/// 10-minute soak); with two arenas it stays flat at the same throughput
/// (bench/RESULTS.md, "Soak and chaos").
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt sets an allocator parameter under glibc's own
        // lock, and this runs before the threads that allocate much exist.
        if unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) } != 1 {
            tracing::warn!("could not cap glibc's malloc arenas");
        }
    }
}

/// See [`cap_malloc_arenas`].
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 2;

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

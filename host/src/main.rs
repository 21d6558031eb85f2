//! The `edgeserve` binary: parse the command line, start, wait for a signal.

use clap::Parser;
use edgeserve::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Cli { command } = Cli::parse();
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

//! Where the log goes and how it looks: stderr (stdout stays free for what a
//! command prints), coloured only on a terminal, as text or one JSON object
//! per line for log shippers.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The `--log-format` choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Escape codes only help a person at a terminal; in a file or a
        // pipe they are noise. NO_COLOR (no-color.org) turns them off too.
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

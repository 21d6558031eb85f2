//! Plugin authoring: `edgeserve new` scaffolds a handler project in Rust,
//! Python or JavaScript, and `edgeserve build` compiles it into a component
//! and installs it in a model repository. The toolchain each language needs
//! is installed on first use (`toolchain`).

mod build;
mod new;
mod project;
mod toolchain;

use std::path::PathBuf;

use clap::{Args, ValueEnum};

pub use build::{BuildArgs, Installed};
pub use new::NewArgs;
pub use project::{CONTRACT_VERSION, Project};

/// The languages a handler can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Rust, with the `edgeserve-sdk` crate, built for `wasm32-wasip2`.
    Rust,
    /// Python, with the `edgeserve` package, built by `componentize-py`.
    Python,
    /// JavaScript, with the `edgeserve` module, built by `componentize-js`.
    Javascript,
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Javascript => "javascript",
        })
    }
}

/// Why scaffolding, a toolchain or a build failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthorError {
    /// A file could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `edgeserve new` would overwrite something.
    #[error("{} already exists and is not empty; choose another --output", .0.display())]
    NotEmpty(PathBuf),
    /// The name cannot be a model or package name.
    #[error(
        "invalid handler name {0:?}: use lowercase letters, digits and '-', starting with a letter"
    )]
    InvalidName(String),
    /// The project's `edgeserve.toml` is missing or wrong.
    #[error("{}: {message}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A toolchain is missing and could not be installed.
    #[error("the {lang} toolchain is unavailable: {message}")]
    Toolchain {
        /// The language whose toolchain failed.
        lang: Lang,
        /// Why, and what to do about it.
        message: String,
    },
    /// The language's compiler failed.
    #[error("building {name} ({lang}) failed: `{command}` {status}")]
    Build {
        /// The handler.
        name: String,
        /// Its language.
        lang: Lang,
        /// The command that failed.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// The install target exists already.
    #[error("{} already exists; pass another --version or remove it", .0.display())]
    VersionExists(PathBuf),
}

/// Options shared by the author commands for where toolchains live.
#[derive(Debug, Args, Clone)]
pub struct ToolchainArgs {
    /// Folder for the toolchains edgeserve installs (componentize-py's venv,
    /// the npm packages). Defaults to ~/.cache/edgeserve/toolchains.
    #[arg(long, env = "EDGESERVE_TOOLCHAINS_DIR")]
    pub toolchains_dir: Option<PathBuf>,
}

impl ToolchainArgs {
    /// The folder toolchains are installed in.
    pub fn dir(&self) -> PathBuf {
        self.toolchains_dir
            .clone()
            .unwrap_or_else(|| crate::cli::default_cache_dir().join("toolchains"))
    }
}

/// Wraps an I/O error with what was being done to which path.
fn io(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> AuthorError {
    let path = path.into();
    move |source| AuthorError::Io {
        action,
        path,
        source,
    }
}

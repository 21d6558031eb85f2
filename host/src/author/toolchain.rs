//! The compilers each language needs, installed on first use: Rust's
//! `wasm32-wasip2` target through rustup, `componentize-py` in a venv
//! edgeserve manages, and `componentize-js` (with `jco`) from npm in a folder
//! edgeserve manages.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{AuthorError, Lang};

/// The Rust target handlers compile to.
pub const WASM_TARGET: &str = "wasm32-wasip2";
/// The componentize-py release the Python SDK is tested with.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.0";
/// The npm packages of the JavaScript toolchain, pinned to tested releases.
pub const JS_PACKAGES: [&str; 2] = [
    "@bytecodealliance/componentize-js@0.19.3",
    "@bytecodealliance/jco@1.35.0",
];

/// Makes sure Rust can compile to [`WASM_TARGET`], adding the target with
/// rustup when it is missing.
pub fn rust() -> Result<(), AuthorError> {
    let fail = |message: String| AuthorError::Toolchain {
        lang: Lang::Rust,
        message,
    };
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| {
            fail(format!(
                "cannot run rustc ({e}); install Rust from https://rustup.rs"
            ))
        })?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(WASM_TARGET).is_dir() {
        return Ok(());
    }
    eprintln!(
        "edgeserve: installing the Rust target {WASM_TARGET} (first use): rustup target add {WASM_TARGET}"
    );
    run(
        Lang::Rust,
        Command::new("rustup").args(["target", "add", WASM_TARGET]),
        &format!("run `rustup target add {WASM_TARGET}` yourself"),
    )
}

/// The `componentize-py` executable, installed into `<dir>/python` (a venv)
/// on first use.
pub fn python(dir: &Path) -> Result<PathBuf, AuthorError> {
    let venv = dir.join("python");
    let exe = venv.join("bin").join("componentize-py");
    if exe.is_file() {
        return Ok(exe);
    }
    eprintln!(
        "edgeserve: installing {COMPONENTIZE_PY} into {} (first use)",
        venv.display()
    );
    run(
        Lang::Python,
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "install Python 3.9 or later with its venv module (Debian: apt-get install python3-venv)",
    )?;
    run(
        Lang::Python,
        Command::new(venv.join("bin").join("pip")).args(["install", "--quiet", COMPONENTIZE_PY]),
        &format!(
            "check that PyPI is reachable, or install {COMPONENTIZE_PY} into {} yourself",
            venv.display()
        ),
    )?;
    Ok(exe)
}

/// The `componentize-js` executable, installed with npm into `<dir>/js` on
/// first use.
pub fn javascript(dir: &Path) -> Result<PathBuf, AuthorError> {
    let prefix = dir.join("js");
    let exe = prefix.join("node_modules/.bin/componentize-js");
    if exe.is_file() {
        return Ok(exe);
    }
    eprintln!(
        "edgeserve: installing {} into {} with npm (first use)",
        JS_PACKAGES.join(" and "),
        prefix.display()
    );
    std::fs::create_dir_all(&prefix).map_err(super::io("creating", &prefix))?;
    run(
        Lang::Javascript,
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&prefix)
            .args(JS_PACKAGES),
        "install Node.js 18 or later with npm, and check that the npm registry is reachable",
    )?;
    Ok(exe)
}

/// Runs an installation step; a missing program or a failure is a
/// [`AuthorError::Toolchain`] that says what to do.
fn run(lang: Lang, command: &mut Command, remedy: &str) -> Result<(), AuthorError> {
    let shown = format!("{command:?}");
    match command.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(AuthorError::Toolchain {
            lang,
            message: format!("{shown} {status}; {remedy}"),
        }),
        Err(e) => Err(AuthorError::Toolchain {
            lang,
            message: format!("cannot run {shown}: {e}; {remedy}"),
        }),
    }
}

//! Compiles every plugin in `plugins/` to a WebAssembly component and tells
//! the crate where each one is.
//!
//! The plugins form their own cargo workspace (they target `wasm32-wasip2`),
//! so this runs a nested `cargo build --release --target wasm32-wasip2` on
//! `plugins/Cargo.toml`, in a target directory next to this workspace's own
//! (`<target>/wasm-plugins`) that survives rebuilds of this crate. Like
//! wasmtime's `crates/test-programs/artifacts`, it scrubs the variables the
//! outer cargo sets for host compilation so they do not leak into the guest
//! build.
//!
//! Exports, for each plugin crate `<name>`:
//! * `EDGESERVE_PLUGIN_<NAME>` — absolute path of `<name>.wasm` (via
//!   `cargo:rustc-env`);
//! * an entry in `$OUT_DIR/plugins.rs`, which `src/lib.rs` includes.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const WASM_TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let repo = manifest_dir
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf();
    let plugins_dir = repo.join("plugins");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());

    let plugins = plugin_crates(&plugins_dir);
    watch(&repo, &plugins_dir);
    check_wasm_target();

    let target_dir = plugin_target_dir(&out_dir);
    build_plugins(&repo, &plugins_dir, &target_dir);

    let release = target_dir.join(WASM_TARGET).join("release");
    let mut table =
        String::from("/// `(name, component path)` of every plugin, built by build.rs.\n");
    table.push_str("pub const PLUGINS: &[(&str, &str)] = &[\n");
    for name in &plugins {
        let wasm = release.join(format!("{}.wasm", name.replace('-', "_")));
        if !wasm.is_file() {
            panic!(
                "plugin `{name}` built, but {} does not exist; is it a `cdylib` crate?",
                wasm.display()
            );
        }
        let var = format!("EDGESERVE_PLUGIN_{}", name.to_uppercase().replace('-', "_"));
        println!("cargo:rustc-env={var}={}", wasm.display());
        writeln!(table, "    ({name:?}, {:?}),", wasm.display().to_string()).unwrap();
    }
    table.push_str("];\n");
    fs::write(out_dir.join("plugins.rs"), table).expect("writing plugins.rs");
}

/// Plugin crates: every folder of `plugins/` with a `Cargo.toml` that builds
/// a `cdylib` (so the SDK, a plain library, is left out). Sorted by name.
fn plugin_crates(plugins_dir: &Path) -> Vec<String> {
    let entries = fs::read_dir(plugins_dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", plugins_dir.display()));
    let mut names = Vec::new();
    for entry in entries {
        let path = entry.expect("reading plugins/").path();
        let manifest = path.join("Cargo.toml");
        let Ok(text) = fs::read_to_string(&manifest) else {
            continue;
        };
        if text.contains("cdylib") {
            names.push(
                package_name(&text)
                    .unwrap_or_else(|| panic!("no `name = \"...\"` in {}", manifest.display())),
            );
        }
    }
    names.sort();
    names
}

/// The `name` of the `[package]` table, read without a TOML parser.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(value) = line.strip_prefix("name") {
            let value = value.trim_start().strip_prefix('=')?.trim();
            return Some(value.trim_matches('"').to_string());
        }
    }
    None
}

/// Reruns when any plugin source, manifest or the WIT contract changes, or
/// the graph crate the ONNX handler shares with the host. The folders are
/// listed one by one so that a `plugins/target` left behind by
/// `scripts/build-plugins.sh` does not trigger rebuilds.
fn watch(repo: &Path, plugins_dir: &Path) {
    let mut paths = vec![
        repo.join("wit"),
        repo.join("crates/onnx-graph"),
        plugins_dir.join("Cargo.toml"),
        plugins_dir.join("Cargo.lock"),
        plugins_dir.join("sdk"),
    ];
    // Plugin folders may differ from crate names; watch every crate folder.
    for entry in fs::read_dir(plugins_dir).unwrap().flatten() {
        let path = entry.path();
        if path.join("Cargo.toml").is_file() {
            paths.push(path.join("Cargo.toml"));
            paths.push(path.join("src"));
        }
    }
    for path in paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=EDGESERVE_PLUGINS_CARGO_ARGS");
}

/// Fails early, with the fix, when the toolchain lacks the wasm target.
fn check_wasm_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(sysroot) = sysroot
        && !sysroot.join("lib/rustlib").join(WASM_TARGET).is_dir()
    {
        panic!(
            "\n\nThe `{WASM_TARGET}` Rust target is not installed (looked in {}).\n\
             The end-to-end tests compile the plugins in plugins/ to WebAssembly \
             components and need it.\nInstall it with:\n\n    \
             rustup target add {WASM_TARGET}\n\n",
            sysroot.display()
        );
    }
}

/// `<target>/wasm-plugins`, where `<target>` is this build's target directory
/// (`OUT_DIR` is `<target>[/<triple>]/<profile>/build/<pkg>-<hash>/out`).
/// Stable across rebuilds and profiles, so plugins compile incrementally.
fn plugin_target_dir(out_dir: &Path) -> PathBuf {
    let profile_dir = out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(Path::parent);
    match profile_dir.and_then(Path::parent) {
        Some(target) => target.join("wasm-plugins"),
        None => out_dir.join("wasm-plugins"),
    }
}

fn build_plugins(repo: &Path, plugins_dir: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo)
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(WASM_TARGET)
        .arg("--manifest-path")
        .arg(plugins_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    if let Ok(extra) = env::var("EDGESERVE_PLUGINS_CARGO_ARGS") {
        cmd.args(extra.split_whitespace());
    }
    // Flags and wrappers meant for the host build (coverage, sanitizers, clippy,
    // the outer --target-dir …) must not reach the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "__CARGO_FIX_PLZ",
        "LLVM_PROFILE_FILE",
    ] {
        cmd.env_remove(var);
    }
    // Our stdout is read by cargo as build-script directives; keep the nested
    // cargo's (normally empty) stdout out of it. Its progress goes to stderr.
    cmd.stdout(Stdio::null());
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build the plugins: {e}"));
    if !status.success() {
        panic!(
            "building the plugins failed ({status}); reproduce with\n    \
             cargo build --release --target {WASM_TARGET} --manifest-path {}",
            plugins_dir.join("Cargo.toml").display()
        );
    }
}

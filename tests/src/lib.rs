//! Support for edgeserve's end-to-end tests and its benchmark: the plugin
//! components compiled by `build.rs`, throwaway model repositories assembled
//! from them, the settings of in-process servers ([`server_settings`]), the
//! real binary run as a process ([`ServerProcess`]) and a TLS client
//! ([`tls_client`]).
//!
//! ```no_run
//! let repo = edgeserve_e2e::model_repository(&["linear", "faulty"]);
//! // repo.path()/linear/config.toml, repo.path()/linear/1/model.{wasm,safetensors}, …
//! # let _ = repo;
//! ```

pub mod linear;
pub mod tls_client;

use std::fs;
use std::io::{self, BufRead};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edgeserve::app::Settings;
use edgeserve::bundle::BundleSettings;
use edgeserve::devices::DeviceChoice;
use edgeserve::runtime::RuntimeConfig;
use tempfile::TempDir;

mod built {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}

/// `(name, component path)` of every plugin crate in `plugins/`, freshly
/// compiled to a `wasm32-wasip2` component by this crate's build script.
pub use built::PLUGINS;

/// `n` deterministic pseudo-random values in `0..scale`, in steps of 0.01
/// (a 64-bit LCG from `seed`): test inputs that JSON carries exactly.
pub fn values(n: usize, scale: f64, seed: u64) -> Vec<f64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64 * scale * 100.0).round() / 100.0
        })
        .collect()
}

/// The repository root (the folder holding `plugins/`, `examples/`, `wit/`).
///
/// Found above `CARGO_MANIFEST_DIR` as cargo sets it for the running test
/// or `cargo run` (this crate's, or the bench's), and only outside cargo
/// above the folder compiled in: a target dir kept warm for checkouts at
/// different paths (`.ci/run`'s) keeps binaries built for another
/// checkout, since cargo does not rebuild a crate that only moved, and
/// they would read that checkout's files, or none.
pub fn repo_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let start = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
        start
            .ancestors()
            .find(|dir| dir.join("wit").is_dir() && dir.join("plugins").is_dir())
            .unwrap_or_else(|| {
                panic!(
                    "no repository root (with wit/ and plugins/) above {}",
                    start.display()
                )
            })
            .to_path_buf()
    })
}

/// The freshly built component of plugin `name` (e.g. `"linear"`).
///
/// # Panics
/// If there is no plugin crate of that name in `plugins/`.
pub fn plugin(name: &str) -> PathBuf {
    PLUGINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, path)| PathBuf::from(path))
        .unwrap_or_else(|| {
            let known: Vec<_> = PLUGINS.iter().map(|(n, _)| *n).collect();
            panic!("no plugin named {name:?}; built plugins: {known:?}")
        })
}

/// A file from `tests/data/` (e.g. `"digits_reference.json"`).
pub fn test_data(name: &str) -> PathBuf {
    repo_root().join("tests").join("data").join(name)
}

/// A model repository in a fresh temporary directory, deleted on drop.
///
/// Dereferences to its [`Path`], so it can be passed wherever a path is
/// expected (`&*repo`, `repo.path()`, `repo.join("linear")`).
#[derive(Debug)]
pub struct ModelRepository {
    dir: TempDir,
}

impl ModelRepository {
    /// The repository's root folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the folder on disk after the value is dropped (for debugging a
    /// failing test) and returns its path.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

impl Deref for ModelRepository {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.dir.path()
    }
}

impl AsRef<Path> for ModelRepository {
    fn as_ref(&self) -> &Path {
        self.dir.path()
    }
}

/// Assembles a model repository holding `models`, in a fresh temporary
/// directory.
///
/// Each model `m` is copied from `examples/models/m` or, failing that,
/// `tests/models/m` (config, weights, assets, every version folder), and the
/// freshly built `plugins/m` component is placed as `model.wasm` in each of
/// its version folders — `1/` is created when the source has none. Any stale
/// `model.wasm` in the source is ignored.
///
/// # Panics
/// If a model has no source folder or no plugin, or on I/O errors: this is
/// test setup.
pub fn model_repository(models: &[&str]) -> ModelRepository {
    let dir = tempfile::Builder::new()
        .prefix("edgeserve-models-")
        .tempdir()
        .expect("creating a temporary model repository");
    for &model in models {
        add_model(dir.path(), model)
            .unwrap_or_else(|e| panic!("adding model {model:?} to the repository: {e}"));
    }
    ModelRepository { dir }
}

/// A repository of the faulty plugin alone (`tests/models/faulty`), with
/// `config` as its `config.toml`: how long its calls may run, how many
/// instances it has, whether it batches.
///
/// # Panics
/// As [`model_repository`].
pub fn faulty_repository(config: &str) -> ModelRepository {
    let repo = model_repository(&["faulty"]);
    std::fs::write(repo.join("faulty").join("config.toml"), config)
        .expect("writing the faulty model's config");
    repo
}

/// Adds model `model` to the repository at `repo`, as
/// [`model_repository`] does for each of its models (e.g. to drop a model
/// into a repository a server is already serving).
pub fn add_model(repo: &Path, model: &str) -> io::Result<()> {
    let root = repo_root();
    let source = [root.join("examples/models"), root.join("tests/models")]
        .into_iter()
        .map(|base| base.join(model))
        .find(|dir| dir.is_dir())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no folder {model} in examples/models or tests/models"),
            )
        })?;
    let wasm = plugin(model);
    let dest = repo.join(model);
    copy_dir(&source, &dest)?;

    let mut versions: Vec<PathBuf> = fs::read_dir(&dest)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && is_version(p))
        .collect();
    if versions.is_empty() {
        let first = dest.join("1");
        fs::create_dir(&first)?;
        versions.push(first);
    }
    for version in versions {
        fs::copy(&wasm, version.join("model.wasm"))?;
    }
    Ok(())
}

fn is_version(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|v| v > 0)
}

/// Copies `from` into `to` recursively, leaving out `model.wasm` build
/// outputs.
fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&path, &target)?;
        } else if entry.file_name() != "model.wasm" {
            fs::copy(&path, &target)?;
        }
    }
    Ok(())
}

/// The real `edgeserve` binary: the host's own `main.rs`, built as this
/// package's `edgeserve-under-test` by the cargo invocation that builds the
/// tests (cargo builds a package's binaries before its integration tests), so
/// its dependencies are the tests' own build and not a second one with
/// another feature set.
///
/// # Panics
/// When it is missing: the tests were not built by cargo.
pub fn edgeserve_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        // Tests run as <target>/<profile>/deps/<test>-<hash>; cargo puts the
        // package's binaries in <target>/<profile>.
        let exe = std::env::current_exe().expect("the test knows its own path");
        let binary = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in <target>/<profile>/deps")
            .join(format!(
                "edgeserve-under-test{}",
                std::env::consts::EXE_SUFFIX
            ));
        assert!(
            binary.is_file(),
            "{} is missing: run the tests with cargo test, which builds it",
            binary.display()
        );
        binary
    })
}

/// A command that runs [`edgeserve_binary`] as `edgeserve`: the name its
/// help and errors show is the one a user types.
pub fn edgeserve_command() -> Command {
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new(edgeserve_binary());
    command.arg0("edgeserve");
    command
}

/// Runs `command` to completion and asserts that it succeeded; its output.
/// A failure names `what` and shows the command's stdout and stderr.
pub fn run_ok(command: &mut Command, what: &str) -> std::process::Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what} does not run: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A file of `tests/data/onnx/` (the exporters' fixtures).
pub fn onnx_fixture(name: &str) -> PathBuf {
    test_data("onnx").join(name)
}

/// `edgeserve import MODEL --name NAME --repository REPO` with the freshly
/// built ONNX handler, ready to run.
pub fn onnx_import(repo: &Path, model: &Path, name: &str) -> Command {
    let mut command = edgeserve_command();
    command
        .arg("import")
        .arg(model)
        .args(["--name", name, "--repository"])
        .arg(repo)
        .arg("--handler")
        .arg(plugin("onnx"));
    command
}

/// Bodies above this get a 413 from servers built on [`server_settings`]
/// (small, so that a test of the limit is cheap).
pub const MAX_BODY: usize = 1 << 20;

/// Engine settings of the runtimes the tests and the benchmark build: the
/// pooling allocator, 64 instance slots of up to 512 MiB each, and the
/// compile cache in `cache_dir` (none for `None`) of the server's default
/// size.
pub fn runtime_config(cache_dir: Option<PathBuf>) -> RuntimeConfig {
    RuntimeConfig {
        cache_dir,
        cache_max_bytes: edgeserve::runtime::DEFAULT_CACHE_MAX_BYTES,
        pooling: true,
        max_instances: 64,
        max_memory: 512 << 20,
    }
}

/// Settings of an in-process server (`edgeserve::app::start`) over `repo`,
/// as the tests and the benchmark start one: loopback on a free port, the
/// CPU backend, [`MAX_BODY`], [`runtime_config`] with its compile cache in
/// `cache_dir`, no upstream, and no bundle sources (bundles a test adds are
/// cached in `cache_dir/bundles`, up to 64 MiB).
pub fn server_settings(repo: &Path, cache_dir: &Path) -> Settings {
    Settings {
        model_repository: repo.to_owned(),
        listen: (std::net::Ipv4Addr::LOCALHOST, 0).into(),
        // Off: a test that speaks gRPC turns it on (Some(0), a free port).
        grpc_port: None,
        max_body_bytes: MAX_BODY,
        runtime: runtime_config(Some(cache_dir.to_owned())),
        device: DeviceChoice::Cpu,
        bundles: BundleSettings {
            sources: Vec::new(),
            cache_dir: cache_dir.join("bundles"),
            cache_max_bytes: edgeserve::bundle::DEFAULT_BUNDLE_CACHE_MAX_BYTES,
            max_bytes: 64 << 20,
            allow: Default::default(),
        },
        upstream: None,
        access: Default::default(),
        tls: None,
        console: true,
        shutdown_timeout: std::time::Duration::from_secs(20),
        idle_timeout: std::time::Duration::from_secs(60),
        max_connections: None,
        max_body_memory_bytes: None,
    }
}

/// An `edgeserve serve` process on a free loopback port; killed on drop if
/// still running.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The log line that carries the bound address.
const SERVING: &str = "serving the Open Inference Protocol";

/// Longest wait for a spawned server to start or stop: a guard against a
/// hung process, far above what either takes.
pub const PROCESS_GUARD: Duration = Duration::from_secs(120);

impl ServerProcess {
    /// [`ServerProcess::spawn`] over the model repository `repo` with the
    /// compile cache `cache`, on the CPU backend, with `extra` arguments.
    pub fn on_cpu(repo: &Path, cache: &Path, extra: &[&std::ffi::OsStr]) -> ServerProcess {
        let base: [&std::ffi::OsStr; 6] = [
            "--model-repository".as_ref(),
            repo.as_os_str(),
            "--cache-dir".as_ref(),
            cache.as_os_str(),
            "--device".as_ref(),
            "cpu".as_ref(),
        ];
        ServerProcess::spawn(base.iter().chain(extra))
    }

    /// Runs `edgeserve serve --host 127.0.0.1 --http-port 0 --grpc-port 0
    /// <args>` (gRPC off) and waits
    /// until it serves. Its log is copied to this process's stderr.
    ///
    /// # Panics
    /// When it exits before serving or does not start within
    /// [`PROCESS_GUARD`].
    pub fn spawn<I, S>(args: I) -> ServerProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut child = edgeserve_command()
            // gRPC off: its default port would collide between servers.
            .args(["serve", "--host", "127.0.0.1", "--http-port", "0"])
            .args(["--grpc-port", "0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the edgeserve binary");
        let stderr = child.stderr.take().expect("stderr (the log) is piped");
        let (found, addr) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in io::BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[edgeserve {}] {line}", std::process::id());
                kept.lock()
                    .expect("the log is not poisoned")
                    .push(line.clone());
                if line.contains(SERVING)
                    && let Some(port) = port_in(&line)
                {
                    let _ = found.send(port);
                }
            }
        });
        match addr.recv_timeout(PROCESS_GUARD) {
            Ok(port) => ServerProcess {
                child,
                base: format!("http://127.0.0.1:{port}"),
                log,
            },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().expect("waiting for edgeserve");
                panic!("edgeserve did not start serving ({status}); its log is above");
            }
        }
    }

    /// [`ServerProcess::spawn`] serving `repo` on the CPU, with its compile
    /// cache in `cache_dir`.
    pub fn serve(repo: &Path, cache_dir: &Path) -> ServerProcess {
        ServerProcess::spawn([
            "--model-repository".as_ref(),
            repo.as_os_str(),
            "--cache-dir".as_ref(),
            cache_dir.as_os_str(),
            "--device".as_ref(),
            "cpu".as_ref(),
        ])
    }

    /// The lines the server has logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("the log is not poisoned").clone()
    }

    /// The lines the server has logged once one of them is `wanted`, or
    /// after `within` without one. A guest's output is logged as the
    /// server reads it from the guest's stream, which may be after the
    /// response that followed it went out.
    pub fn log_once(&self, within: Duration, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if log.iter().any(|line| wanted(line)) || Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {} failed", self.id());
    }

    /// Waits for the process to exit, at most [`PROCESS_GUARD`]; `None`
    /// (and the process killed) if it does not.
    pub fn wait(&mut self) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + PROCESS_GUARD;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("polling edgeserve") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The port of the `127.0.0.1:PORT` address in a log line.
fn port_in(line: &str) -> Option<u16> {
    let (_, rest) = line.rsplit_once("127.0.0.1:")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plugin_is_built() {
        for name in ["linear", "digits", "faulty"] {
            let path = plugin(name);
            let bytes = fs::read(&path).unwrap();
            // A component, not a core module: magic, then version 0x0d, layer 1.
            assert_eq!(&bytes[..8], b"\0asm\x0d\0\x01\0", "{}", path.display());
        }
    }

    #[test]
    fn assembles_a_repository() {
        let repo = model_repository(&["linear", "digits", "faulty"]);
        for model in ["linear", "digits", "faulty"] {
            assert!(repo.join(model).join("config.toml").is_file(), "{model}");
            assert!(repo.join(model).join("1/model.wasm").is_file(), "{model}");
        }
        assert!(repo.join("linear/1/model.safetensors").is_file());
        assert!(repo.join("digits/1/model.safetensors").is_file());
        let path = repo.to_path_buf();
        drop(repo);
        assert!(
            !path.exists(),
            "the temporary repository is removed on drop"
        );
    }
}

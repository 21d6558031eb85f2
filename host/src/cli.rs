//! Command-line interface.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::Settings;
use crate::bundle::{
    BundleSettings, BundleSource, DEFAULT_BUNDLE_CACHE_MAX_BYTES, FetchAllowList, HostRule,
    UrlPrefix,
};
use crate::devices::DeviceChoice;
use crate::offload::UpstreamSettings;
use crate::runtime::{DEFAULT_CACHE_MAX_BYTES, RuntimeConfig};
use crate::server::auth::{AccessSettings, Secret};
use crate::tls::TlsSettings;

/// Serve WebAssembly model handlers over the Open Inference Protocol.
#[derive(Debug, Parser)]
#[command(name = "edgeserve", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How log lines (on stderr) look: text, or one JSON object per line.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "EDGESERVE_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: crate::logging::LogFormat,
    /// Milliseconds freed memory stays mapped before it goes back to the
    /// OS, which then takes it when it needs memory (until then it counts
    /// in RSS). 0 unmaps it at once: the least memory held, at the cost of
    /// faulting it in again on the next large request (batched transformer
    /// work runs about a third slower).
    #[arg(
        long,
        global = true,
        env = "EDGESERVE_MEMORY_PURGE_MS",
        default_value_t = crate::malloc::DEFAULT_PURGE_MS
    )]
    pub memory_purge_ms: u32,
    /// The widest vector instructions the CPU kernels' loops use: `auto`
    /// (the widest this CPU has: AVX-512, AVX2 + FMA, or the baseline),
    /// `avx2` or `baseline`. Every level computes the same results; a
    /// narrower one only runs slower, for comparing or for a CPU that
    /// lowers its clock under AVX-512.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "EDGESERVE_CPU_SIMD",
        default_value = "auto"
    )]
    pub cpu_simd: SimdChoice,
    /// Threads the CPU kernels split an operation over, the request's own
    /// thread included (as ONNX Runtime's intra-op threads count theirs).
    /// By default `RAYON_NUM_THREADS` where set, else one per CPU core.
    #[arg(long, global = true, env = "EDGESERVE_COMPUTE_THREADS")]
    pub compute_threads: Option<NonZeroUsize>,
}

/// `--compute-threads`, or its default: `RAYON_NUM_THREADS` where it is a
/// positive number, else the cores this process may run on.
pub fn compute_threads(choice: Option<NonZeroUsize>) -> NonZeroUsize {
    choice
        .or_else(|| std::env::var("RAYON_NUM_THREADS").ok()?.parse().ok())
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(NonZeroUsize::MIN)
}

/// `--cpu-simd`: the cap on the CPU kernels' vector instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SimdChoice {
    /// The widest this CPU has.
    Auto,
    /// At most AVX2 and FMA.
    Avx2,
    /// The target's baseline (SSE2 on x86-64).
    Baseline,
}

impl From<SimdChoice> for edgeserve_tensor::cpu::Simd {
    fn from(choice: SimdChoice) -> Self {
        match choice {
            SimdChoice::Auto => edgeserve_tensor::cpu::Simd::Avx512,
            SimdChoice::Avx2 => edgeserve_tensor::cpu::Simd::Avx2,
            SimdChoice::Baseline => edgeserve_tensor::cpu::Simd::Baseline,
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load every model in a repository and serve it over HTTP.
    // Boxed: the serve options dwarf the other commands' (clippy's
    // large_enum_variant); parsed once, so the allocation is free.
    Serve(Box<ServeArgs>),
    /// Turn an ONNX file into a model folder served by the generic ONNX
    /// handler, with no code.
    Import(crate::import::ImportArgs),
    /// Create a handler project in Rust, Python or JavaScript.
    New(crate::author::NewArgs),
    /// Build a handler project and install it in a model repository.
    Build(crate::author::BuildArgs),
}

/// Instance memory allocation strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Allocator {
    /// The pooling allocator when the address space allows, else on-demand.
    Auto,
    /// Allocate each instance's memory when it is created.
    OnDemand,
}

/// Options of `edgeserve serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Folder holding `<model>/<version>/model.wasm` (and weights, config).
    #[arg(
        long,
        env = "EDGESERVE_MODEL_REPOSITORY",
        default_value = "examples/models"
    )]
    pub model_repository: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "EDGESERVE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// HTTP port (0 picks a free one).
    #[arg(long, env = "EDGESERVE_HTTP_PORT", default_value_t = 8000)]
    pub http_port: u16,
    /// Port for the Open Inference Protocol over gRPC (0 turns gRPC off).
    #[arg(long, env = "EDGESERVE_GRPC_PORT", default_value_t = 8001)]
    pub grpc_port: u16,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "EDGESERVE_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    pub max_body_bytes: usize,
    /// Folder for compiled components, so restarts skip compilation.
    /// Defaults to $XDG_CACHE_HOME/edgeserve or ~/.cache/edgeserve.
    #[arg(long, env = "EDGESERVE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every time; keep nothing on disk.
    #[arg(long, env = "EDGESERVE_NO_COMPILE_CACHE")]
    pub no_compile_cache: bool,
    /// Most bytes of compiled components the cache keeps; storing a new
    /// one drops the least recently used beyond it.
    #[arg(long, env = "EDGESERVE_COMPILE_CACHE_MAX_BYTES", default_value_t = DEFAULT_CACHE_MAX_BYTES)]
    pub compile_cache_max_bytes: u64,
    /// How instance memory is allocated.
    #[arg(long, env = "EDGESERVE_ALLOCATOR", value_enum, default_value_t = Allocator::Auto)]
    pub allocator: Allocator,
    /// Instance slots of the pooling allocator, across all models.
    #[arg(long, env = "EDGESERVE_MAX_INSTANCES", default_value_t = 256)]
    pub max_instances: u32,
    /// Compute device for models that do not choose one in their config.
    #[arg(long, env = "EDGESERVE_DEVICE", value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Largest linear memory any instance may be configured with, in MiB.
    #[arg(
        long,
        env = "EDGESERVE_MAX_INSTANCE_MEMORY_MIB",
        default_value_t = 4096
    )]
    pub max_instance_memory_mib: usize,
    /// Model bundle to install before serving, as `<url>#sha256=<hex>`: a
    /// tar or tar.gz of one model folder, checked against the digest before
    /// it is unpacked. Repeat the flag (or separate with commas) for more.
    #[arg(
        long = "bundle",
        env = "EDGESERVE_BUNDLES",
        value_name = "URL#sha256=HEX",
        value_delimiter = ','
    )]
    pub bundles: Vec<BundleSource>,
    /// Folder for unpacked bundles, keyed by digest, so restarts do not
    /// download again. Defaults to $XDG_CACHE_HOME/edgeserve/bundles or
    /// ~/.cache/edgeserve/bundles.
    #[arg(long, env = "EDGESERVE_BUNDLE_CACHE_DIR")]
    pub bundle_cache_dir: Option<PathBuf>,
    /// Most bytes of unpacked bundles the cache keeps; storing a new one
    /// drops the least recently used beyond it.
    #[arg(long, env = "EDGESERVE_BUNDLE_CACHE_MAX_BYTES", default_value_t = DEFAULT_BUNDLE_CACHE_MAX_BYTES)]
    pub bundle_cache_max_bytes: u64,
    /// Largest bundle accepted, downloaded or unpacked, in bytes.
    #[arg(long, env = "EDGESERVE_MAX_BUNDLE_BYTES", default_value_t = 4 << 30)]
    pub max_bundle_bytes: u64,
    /// Host (HOST or HOST:PORT, `*` for any) that load requests may fetch
    /// bundles from. Repeat the flag (or separate with commas) for more.
    /// With no host and no prefix, load requests cannot name bundles.
    /// Link-local and cloud metadata addresses are refused unless named
    /// here by address.
    #[arg(
        long = "bundle-allow-host",
        env = "EDGESERVE_BUNDLE_ALLOW_HOSTS",
        value_name = "HOST[:PORT]",
        value_delimiter = ','
    )]
    pub bundle_allow_hosts: Vec<HostRule>,
    /// URL prefix (e.g. `https://models.example.com/edge/`) that load
    /// requests may fetch bundles from. Repeatable, or comma-separated.
    #[arg(
        long = "bundle-allow-url-prefix",
        env = "EDGESERVE_BUNDLE_ALLOW_URL_PREFIXES",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub bundle_allow_url_prefixes: Vec<UrlPrefix>,
    /// OIP server (e.g. a datacenter node) that takes requests for models
    /// this one does not serve.
    #[arg(long, env = "EDGESERVE_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// PEM file of the CA that signed an https:// upstream's certificate;
    /// only it is trusted for the upstream (default: the built-in roots).
    #[arg(
        long,
        env = "EDGESERVE_UPSTREAM_CA",
        value_name = "FILE",
        requires = "upstream"
    )]
    pub upstream_ca: Option<PathBuf>,
    /// Also forward requests that find no free instance within their queue
    /// deadline to the upstream, instead of answering 503. A model's
    /// `offload_on_queue_timeout` in its config.toml overrides this.
    #[arg(
        long,
        env = "EDGESERVE_OFFLOAD_ON_QUEUE_TIMEOUT",
        requires = "upstream"
    )]
    pub offload_on_queue_timeout: bool,
    /// Longest wait for a connection to the upstream, in milliseconds.
    #[arg(
        long,
        env = "EDGESERVE_UPSTREAM_CONNECT_TIMEOUT_MS",
        default_value_t = 2_000
    )]
    pub upstream_connect_timeout_ms: u64,
    /// Longest wait for the upstream's whole answer, in milliseconds; for a
    /// relayed stream (SSE), the longest wait for each chunk of it.
    #[arg(long, env = "EDGESERVE_UPSTREAM_TIMEOUT_MS", default_value_t = 60_000)]
    pub upstream_timeout_ms: u64,
    /// API key that inference and metadata routes require, sent as
    /// `Authorization: Bearer KEY`. Repeat the flag (or separate with
    /// commas) for more. With none, those routes are open.
    #[arg(
        long = "api-key",
        env = "EDGESERVE_API_KEYS",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<Secret>,
    /// File of more API keys, one a line (`#` starts a comment), e.g. a
    /// mounted Kubernetes Secret.
    #[arg(long, env = "EDGESERVE_API_KEY_FILE", value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    /// Key that management routes (repository load/unload, bundle
    /// installs) require; an API key there gets 403. Without it, management
    /// is open on a loopback address and disabled on any other.
    #[arg(
        long,
        env = "EDGESERVE_ADMIN_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub admin_key: Option<Secret>,
    /// Make `/metrics` require an API key too (open by default, for
    /// Prometheus).
    #[arg(long, env = "EDGESERVE_PROTECT_METRICS")]
    pub protect_metrics: bool,
    /// Allow management routes without an admin key even on a non-loopback
    /// address: anyone who reaches the port can then load, unload and
    /// install models.
    #[arg(long, env = "EDGESERVE_INSECURE_MANAGEMENT")]
    pub insecure_management: bool,
    /// PEM certificate chain to serve HTTPS on the REST port and gRPC over
    /// TLS on the gRPC port with; reloaded on SIGHUP or when the file
    /// changes.
    #[arg(
        long,
        env = "EDGESERVE_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(
        long,
        env = "EDGESERVE_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that clients must present a certificate of
    /// (mutual TLS); clients without one are refused.
    #[arg(
        long,
        env = "EDGESERVE_TLS_CLIENT_CA",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// Do not serve the web console (`/console/`, and `/` redirecting to it).
    #[arg(long, env = "EDGESERVE_NO_CONSOLE")]
    pub no_console: bool,
    /// Longest wait, on SIGTERM, for requests in flight and open
    /// connections before exiting anyway, in milliseconds; under
    /// Kubernetes keep it and the preStop sleep within the pod's
    /// terminationGracePeriodSeconds.
    #[arg(long, env = "EDGESERVE_SHUTDOWN_TIMEOUT_MS", default_value_t = 20_000)]
    pub shutdown_timeout_ms: u64,
    /// Close a connection that starts no request for this long, in
    /// milliseconds (it may take up to twice as long): a client that
    /// connects and sends nothing, or half a request, gives its connection
    /// back. A request still being answered finishes first; one whose body
    /// stops arriving for this long is refused (408, DEADLINE_EXCEEDED).
    #[arg(long, env = "EDGESERVE_IDLE_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// The most client connections open at once, REST and gRPC together;
    /// past it, new ones wait in the kernel's backlog until one closes.
    /// Default: as many as the process may open files (its soft
    /// RLIMIT_NOFILE, raised to the hard one at start), less 128 for model
    /// files and caches, at most 65536.
    #[arg(long, env = "EDGESERVE_MAX_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// The most bytes of request bodies the server holds at once, over
    /// every request and protocol, each body from its first byte until its
    /// request is answered; a body that would take it past this is refused
    /// (503 with Retry-After, RESOURCE_EXHAUSTED on gRPC) while the others
    /// go on. Default: a quarter of the memory available (the cgroup's
    /// limit, else the machine's), at least --max-body-bytes.
    #[arg(long, env = "EDGESERVE_MAX_BODY_MEMORY_BYTES", value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_body_memory_bytes: Option<u64>,
}

impl ServeArgs {
    /// The settings these options describe.
    pub fn settings(&self) -> Settings {
        let cache_dir = (!self.no_compile_cache)
            .then(|| self.cache_dir.clone().unwrap_or_else(default_cache_dir));
        Settings {
            model_repository: self.model_repository.clone(),
            listen: SocketAddr::new(self.host, self.http_port),
            grpc_port: (self.grpc_port != 0).then_some(self.grpc_port),
            max_body_bytes: self.max_body_bytes,
            runtime: RuntimeConfig {
                cache_dir,
                cache_max_bytes: self.compile_cache_max_bytes,
                pooling: self.allocator == Allocator::Auto,
                max_instances: self.max_instances,
                max_memory: self.max_instance_memory_mib << 20,
            },
            device: self.device,
            bundles: BundleSettings {
                sources: self.bundles.clone(),
                cache_dir: self
                    .bundle_cache_dir
                    .clone()
                    .unwrap_or_else(|| default_cache_dir().join("bundles")),
                cache_max_bytes: self.bundle_cache_max_bytes,
                max_bytes: self.max_bundle_bytes,
                allow: FetchAllowList {
                    hosts: self.bundle_allow_hosts.clone(),
                    url_prefixes: self.bundle_allow_url_prefixes.clone(),
                },
            },
            upstream: self.upstream.as_ref().map(|url| UpstreamSettings {
                url: url.clone(),
                connect_timeout: Duration::from_millis(self.upstream_connect_timeout_ms),
                timeout: Duration::from_millis(self.upstream_timeout_ms),
                offload_on_queue_timeout: self.offload_on_queue_timeout,
                ca: self.upstream_ca.clone(),
            }),
            access: AccessSettings {
                api_keys: self.api_keys.clone(),
                api_key_file: self.api_key_file.clone(),
                admin_key: self.admin_key.clone(),
                protect_metrics: self.protect_metrics,
                insecure_management: self.insecure_management,
            },
            tls: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(cert, key)| TlsSettings {
                    cert,
                    key,
                    client_ca: self.tls_client_ca.clone(),
                }),
            console: !self.no_console,
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.max_connections.map(|n| n as usize),
            max_body_memory_bytes: self.max_body_memory_bytes.map(|n| n as usize),
        }
    }
}

/// `$XDG_CACHE_HOME/edgeserve`, else `~/.cache/edgeserve`.
pub(crate) fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("edgeserve")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn help_documents_every_flag_with_its_environment_variable() {
        Cli::command().debug_assert();
        let mut cli = Cli::command();
        // Propagates the global flags into the subcommands.
        cli.build();
        let help = cli
            .find_subcommand_mut("serve")
            .expect("serve exists")
            .render_long_help()
            .to_string();
        for (flag, env) in [
            ("--model-repository", "EDGESERVE_MODEL_REPOSITORY"),
            ("--host", "EDGESERVE_HOST"),
            ("--http-port", "EDGESERVE_HTTP_PORT"),
            ("--grpc-port", "EDGESERVE_GRPC_PORT"),
            ("--max-body-bytes", "EDGESERVE_MAX_BODY_BYTES"),
            ("--cache-dir", "EDGESERVE_CACHE_DIR"),
            ("--no-compile-cache", "EDGESERVE_NO_COMPILE_CACHE"),
            ("--allocator", "EDGESERVE_ALLOCATOR"),
            ("--max-instances", "EDGESERVE_MAX_INSTANCES"),
            (
                "--max-instance-memory-mib",
                "EDGESERVE_MAX_INSTANCE_MEMORY_MIB",
            ),
            ("--bundle", "EDGESERVE_BUNDLES"),
            ("--bundle-cache-dir", "EDGESERVE_BUNDLE_CACHE_DIR"),
            ("--max-bundle-bytes", "EDGESERVE_MAX_BUNDLE_BYTES"),
            ("--upstream", "EDGESERVE_UPSTREAM"),
            (
                "--offload-on-queue-timeout",
                "EDGESERVE_OFFLOAD_ON_QUEUE_TIMEOUT",
            ),
            (
                "--upstream-connect-timeout-ms",
                "EDGESERVE_UPSTREAM_CONNECT_TIMEOUT_MS",
            ),
            ("--upstream-timeout-ms", "EDGESERVE_UPSTREAM_TIMEOUT_MS"),
            ("--upstream-ca", "EDGESERVE_UPSTREAM_CA"),
            ("--bundle-allow-host", "EDGESERVE_BUNDLE_ALLOW_HOSTS"),
            (
                "--bundle-allow-url-prefix",
                "EDGESERVE_BUNDLE_ALLOW_URL_PREFIXES",
            ),
            ("--api-key", "EDGESERVE_API_KEYS"),
            ("--api-key-file", "EDGESERVE_API_KEY_FILE"),
            ("--admin-key", "EDGESERVE_ADMIN_KEY"),
            ("--protect-metrics", "EDGESERVE_PROTECT_METRICS"),
            ("--insecure-management", "EDGESERVE_INSECURE_MANAGEMENT"),
            ("--tls-cert", "EDGESERVE_TLS_CERT"),
            ("--tls-key", "EDGESERVE_TLS_KEY"),
            ("--tls-client-ca", "EDGESERVE_TLS_CLIENT_CA"),
            ("--no-console", "EDGESERVE_NO_CONSOLE"),
            ("--memory-purge-ms", "EDGESERVE_MEMORY_PURGE_MS"),
            ("--cpu-simd", "EDGESERVE_CPU_SIMD"),
            ("--compute-threads", "EDGESERVE_COMPUTE_THREADS"),
            ("--shutdown-timeout-ms", "EDGESERVE_SHUTDOWN_TIMEOUT_MS"),
            ("--idle-timeout-ms", "EDGESERVE_IDLE_TIMEOUT_MS"),
            ("--max-connections", "EDGESERVE_MAX_CONNECTIONS"),
            ("--max-body-memory-bytes", "EDGESERVE_MAX_BODY_MEMORY_BYTES"),
        ] {
            assert!(help.contains(flag), "help lacks {flag}:\n{help}");
            assert!(help.contains(env), "help lacks {env}:\n{help}");
        }
    }

    #[test]
    fn defaults_serve_the_examples_on_loopback_8000() {
        let Cli {
            command: Command::Serve(args),
            ..
        } = Cli::try_parse_from(["edgeserve", "serve", "--no-compile-cache"]).unwrap()
        else {
            unreachable!("serve parses as serve")
        };
        let settings = args.settings();
        assert_eq!(settings.model_repository, PathBuf::from("examples/models"));
        assert_eq!(settings.listen, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(settings.grpc_port, Some(8001));
        assert_eq!(settings.runtime.cache_dir, None);
        assert!(settings.runtime.pooling);
        assert!(settings.bundles.sources.is_empty());
        assert!(settings.upstream.is_none());
        assert_eq!(settings.shutdown_timeout, Duration::from_secs(20));
        assert_eq!(settings.idle_timeout, Duration::from_secs(60));
        assert_eq!(settings.max_connections, None);
        assert_eq!(settings.max_body_memory_bytes, None);
    }

    #[test]
    fn the_cpu_kernels_vector_width_is_capped_as_chosen() {
        use edgeserve_tensor::cpu::Simd;
        let parse = |args: &[&str]| Simd::from(Cli::try_parse_from(args).unwrap().cpu_simd);
        assert_eq!(parse(&["edgeserve", "serve"]), Simd::Avx512);
        assert_eq!(
            parse(&["edgeserve", "serve", "--cpu-simd", "avx2"]),
            Simd::Avx2
        );
        assert_eq!(
            parse(&["edgeserve", "--cpu-simd", "baseline", "serve"]),
            Simd::Baseline
        );
        assert!(Cli::try_parse_from(["edgeserve", "serve", "--cpu-simd", "neon"]).is_err());
    }

    #[test]
    fn compute_threads_are_a_positive_count_or_the_default() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.compute_threads);
        assert_eq!(parse(&["edgeserve", "serve"]).unwrap(), None);
        let three = NonZeroUsize::new(3).unwrap();
        assert_eq!(
            parse(&["edgeserve", "--compute-threads", "3", "serve"]).unwrap(),
            Some(three)
        );
        assert!(parse(&["edgeserve", "serve", "--compute-threads", "0"]).is_err());
        assert_eq!(compute_threads(Some(three)), three);
    }

    #[test]
    fn freed_memory_goes_back_after_the_chosen_delay() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap().memory_purge_ms;
        assert_eq!(
            parse(&["edgeserve", "serve"]),
            crate::malloc::DEFAULT_PURGE_MS
        );
        assert_eq!(parse(&["edgeserve", "serve", "--memory-purge-ms", "0"]), 0);
        assert_eq!(
            parse(&["edgeserve", "--memory-purge-ms", "250", "serve"]),
            250
        );
    }

    #[test]
    fn bundles_repeat_and_a_bad_digest_is_a_usage_error() {
        let digest = "0".repeat(64);
        let Cli {
            command: Command::Serve(args),
            ..
        } = Cli::try_parse_from([
            "edgeserve",
            "serve",
            "--bundle",
            &format!("http://a/x.tar.gz#sha256={digest}"),
            "--bundle",
            &format!("https://b/y.tar#sha256={digest}"),
            "--upstream",
            "http://dc:8000",
            "--offload-on-queue-timeout",
        ])
        .unwrap()
        else {
            unreachable!("serve parses as serve")
        };
        let settings = args.settings();
        assert_eq!(settings.bundles.sources.len(), 2);
        assert_eq!(settings.bundles.sources[1].url, "https://b/y.tar");
        let upstream = settings.upstream.unwrap();
        assert_eq!(upstream.url, "http://dc:8000");
        assert!(upstream.offload_on_queue_timeout);
        let err = Cli::try_parse_from(["edgeserve", "serve", "--bundle", "http://a/x.tar"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sha256"), "{err}");
    }
}

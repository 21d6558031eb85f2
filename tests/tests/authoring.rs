//! The plugin author's path, run as an author runs it: `edgeserve new` and
//! `edgeserve build` (the real binary, its toolchains installed on first
//! use) for Rust, Python and JavaScript, then a real server on loopback.
//! Also the versioned contract (a handler built against the previous WIT
//! still serves; an incompatible one is refused by name) and bad components.
//!
//! Every component is built once per test run ([`built`]) into one
//! repository; each test starts its own server over it, and the shared
//! compile cache keeps the Python and JavaScript interpreters from being
//! compiled again.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{error_text, floats, ints, output, shared_cache, status_json};
use edgeserve_e2e::{
    ServerProcess, add_model, edgeserve_binary, edgeserve_command, plugin, repo_root, run_ok,
    values,
};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The scaffolded handler of each language, by model name.
const SCAFFOLDED: [(&str, &str); 3] = [
    ("double-rust", "rust"),
    ("double-py", "python"),
    ("double-js", "javascript"),
];

/// Runs `edgeserve ARGS` with `envs` to completion → (success, stdout,
/// stderr).
fn run_edgeserve(args: &[&OsStr], envs: &[(&str, &OsStr)]) -> (bool, String, String) {
    let target = edgeserve_binary()
        .parent()
        .and_then(Path::parent)
        .expect("the binary lives in <target>/<profile>");
    let out = edgeserve_command()
        .args(args)
        // Rust handlers share one target folder across runs.
        .env("CARGO_TARGET_DIR", target.join("wasm-authoring"))
        .envs(envs.iter().copied())
        .output()
        .expect("running edgeserve");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `edgeserve ARGS` to completion, asserting success; its stdout.
fn edgeserve(args: &[&OsStr]) -> String {
    let (ok, stdout, stderr) = run_edgeserve(args, &[]);
    assert!(ok, "edgeserve {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// `edgeserve build DIR --repository REPO` with `envs`, asserting it
/// reports the install; its stderr.
fn build_with(dir: &Path, repo: &Path, name: &str, envs: &[(&str, &OsStr)]) -> String {
    let (ok, said, stderr) = run_edgeserve(
        &[
            "build".as_ref(),
            dir.as_os_str(),
            "--repository".as_ref(),
            repo.as_os_str(),
        ],
        envs,
    );
    assert!(ok, "building {name} failed:\n{said}\n{stderr}");
    assert!(
        said.contains(&format!("installed {name} version 1")),
        "{said}"
    );
    assert!(repo.join(name).join("1/model.wasm").is_file(), "{said}");
    stderr
}

/// [`build_with`] the default toolchains.
fn build(dir: &Path, repo: &Path, name: &str) {
    build_with(dir, repo, name, &[]);
}

/// `edgeserve new NAME --lang LANG --output DIR`, asserting what it wrote.
fn scaffold(name: &str, lang: &str, dir: &Path) {
    let said = edgeserve(&[
        "new".as_ref(),
        name.as_ref(),
        "--lang".as_ref(),
        lang.as_ref(),
        "--output".as_ref(),
        dir.as_os_str(),
    ]);
    assert!(
        said.contains(&format!("created {lang} handler `{name}`")),
        "{said}"
    );
    for vendored in ["wit/edgeserve.wit", "edgeserve.toml", "README.md"] {
        assert!(dir.join(vendored).is_file(), "{name} lacks {vendored}");
    }
}

/// Where `edgeserve build` installs toolchains by default.
fn default_toolchains() -> PathBuf {
    edgeserve::author::ToolchainArgs {
        toolchains_dir: std::env::var_os("EDGESERVE_TOOLCHAINS_DIR").map(PathBuf::from),
    }
    .dir()
}

/// A folder holding a model repository with every component of these
/// tests, built once: the three scaffolded handlers, `digits` in Rust,
/// Python and JavaScript, convolution and pooling in Python and
/// JavaScript, a Python handler that raises, and the contract fixtures.
/// The handler that raises is built with toolchains installed
/// afresh into an empty folder, checking that first use installs them and
/// says so (the others share the default toolchains, to keep CI short).
///
/// The folder is the target dir's `authoring`, emptied first. A temporary
/// folder would outlive the process (statics are never dropped), and one
/// left per run filled CI's disk.
fn built() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("authoring");
        if work.exists() {
            std::fs::remove_dir_all(&work).unwrap();
        }
        std::fs::create_dir_all(&work).unwrap();
        let repo = work.join("built");
        for (name, lang) in SCAFFOLDED {
            let dir = work.join(name);
            scaffold(name, lang, &dir);
            build(&dir, &repo, name);
        }
        for (project, name) in [
            ("plugins/digits-py", "digits-py"),
            ("plugins/digits-js", "digits-js"),
            ("tests/fixtures/conv-py", "conv-py"),
            ("tests/fixtures/conv-js", "conv-js"),
        ] {
            build(&repo_root().join(project), &repo, name);
        }
        let fresh = work.join("fresh-toolchains");
        let said = build_with(
            &repo_root().join("tests/fixtures/raises-py"),
            &repo,
            "raises-py",
            &[("EDGESERVE_TOOLCHAINS_DIR", fresh.as_os_str())],
        );
        let venv = fresh.join("python");
        assert!(
            said.contains(&format!(
                "installing componentize-py==0.25.0 into {} (first use)",
                venv.display()
            )),
            "no first-use message:\n{said}"
        );
        assert!(venv.join("bin/componentize-py").is_file());
        add_model(&repo, "digits").unwrap();
        install_warm(&repo, &work.join("models"));
        work
    })
}

/// Moves the models of `built` into `repo` one by one, each loaded through
/// the repository API of a server over `repo` that starts with none: this
/// compiles every component into the [`shared_cache`] once, so the servers
/// of the tests (started at once, each within the harness's start-up guard)
/// find them compiled.
fn install_warm(built: &Path, repo: &Path) {
    std::fs::create_dir_all(repo).unwrap();
    let server = ServerProcess::serve(repo, &shared_cache());
    for entry in std::fs::read_dir(built).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        std::fs::rename(built.join(&name), repo.join(&name)).unwrap();
        let url = format!("{}/v2/repository/models/{name}/load", server.base);
        // The body names what went wrong when the load is refused.
        run_ok(
            Command::new("curl").args(["-sS", "--fail-with-body", "-X", "POST", &url]),
            &format!("loading {name}"),
        );
    }
}

/// The repository [`built`] made.
fn repository() -> PathBuf {
    built().join("models")
}

/// POST `body` to `model`'s infer route → (status, JSON body).
async fn infer(server: &ServerProcess, model: &str, body: &Value) -> (u16, Value) {
    let response = common::client()
        .post(format!("{}/v2/models/{model}/infer", server.base))
        .json(body)
        .send()
        .await
        .unwrap();
    status_json(response).await
}

fn x(values: &[f32]) -> Value {
    json!({"inputs": [{"name": "x", "shape": [values.len()], "datatype": "FP32", "data": values}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_scaffolded_in_each_language_serves_after_new_and_build() {
    let server = ServerProcess::serve(&repository(), &shared_cache());
    for (name, _) in SCAFFOLDED {
        let (status, body) = infer(&server, name, &x(&[1.0, 2.0, 3.0])).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(
            floats(&output(&body, "y")["data"]),
            [3.0, 5.0, 7.0],
            "{name}"
        );
        // A wrong input is refused by the host, naming it.
        let (status, body) = infer(
            &server,
            name,
            &json!({"inputs": [{"name": "z", "shape": [1], "datatype": "FP32", "data": [1]}]}),
        )
        .await;
        assert_eq!(status, 400, "{name}: {body}");
        assert!(error_text(&body).contains("'z'"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn digits_in_python_and_javascript_answer_like_the_rust_one() {
    let server = ServerProcess::serve(&repository(), &shared_cache());
    let data = common::data_json("digits_last300.json");
    let pixels: Vec<f64> = data["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(floats)
        .collect();
    let n = pixels.len() / 64;
    assert_eq!(n, 300);
    let request = json!({"inputs": [{"name": "pixels", "shape": [n, 64], "datatype": "FP32", "data": pixels}]});
    let mut answers = Vec::new();
    for model in ["digits", "digits-py", "digits-js"] {
        let (status, body) = infer(&server, model, &request).await;
        assert_eq!(status, 200, "{model}: {body}");
        let probabilities = floats(&output(&body, "probabilities")["data"]);
        let labels = ints(&output(&body, "label")["data"]);
        assert_eq!((probabilities.len(), labels.len()), (n * 10, n), "{model}");
        answers.push((model, probabilities, labels));
    }
    let (_, rust_p, rust_labels) = &answers[0];
    for (model, p, labels) in &answers[1..] {
        let worst = common::max_abs_diff(p, rust_p);
        assert!(worst <= 1e-6, "{model}: max |p - rust| = {worst}");
        assert_eq!(labels, rust_labels, "{model}");
    }
}

/// Every operation of the contract's `tensor` interface has its wrapper in
/// the Python and JavaScript SDKs: an operation added to the WIT without
/// them fails here.
#[test]
fn the_python_and_javascript_sdks_wrap_every_tensor_operation() {
    let wit = std::fs::read_to_string(repo_root().join("wit/edgeserve.wit")).unwrap();
    let (_, interface) = wit.split_once("interface tensor {").unwrap();
    let (interface, _) = interface.split_once("\n}").unwrap();
    // The interface's functions; a resource's methods are indented deeper.
    let ops: Vec<&str> = interface
        .lines()
        .filter_map(|line| line.strip_prefix("    ")?.split_once(": func("))
        .map(|(name, _)| name)
        .filter(|name| !name.starts_with(' '))
        .collect();
    assert!(
        ops.len() > 20 && ops.contains(&"conv2d-fused") && ops.contains(&"lstm"),
        "{ops:?}"
    );
    let sdk = |file: &str| std::fs::read_to_string(repo_root().join(file)).unwrap();
    let python = sdk("plugins/sdk-python/edgeserve/tensor.py");
    let js = sdk("plugins/sdk-js/edgeserve.js");
    for op in ops {
        let snake = op.replace('-', "_");
        let camel: String = op
            .split('-')
            .enumerate()
            .map(|(i, word)| match i {
                0 => word.to_owned(),
                _ => word[..1].to_uppercase() + &word[1..],
            })
            .collect();
        assert!(
            python.contains(&format!("wit.{snake},")),
            "the Python SDK does not wrap {op}"
        );
        assert!(
            js.contains(&format!("wit.{camel},")),
            "the JavaScript SDK does not wrap {op}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn convolution_and_pooling_in_python_and_javascript_run_the_host_ops_asked_for() {
    use edgeserve_tensor::shape::ClipBounds;
    use edgeserve_tensor::{Backend, Conv2d, Pool2d, PoolKind, Tensor, cpu::CpuBackend};

    let inputs = [
        ("x", vec![2, 4, 9, 9]),
        ("w", vec![8, 4, 3, 3]),
        ("b", vec![8]),
        ("dw", vec![4, 1, 3, 3]),
    ]
    .map(|(name, shape)| {
        // In [-1, 1), so that the clip's lower bound bites too.
        let values: Vec<f32> = values(shape.iter().product(), 2.0, name.len() as u64 * 7919)
            .iter()
            .map(|v| *v as f32 - 1.0)
            .collect();
        (name, shape, values)
    });
    let request = json!({"inputs": inputs.iter().map(|(name, shape, values)| {
        json!({"name": name, "shape": shape, "datatype": "FP32", "data": values})
    }).collect::<Vec<_>>()});
    let [x, w, b, dw] = inputs
        .clone()
        .map(|(_, shape, values)| Tensor::from_f32(&shape, values).unwrap());
    // What each output asks of the host, run here on the same CPU kernels.
    let cpu = CpuBackend::new();
    let ops = cpu.ops();
    let fused = Conv2d {
        stride: (2, 2),
        padding: (1, 0),
        padding_end: (2, 1),
        dilation: (1, 1),
        groups: 1,
        clip: ClipBounds {
            lo: Some(0.0),
            hi: Some(3.0),
        },
    };
    let pool = |kind, kernel, stride, padding| Pool2d {
        kind,
        kernel,
        stride,
        padding,
    };
    let expected = [
        (
            "plain",
            ops.conv2d(
                &x,
                &w,
                Some(&b),
                Conv2d::symmetric((1, 1), (1, 1), (1, 1), 1),
            ),
        ),
        ("fused", ops.conv2d(&x, &w, Some(&b), fused)),
        (
            "grouped",
            ops.conv2d(&x, &dw, None, Conv2d::symmetric((1, 2), (0, 0), (2, 2), 4)),
        ),
        (
            "max",
            ops.pool2d(&x, pool(PoolKind::Max, (2, 2), (2, 2), (0, 0))),
        ),
        (
            "avg",
            ops.pool2d(&x, pool(PoolKind::Avg, (3, 3), (2, 2), (1, 1))),
        ),
    ]
    .map(|(name, t)| {
        let t = t.unwrap();
        (
            name,
            t.shape().to_vec(),
            t.host().unwrap().as_slice::<f32>().to_vec(),
        )
    });
    // Both bounds of the clip bite: without either the output would differ.
    let (_, _, clipped) = &expected[1];
    for bound in [0.0, 3.0] {
        assert!(clipped.contains(&bound), "no output at {bound}");
    }

    let server = ServerProcess::serve(&repository(), &shared_cache());
    for model in ["conv-py", "conv-js"] {
        let (status, body) = infer(&server, model, &request).await;
        assert_eq!(status, 200, "{model}: {body}");
        for (name, shape, values) in &expected {
            let out = output(&body, name);
            let got_shape: Vec<usize> = serde_json::from_value(out["shape"].clone()).unwrap();
            assert_eq!(&got_shape, shape, "{model} {name}");
            let got: Vec<f32> = floats(&out["data"]).iter().map(|&v| v as f32).collect();
            assert_eq!(&got, values, "{model} {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_exception_is_a_500_naming_the_model_and_logged() {
    let server = ServerProcess::serve(&repository(), &shared_cache());
    let (status, body) = infer(&server, "raises-py", &x(&[1.0, -1.0])).await;
    assert_eq!(status, 500, "{body}");
    let text = error_text(&body);
    assert!(text.contains("raises-py"), "{text}");
    assert!(text.contains("ValueError: negative input"), "{text}");
    let log = server
        .log_once(Duration::from_secs(10), |line| line.contains("Traceback"))
        .join("\n");
    assert!(
        log.contains("raises-py") && log.contains("Traceback"),
        "no traceback in the log:\n{log}"
    );
    // The same instance, and everyone else, keep serving.
    let (status, body) = infer(&server, "raises-py", &x(&[1.0])).await;
    assert_eq!(
        (status, floats(&output(&body, "y")["data"])),
        (200, vec![3.0])
    );
    let (status, _) = infer(&server, "double-py", &x(&[0.0])).await;
    assert_eq!(status, 200);
}

/// A repository of the contract fixtures and broken files, with the
/// scaffolded Python handler as a bystander.
fn contract_repository() -> TempDir {
    let repo = tempfile::Builder::new()
        .prefix("edgeserve-contract-")
        .tempdir()
        .unwrap();
    let install = |name: &str, wasm: &[u8]| {
        let dir = repo.path().join(name).join("1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.wasm"), wasm).unwrap();
    };
    for fixture in [
        "contract-0-1-0",
        "contract-0-1-1",
        "contract-0-1-2",
        "contract-0-1-3",
        "contract-0-1-4",
        "contract-0-2-0",
        "imports-unknown",
    ] {
        install(fixture, &std::fs::read(plugin(fixture)).unwrap());
    }
    install("not-wasm", b"this is not WebAssembly");
    // A valid core module (no imports, no exports): WebAssembly, but not a component.
    install("core-module", b"\0asm\x01\0\0\0");
    let component = std::fs::read(repository().join("double-py/1/model.wasm")).unwrap();
    install("double-py", &component);
    repo
}

#[tokio::test(flavor = "multi_thread")]
async fn older_contracts_load_and_incompatible_or_broken_components_are_refused_by_name() {
    let repo = contract_repository();
    let server = ServerProcess::serve(repo.path(), &shared_cache());
    // Built against edgeserve:handler@0.1.0, served by this 0.1.x host.
    let (status, body) = infer(&server, "contract-0-1-0", &x(&[1.0, 2.0, 3.0])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(floats(&output(&body, "y")["data"]), [3.0, 5.0, 7.0]);
    // Built against edgeserve:handler@0.1.1 (tensor and output imports).
    let (status, body) = infer(&server, "contract-0-1-1", &x(&[1.0, 2.0, 3.0])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(floats(&output(&body, "y")["data"]), [3.0, 6.0, 9.0]);
    // Built against edgeserve:handler@0.1.2 (its `clip`).
    let (status, body) = infer(&server, "contract-0-1-2", &x(&[-1.0, 1.0, 3.0])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(floats(&output(&body, "y")["data"]), [0.0, 1.0, 2.0]);
    // Built against edgeserve:handler@0.1.3 (its `attention-varlen`).
    let (status, body) = infer(&server, "contract-0-1-3", &x(&[-1.0, 1.0, 3.0])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(floats(&output(&body, "y")["data"]), [-2.0, 2.0, 6.0]);
    // Built against edgeserve:handler@0.1.4 (its `conv2d-fused`).
    let (status, body) = infer(&server, "contract-0-1-4", &x(&[-1.0, 1.0, 3.0])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(floats(&output(&body, "y")["data"]), [0.0, 2.0, 6.0]);

    let log = server.log().join("\n");
    let refusal = |model: &str| {
        log.lines()
            .find(|line| line.contains("not serving") && line.contains(&format!("model={model}")))
            .unwrap_or_else(|| panic!("no load error for {model} in:\n{log}"))
            .to_owned()
    };
    let host = format!("edgeserve:handler@{}", edgeserve::runtime::CONTRACT_VERSION);
    let newer = refusal("contract-0-2-0");
    assert!(
        newer.contains("edgeserve:handler@0.2.0") && newer.contains(&host),
        "{newer}"
    );
    assert!(!newer.contains("linker"), "a linker dump: {newer}");
    let unknown = refusal("imports-unknown");
    assert!(unknown.contains("acme:telemetry/send@1.0.0"), "{unknown}");
    assert!(!unknown.contains("linker"), "a linker dump: {unknown}");
    assert!(refusal("not-wasm").contains("not WebAssembly"));
    assert!(refusal("core-module").contains("not a component"));

    // A refused model answers with an error naming it, and the rest serve.
    let (status, body) = infer(&server, "contract-0-2-0", &x(&[1.0])).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("contract-0-2-0"), "{body}");
    let (status, body) = infer(&server, "double-py", &x(&[1.0])).await;
    assert_eq!(
        (status, floats(&output(&body, "y")["data"])),
        (200, vec![3.0])
    );
}

/// A loopback address where nothing listens: connections to it are refused.
fn refusing_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/")
}

/// A language, its installer, the environment that points the installer at
/// a refusing registry, and what the error must name.
type OfflineCase<'a> = (&'a str, &'a str, Vec<(&'a str, &'a OsStr)>, [&'a str; 3]);

#[test]
fn a_toolchain_that_cannot_be_installed_fails_naming_the_step_and_the_fix() {
    let work = tempfile::tempdir().unwrap();
    let toolchains = work.path().join("toolchains");
    let repo = work.path().join("models");
    let registry = refusing_url();
    let npm_cache = work.path().join("npm-cache");
    // pip and npm pointed at a registry that refuses connections, as on a
    // machine without network; each toolchain starts from an empty folder.
    let cases: [OfflineCase; 2] = [
        (
            "python",
            "pip",
            vec![
                ("PIP_INDEX_URL", registry.as_ref()),
                ("PIP_RETRIES", "0".as_ref()),
            ],
            [
                "pip",
                "componentize-py==0.25.0",
                "check that PyPI is reachable",
            ],
        ),
        (
            "javascript",
            "npm",
            vec![
                ("npm_config_registry", registry.as_ref()),
                ("npm_config_fetch_retries", "0".as_ref()),
                ("npm_config_cache", npm_cache.as_os_str()),
            ],
            ["npm", "@bytecodealliance/jco@", "npm registry is reachable"],
        ),
    ];
    for (lang, step, mut envs, named) in cases {
        let dir = work.path().join(lang);
        scaffold("offline", lang, &dir);
        envs.push(("EDGESERVE_TOOLCHAINS_DIR", toolchains.as_os_str()));
        let (ok, stdout, stderr) = run_edgeserve(
            &[
                "build".as_ref(),
                dir.as_os_str(),
                "--repository".as_ref(),
                repo.as_os_str(),
            ],
            &envs,
        );
        assert!(
            !ok,
            "{lang}: the build succeeded offline:\n{stdout}\n{stderr}"
        );
        assert!(
            stderr.contains("(first use)"),
            "{lang}: no installation message:\n{stderr}"
        );
        let error = stderr
            .lines()
            .find(|line| line.contains(&format!("the {lang} toolchain is unavailable")))
            .unwrap_or_else(|| panic!("{lang} ({step}): no toolchain error in:\n{stderr}"));
        for part in named {
            assert!(error.contains(part), "{lang}: {error:?} lacks {part:?}");
        }
        assert!(
            !repo.join("offline").exists(),
            "{lang}: something was installed"
        );
    }
}

#[test]
fn the_javascript_sdk_types_are_generated_from_the_wit_and_handlers_check_against_them() {
    // Building the JavaScript handlers installed jco (and TypeScript).
    let work = built();
    let modules = default_toolchains().join("js/node_modules");
    let generated = tempfile::tempdir().unwrap();
    let status = Command::new("node")
        .arg(repo_root().join("plugins/sdk-js/generate-types.mjs"))
        .arg(&modules)
        .arg(repo_root().join("wit"))
        .arg(generated.path())
        .status()
        .expect("running node");
    assert!(status.success(), "generate-types.mjs: {status}");
    let committed = repo_root().join("plugins/sdk-js/types");
    let (fresh, kept) = (files_under(generated.path()), files_under(&committed));
    let regenerate = format!(
        "plugins/sdk-js/types is stale; regenerate it with `node plugins/sdk-js/generate-types.mjs {}`",
        modules.display()
    );
    assert_eq!(
        fresh.keys().collect::<Vec<_>>(),
        kept.keys().collect::<Vec<_>>(),
        "{regenerate}"
    );
    for (name, text) in &fresh {
        assert!(kept[name] == *text, "{name} differs: {regenerate}");
    }
    // The SDK's types build on the generated ones, and handlers written
    // with it (scaffolded, digits, conv) type-check against the contract.
    for app in [
        work.join("double-js/app.js"),
        repo_root().join("plugins/digits-js/app.js"),
        repo_root().join("tests/fixtures/conv-js/app.js"),
    ] {
        run_ok(
            Command::new(modules.join(".bin/tsc"))
                .args(["--noEmit", "--strict", "--noImplicitAny", "false"])
                .args(["--target", "esnext", "--module", "esnext"])
                .args(["--moduleResolution", "bundler", "--allowJs", "--checkJs"])
                .arg(&app),
            &format!("type-checking {}", app.display()),
        );
    }
}

/// Every file under `root` by its relative path, with its bytes.
fn files_under(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

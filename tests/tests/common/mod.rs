//! A real edgeserve on a loopback port, over a throwaway model repository.

#![allow(dead_code)] // each test binary uses part of the harness

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use edgeserve::app::{Running, Settings};
use edgeserve_e2e::{ModelRepository, model_repository};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// A server under test and a client for it.
pub struct TestServer {
    running: Option<Running>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The HTTP client.
    pub client: reqwest::Client,
    /// The repository it serves (kept alive with the server).
    pub repo: ModelRepository,
}

/// A compile cache shared by the tests, so each component compiles once,
/// in the target dir (`cargo clean` removes it).
pub fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("compile-cache")
}

/// The HTTP client of a [`TestServer`]: a request that gets no answer
/// within two minutes fails its test rather than stall the whole suite.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .expect("a reqwest client builds")
}

/// Settings for a test server over `repo`, with the [`shared_cache`].
pub fn settings(repo: &ModelRepository) -> Settings {
    edgeserve_e2e::server_settings(repo, &shared_cache())
}

/// The real binary serving `repo` on the CPU, with the [`shared_cache`].
pub fn spawn_binary(repo: &ModelRepository) -> edgeserve_e2e::ServerProcess {
    edgeserve_e2e::ServerProcess::serve(repo, &shared_cache())
}

impl TestServer {
    /// Starts a server serving `models` from a fresh repository.
    pub async fn start(models: &[&str]) -> TestServer {
        let repo = model_repository(models);
        let running = edgeserve::app::start(settings(&repo))
            .await
            .expect("server starts");
        TestServer {
            base: format!("http://{}", running.addr()),
            running: Some(running),
            client: client(),
            repo,
        }
    }

    /// Wraps a server started with custom settings.
    pub fn attach(running: Running, repo: ModelRepository) -> TestServer {
        TestServer {
            base: format!("http://{}", running.addr()),
            running: Some(running),
            client: client(),
            repo,
        }
    }

    /// `127.0.0.1:PORT`, the form the Python clients take.
    pub fn authority(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// A request for `method path` on this server, to add a body or headers
    /// to and send.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// `POST path` with a JSON body; the response as it comes, for its
    /// status, headers or stream.
    pub async fn send_json(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Runs the Python client script `script` (tests/python) against this
    /// server, its authority the one argument, as [`run_python`] does.
    pub async fn run_python(&self, script: &str, ok: &str) -> String {
        run_python(script, &[self.authority().as_ref()], ok).await
    }

    /// `GET path` → (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        status_json(self.request(Method::GET, path).send().await.unwrap()).await
    }

    /// `GET path` → (status, text body).
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.request(Method::GET, path).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// `POST path` with a JSON body → (status, JSON body).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        status_json(self.send_json(path, body).await).await
    }

    /// `POST path` with raw bytes → (status, JSON body).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let header = ("content-type", "application/json");
        status_json(self.send_with(path, header, body).await).await
    }

    /// `POST path` with a raw body and one header (its content type, its
    /// framing); the response as it comes.
    pub async fn send_with(
        &self,
        path: &str,
        (name, value): (&str, &str),
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.request(Method::POST, path)
            .header(name, value)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// The metadata of `model`, asserting a 200 and its `inputs`, and its
    /// `outputs` where given.
    pub async fn assert_signature(&self, model: &str, inputs: Value, outputs: Option<Value>) {
        let (status, meta) = self.get(&format!("/v2/models/{model}")).await;
        assert_eq!(status, 200, "{meta}");
        assert_eq!(meta["inputs"], inputs, "{meta}");
        if let Some(outputs) = outputs {
            assert_eq!(meta["outputs"], outputs, "{meta}");
        }
    }

    /// Infers on the faulty plugin with `action` ([`faulty_request`]).
    pub async fn faulty(&self, action: i32) -> (u16, Value) {
        self.post(FAULTY, &faulty_request(action)).await
    }

    /// `digits` on `n` images of 64 `pixels` (a JSON array) → (status, JSON
    /// body).
    pub async fn digits(&self, pixels: &Value, n: usize) -> (u16, Value) {
        self.post(
            "/v2/models/digits/infer",
            &json!({"inputs": [{"name": "pixels", "shape": [n, 64], "datatype": "FP32", "data": pixels}]}),
        )
        .await
    }

    /// `linear` on xs → the ys.
    pub async fn linear(&self, xs: &[f32]) -> Vec<f64> {
        let (status, body) = self
            .post(
                "/v2/models/linear/infer",
                &json!({"inputs": [{"name": "x", "shape": [xs.len(), 1], "datatype": "FP32", "data": xs}]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        floats(&body["outputs"][0]["data"])
    }

    /// Stops the server gracefully.
    pub async fn stop(mut self) {
        self.running.take().unwrap().shutdown().await.unwrap();
    }
}

/// The faulty plugin's infer path.
pub const FAULTY: &str = "/v2/models/faulty/infer";

/// A request for the faulty plugin: one INT32 `action` (0 answers 0; 2 spins
/// until the deadline; 7 works for a second and answers 7; …).
pub fn faulty_request(action: i32) -> Value {
    json!({"inputs": [{"name": "action", "shape": [1], "datatype": "INT32", "data": [action]}]})
}

/// Sends faulty `action` to the server at `base` in a task of its own, so a
/// test can act while it runs (e.g. [`wait_inflight`] for it, then stop the
/// server).
pub fn spawn_faulty(
    client: &reqwest::Client,
    base: &str,
    action: i32,
) -> JoinHandle<reqwest::Result<Response>> {
    let request = client
        .post(format!("{base}{FAULTY}"))
        .json(&faulty_request(action));
    tokio::spawn(request.send())
}

/// A response's status and JSON body (`null` when it is not JSON).
pub async fn status_json(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until the server at `base` reports `n` inference requests in
/// flight, so a test knows its slow request has arrived (no fixed sleeps).
pub async fn wait_inflight(client: &reqwest::Client, base: &str, n: usize) {
    let line = format!("edgeserve_inflight_requests {n}\n");
    for _ in 0..500 {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(&line) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the server never reported {n} requests in flight");
}

/// A metric's value in the server's exposition: the line that starts with
/// `series` (name and labels); 0 when absent.
pub async fn metric(server: &TestServer, series: &str) -> f64 {
    let (_, text) = server.get_text("/metrics").await;
    metric_in(&text, series).unwrap_or(0.0)
}

/// The value of `series` in a `/metrics` text.
pub fn metric_in(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// A JSON array of numbers as f64s.
pub fn floats(v: &Value) -> Vec<f64> {
    elements(v, Value::as_f64)
}

/// A JSON array of integers as i64s.
pub fn ints(v: &Value) -> Vec<i64> {
    elements(v, Value::as_i64)
}

/// The elements of JSON array `v`, each converted by `element`; panics on
/// one it cannot convert.
fn elements<'a, T>(v: &'a Value, element: impl Fn(&'a Value) -> Option<T>) -> Vec<T> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| element(x).unwrap_or_else(|| panic!("unexpected element {x} in {v}")))
        .collect()
}

/// The `name`s of a JSON array of tensors (a body's or metadata's `inputs`
/// or `outputs`), in order.
pub fn names(tensors: &Value) -> Vec<&str> {
    strings(tensors, "name")
}

/// The string field `key` of each object of JSON array `list`, in order.
pub fn strings<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    elements(list, |object| object[key].as_str())
}

/// The error text of an error body, asserting its shape `{"error": "..."}`.
pub fn error_text(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// `tests/data/digits_reference.json`: inputs and sklearn's outputs.
pub fn digits_reference() -> Value {
    data_json("digits_reference.json")
}

/// A JSON file of tests/data (references made by the scripts named there).
pub fn data_json(name: &str) -> Value {
    let path = edgeserve_e2e::test_data(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The output called `name` of an inference response.
pub fn output<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs: {body}"))
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name:?}: {body}"))
}

/// Asserts `digits` outputs match sklearn's within 1e-5, labels exactly.
pub fn assert_matches_sklearn(probabilities: &[f64], labels: &[i64], reference: &Value) {
    let expected: Vec<f64> = reference["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(floats)
        .collect();
    assert_eq!(probabilities.len(), expected.len());
    let worst = max_abs_diff(probabilities, &expected);
    assert!(worst <= 1e-5, "max |p - sklearn| = {worst}");
    assert_eq!(labels, ints(&reference["labels"]));
}

/// Runs `python3 tests/python/<script> <args>` from the repository root,
/// asserts that it exits 0 and prints `ok`, and returns what it printed.
pub async fn run_python(script: &str, args: &[&OsStr], ok: &str) -> String {
    // scripts/test.sh installs what every script needs (pip and apt).
    let install = "run scripts/test.sh once to install them";
    let root = edgeserve_e2e::repo_root();
    let output = tokio::process::Command::new("python3")
        .arg(root.join("tests/python").join(script))
        .args(args)
        .current_dir(root)
        .output()
        .await
        .unwrap_or_else(|e| panic!("python3 does not run ({install}): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed (missing packages? {install}):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(ok), "{stdout}\n{stderr}");
    stdout
}

/// Largest |a - b| over paired elements.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Serves `router` on a free loopback port from a background task; returns
/// its `http://127.0.0.1:PORT`.
pub async fn serve_on_loopback(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("a bound address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

/// `linear` (component, weights, config) as `linear/...` in a tar.gz.
pub fn linear_bundle() -> Vec<u8> {
    linear_bundle_at(flate2::Compression::fast())
}

/// [`linear_bundle`] compressed at `level`: each level is another archive
/// of the same model, with a digest of its own.
pub fn linear_bundle_at(level: flate2::Compression) -> Vec<u8> {
    let staging = edgeserve_e2e::model_repository(&["linear"]);
    let gz = flate2::write::GzEncoder::new(Vec::new(), level);
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all("linear", staging.join("linear"))
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

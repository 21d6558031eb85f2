//! A real edgeserve on a loopback port, over a throwaway model repository.

#![allow(dead_code)] // each test binary uses part of the harness

use std::path::PathBuf;

use edgeserve::app::{Running, Settings};
use edgeserve::runtime::RuntimeConfig;
use edgeserve_e2e::{ModelRepository, model_repository};
use serde_json::Value;

/// Bodies above this get a 413 in tests (small, so the test is cheap).
pub const MAX_BODY: usize = 1 << 20;

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

/// A compile cache shared by the tests, so each component compiles once.
pub fn shared_cache() -> PathBuf {
    std::env::temp_dir().join("edgeserve-e2e-compile-cache")
}

/// Settings for a test server over `repo`.
pub fn settings(repo: &ModelRepository) -> Settings {
    Settings {
        model_repository: repo.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        max_body_bytes: MAX_BODY,
        runtime: RuntimeConfig {
            cache_dir: Some(shared_cache()),
            pooling: true,
            max_instances: 64,
            max_memory: 512 << 20,
        },
        device: edgeserve::devices::DeviceChoice::Cpu,
        bundles: edgeserve::bundle::BundleSettings {
            sources: Vec::new(),
            cache_dir: std::env::temp_dir().join("edgeserve-e2e-bundles"),
            max_bytes: 64 << 20,
        },
        upstream: None,
    }
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
            client: reqwest::Client::new(),
            repo,
        }
    }

    /// Wraps a server started with custom settings.
    pub fn attach(running: Running, repo: ModelRepository) -> TestServer {
        TestServer {
            base: format!("http://{}", running.addr()),
            running: Some(running),
            client: reqwest::Client::new(),
            repo,
        }
    }

    /// `GET path` → (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `GET path` → (status, text body).
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// `POST path` with a JSON body → (status, JSON body).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, serde_json::to_vec(body).unwrap()).await
    }

    /// `POST path` with raw bytes → (status, JSON body).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Infers on `model` with one INT32 input `action` (the faulty plugin).
    pub async fn faulty(&self, action: i32) -> (u16, Value) {
        self.post(
            "/v2/models/faulty/infer",
            &serde_json::json!({"inputs": [{"name": "action", "shape": [1], "datatype": "INT32", "data": [action]}]}),
        )
        .await
    }

    /// `linear` on xs → the ys.
    pub async fn linear(&self, xs: &[f32]) -> Vec<f64> {
        let (status, body) = self
            .post(
                "/v2/models/linear/infer",
                &serde_json::json!({"inputs": [{"name": "x", "shape": [xs.len(), 1], "datatype": "FP32", "data": xs}]}),
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

/// A JSON array of numbers as f64s.
pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
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
    let expected_labels: Vec<i64> = reference["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_i64().unwrap())
        .collect();
    assert_eq!(labels, expected_labels);
}

/// Largest |a - b| over paired elements.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

//! A model's `timeout_ms` bounds the host work its handler asks for, not
//! only the handler's own code: a loop of large matmuls (the faulty
//! plugin's action 8) is stopped in the middle of a product, which epoch
//! interruption alone could not do, and the model keeps serving.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, error_text};
use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::{Backend, DType};
use serde_json::{Value, json};

/// Side of the square matrices the handler multiplies.
const SIZE: usize = 2048;

/// How long one `SIZE`³ product takes here, uncut, on the CPU kernels the
/// server uses.
fn one_product() -> Duration {
    let cpu = CpuBackend::new();
    let ops = cpu.ops();
    let a = ops.full(DType::F32, &[SIZE, SIZE], 0.5).unwrap();
    let started = Instant::now();
    ops.matmul(&a, &a, false).unwrap();
    started.elapsed()
}

/// Faulty action 8: `repeat` products of `size`² matrices.
fn products(size: usize, repeat: u32) -> Value {
    json!({
        "inputs": [{"name": "action", "shape": [1], "datatype": "INT32", "data": [8]}],
        "parameters": {"size": size, "repeat": repeat},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deadline_stops_a_long_host_matmul_midway_and_the_model_keeps_serving() {
    let natural = one_product();
    // A tenth of one product: only a cut inside the product can end the
    // request before the product would.
    let timeout_ms = (natural.as_millis() as u64 / 10).max(20);
    let repo = edgeserve_e2e::model_repository(&["linear"]);
    let crunch = repo.path().join("crunch");
    std::fs::create_dir_all(crunch.join("1")).unwrap();
    std::fs::copy(
        edgeserve_e2e::plugin("faulty"),
        crunch.join("1").join("model.wasm"),
    )
    .unwrap();
    std::fs::write(
        crunch.join("config.toml"),
        format!("instances = 1\ntimeout_ms = {timeout_ms}\n"),
    )
    .unwrap();
    let running = edgeserve::app::start(common::settings(&repo))
        .await
        .expect("server starts");
    let server = TestServer::attach(running, repo);
    let path = "/v2/models/crunch/infer";

    // Fifty products: uncut, the loop would run 500 times the deadline.
    let started = Instant::now();
    let (status, body) = server.post(path, &products(SIZE, 50)).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 500, "{body}");
    let expected = format!("model crunch:1 exceeded its {timeout_ms} ms deadline");
    assert!(error_text(&body).contains(&expected), "{body}");
    eprintln!(
        "deadline {timeout_ms} ms: the request ended after {:.1} ms (one {SIZE}³ product: {:.1} ms uncut)",
        elapsed.as_secs_f64() * 1e3,
        natural.as_secs_f64() * 1e3
    );
    assert!(
        elapsed < natural / 2,
        "the request ran {elapsed:?}, past half of one uncut product ({natural:?}): the product was not cut"
    );

    // The others keep serving, and so does the model, on a fresh instance.
    assert_eq!(server.linear(&[1.0, 2.0]).await, [0.4, 0.5]);
    let (status, body) = server.post(path, &products(8, 3)).await;
    assert_eq!(
        (status, body["outputs"][0]["data"][0].as_i64()),
        (200, Some(8)),
        "{body}"
    );
    server.stop().await;
}

//! The wgpu backend end to end: `digits` served on the GPU answers as on the
//! CPU. In CI this runs on Mesa lavapipe (software Vulkan); with no adapter
//! at all the server refuses to start and this test fails, loudly.

mod common;

use common::{
    TestServer, assert_matches_sklearn, digits_reference, floats, ints, max_abs_diff, output,
    settings,
};
use edgeserve::app::Running;
use edgeserve::devices::DeviceChoice;
use edgeserve_e2e::ModelRepository;
use serde_json::{Value, json};

async fn probabilities(server: &TestServer, inputs: &Value, n: usize) -> (Vec<f64>, Vec<i64>) {
    let (status, body) = server.digits(inputs, n).await;
    assert_eq!(status, 200, "{body}");
    (
        floats(&output(&body, "probabilities")["data"]),
        ints(&output(&body, "label")["data"]),
    )
}

/// A server on `--device gpu`; with no adapter at all it fails, loudly.
async fn start_on_gpu(repo: &ModelRepository) -> Running {
    let mut gpu_settings = settings(repo);
    gpu_settings.device = DeviceChoice::Gpu;
    edgeserve::app::start(gpu_settings)
        .await
        .unwrap_or_else(|e| panic!("the GPU backend must start (install mesa-vulkan-drivers): {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn digits_on_the_gpu_answers_as_on_the_cpu() {
    let reference = digits_reference();
    let inputs = &reference["inputs"];
    let n = inputs.as_array().unwrap().len();

    let cpu = TestServer::start(&["digits"]).await;
    let (cpu_p, cpu_labels) = probabilities(&cpu, inputs, n).await;
    cpu.stop().await;

    let repo = edgeserve_e2e::model_repository(&["digits"]);
    let running = start_on_gpu(&repo).await;
    let gpu = TestServer::attach(running, repo);
    let (_, meta) = gpu.get("/v2").await;
    assert_eq!(meta["device"]["kind"], "gpu", "{meta}");
    let (_, model) = gpu.get("/v2/models/digits").await;
    assert_eq!(model["parameters"]["device"], "gpu");
    let (gpu_p, gpu_labels) = probabilities(&gpu, inputs, n).await;
    assert_eq!(gpu_labels, cpu_labels);
    let worst = max_abs_diff(&gpu_p, &cpu_p);
    assert!(worst <= 1e-5, "GPU vs CPU: max |Δp| = {worst}");
    assert_matches_sklearn(&gpu_p, &gpu_labels, &reference);
    let (_, metrics) = gpu.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"edgeserve_device_info{kind="gpu""#),
        "{metrics}"
    );
    gpu.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_gpu_fails_its_model_with_a_5xx_and_spares_the_cpu_models() {
    let repo = edgeserve_e2e::model_repository(&["digits", "linear"]);
    // linear pinned to the CPU; digits takes the default device, the GPU.
    let config = repo.path().join("linear/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("device = \"cpu\"\n{text}")).unwrap();
    let running = start_on_gpu(&repo).await;
    let device = running.devices().gpu().cloned().expect("a GPU is open");
    let server = TestServer::attach(running, repo);
    let inputs = &digits_reference()["inputs"];
    let one = json!([inputs[0]]);
    probabilities(&server, &one, 1).await;

    // As a driver reset would: every later operation on the GPU fails.
    device.destroy_device();
    for _ in 0..2 {
        let (status, body) = server.digits(&one, 1).await;
        assert_eq!(status, 500, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("digits") && error.contains("device lost"),
            "{body}"
        );
    }
    assert_eq!(server.linear(&[1.0, 2.0]).await, [0.4, 0.5]);
    server.stop().await;
}

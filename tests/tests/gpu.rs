//! The wgpu backend end to end: `digits` served on the GPU answers as on the
//! CPU. In CI this runs on Mesa lavapipe (software Vulkan); with no adapter
//! at all the server refuses to start and this test fails, loudly.

mod common;

use common::{
    TestServer, assert_matches_sklearn, digits_reference, floats, max_abs_diff, settings,
};
use edgeserve::devices::DeviceChoice;
use serde_json::{Value, json};

async fn probabilities(server: &TestServer, inputs: &Value, n: usize) -> (Vec<f64>, Vec<i64>) {
    let (status, body) = server
        .post(
            "/v2/models/digits/infer",
            &json!({"inputs": [{"name": "pixels", "shape": [n, 64], "datatype": "FP32", "data": inputs}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let outputs = body["outputs"].as_array().unwrap();
    let p = outputs
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap();
    let labels = outputs.iter().find(|o| o["name"] == "label").unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_i64().unwrap())
        .collect();
    (floats(&p["data"]), labels)
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
    let mut gpu_settings = settings(&repo);
    gpu_settings.device = DeviceChoice::Gpu;
    let running = edgeserve::app::start(gpu_settings)
        .await
        .unwrap_or_else(|e| {
            panic!("the GPU backend must start (install mesa-vulkan-drivers): {e}")
        });
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

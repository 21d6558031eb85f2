//! The wgpu backend end to end: `digits` served on the GPU answers as on the
//! CPU. In CI this runs on Mesa lavapipe (software Vulkan); with no adapter
//! at all the server refuses to start and this test fails, loudly.

mod common;

use common::{
    TestServer, assert_matches_sklearn, digits_reference, floats, ints, max_abs_diff, metric,
    output, settings,
};
use edgeserve::app::Running;
use edgeserve::devices::{DeviceChoice, Devices};
use edgeserve_e2e::ModelRepository;
use edgeserve_gpu::GpuBackend;
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

/// `digits` on `one` digit, asked again every 20 ms while the lost GPU is
/// replaced: 503s with `Retry-After: 1` naming the model until it is back,
/// never another status. Returns the first 200's body.
async fn answer_through_recovery(server: &TestServer, one: &Value) -> Value {
    let request =
        json!({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": one}]});
    let started = std::time::Instant::now();
    let mut retried = 0;
    let answer = loop {
        let response = server.send_json("/v2/models/digits/infer", &request).await;
        let retry_after = response.headers().get("retry-after").cloned();
        let (status, body) = common::status_json(response).await;
        match status {
            200 => break body,
            // While the device is replaced and the model reloaded.
            503 => {
                assert_eq!(
                    retry_after.as_ref().map(|v| v.as_bytes()),
                    Some(&b"1"[..]),
                    "{body}"
                );
                assert!(common::error_text(&body).contains("digits"), "{body}");
                retried += 1;
            }
            other => panic!("{other} during recovery (never a 500): {body}"),
        }
        assert!(
            started.elapsed() < edgeserve_e2e::PROCESS_GUARD,
            "digits never came back after the GPU loss"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    eprintln!(
        "recovered after {:?}, {retried} requests told to retry",
        started.elapsed()
    );
    answer
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
    // Before any request, each of the two instances answered the shipped
    // warmup.json at load, waiting for the device once.
    let name = meta["device"]["name"].as_str().unwrap();
    let read_backs = format!("edgeserve_device_read_backs_total{{device=\"{name}\"}}");
    assert_eq!(metric(&gpu, &read_backs).await, 2.0);
    let (_, model) = gpu.get("/v2/models/digits").await;
    assert_eq!(model["parameters"]["device"], "gpu");
    let (gpu_p, gpu_labels) = probabilities(&gpu, inputs, n).await;
    assert_eq!(gpu_labels, cpu_labels);
    let worst = max_abs_diff(&gpu_p, &cpu_p);
    assert!(worst <= 1e-5, "GPU vs CPU: max |Δp| = {worst}");
    assert_matches_sklearn(&gpu_p, &gpu_labels, &reference);
    // Both outputs come back in one wait for the device.
    let before = metric(&gpu, &read_backs).await;
    probabilities(&gpu, inputs, n).await;
    assert_eq!(metric(&gpu, &read_backs).await - before, 1.0);
    let (_, metrics) = gpu.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"edgeserve_device_info{kind="gpu""#),
        "{metrics}"
    );
    // The weights are live tensors, and the device's own allocator (which
    // lavapipe's reports) counts them and everything else it handed out.
    let memory = |state: &str| -> f64 {
        let series = format!("state=\"{state}\"}}");
        let line = metrics
            .lines()
            .find(|l| l.starts_with("edgeserve_device_memory_bytes{") && l.contains(&series))
            .unwrap_or_else(|| panic!("no {state} device memory in {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (allocated, device) = (memory("allocated"), memory("device"));
    assert!(allocated > 0.0 && device >= allocated, "{metrics}");
    gpu.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_gpu_is_reopened_and_its_models_reloaded_with_503s_never_500s_meanwhile() {
    let repo = edgeserve_e2e::model_repository(&["digits", "linear"]);
    // linear pinned to the CPU; digits takes the default device, the GPU.
    let config = repo.path().join("linear/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("device = \"cpu\"\n{text}")).unwrap();
    let running = start_on_gpu(&repo).await;
    // Clones share the open devices: this one sees the GPU replaced.
    let devices = running.devices().clone();
    let lost = devices.gpu().expect("a GPU is open");
    let server = TestServer::attach(running, repo);
    let inputs = &digits_reference()["inputs"];
    let one = json!([inputs[0]]);
    let before = probabilities(&server, &one, 1).await;

    // A real device loss, as a driver reset would cause: wgpu's
    // `Device::destroy` (reachable from the library only, not over HTTP).
    lost.destroy_device();
    let answer = answer_through_recovery(&server, &one).await;
    let after = (
        floats(&output(&answer, "probabilities")["data"]),
        ints(&output(&answer, "label")["data"]),
    );
    assert_eq!(after.1, before.1);
    let worst = max_abs_diff(&after.0, &before.0);
    assert!(
        worst <= 1e-6,
        "before vs after the loss: max |Δp| = {worst}"
    );

    // On a fresh device, with the loss counted once; the CPU model never
    // noticed.
    let fresh = devices.gpu().expect("--device gpu reopens a GPU");
    assert!(!std::sync::Arc::ptr_eq(&fresh, &lost) && fresh.lost().is_none());
    let (_, model) = server.get("/v2/models/digits").await;
    assert_eq!(model["parameters"]["device"], "gpu", "{model}");
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics.contains("edgeserve_device_losses_total 1\n"),
        "{metrics}"
    );
    assert_eq!(server.linear(&[1.0, 2.0]).await, [0.4, 0.5]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_device_auto_a_lost_gpu_that_no_longer_opens_gives_way_to_the_cpu() {
    // `--device auto` takes a hardware GPU and passes over software ones,
    // so on lavapipe it would start on the CPU: the server starts on the
    // adapter opened here instead, as auto would start on a hardware GPU.
    // After the loss auto looks again; where only a software adapter is
    // left (lavapipe in CI, as after a hardware GPU was removed) the CPU
    // backend takes over, and where a hardware GPU opens, it comes back.
    let gpu = GpuBackend::new()
        .unwrap_or_else(|e| panic!("a GPU adapter (install mesa-vulkan-drivers): {e}"));
    let after_loss = if gpu.is_software() { "cpu" } else { "gpu" };
    let devices = Devices::with_gpu(DeviceChoice::Auto, gpu);
    let lost = devices.gpu().expect("the GPU is open");
    let repo = edgeserve_e2e::model_repository(&["digits"]);
    let running = edgeserve::app::start_on(settings(&repo), devices.clone())
        .await
        .expect("the server starts");
    let server = TestServer::attach(running, repo);
    let (_, model) = server.get("/v2/models/digits").await;
    assert_eq!(model["parameters"]["device"], "gpu", "{model}");
    let one = json!([digits_reference()["inputs"][0]]);
    let (before_p, before_labels) = probabilities(&server, &one, 1).await;

    lost.destroy_device();
    let answer = answer_through_recovery(&server, &one).await;

    // Answered on the device auto chose, as the GPU answered: the same
    // label, probabilities within the GPU-vs-CPU tolerance.
    let after_p = floats(&output(&answer, "probabilities")["data"]);
    assert_eq!(ints(&output(&answer, "label")["data"]), before_labels);
    let worst = max_abs_diff(&after_p, &before_p);
    assert!(
        worst <= 1e-5,
        "before vs after the loss: max |Δp| = {worst}"
    );
    let (_, model) = server.get("/v2/models/digits").await;
    assert_eq!(model["parameters"]["device"], after_loss, "{model}");
    let (_, meta) = server.get("/v2").await;
    assert_eq!(meta["device"]["kind"], after_loss, "{meta}");
    assert_eq!(devices.gpu().is_some(), after_loss == "gpu");
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics.contains("edgeserve_device_losses_total 1\n"),
        "{metrics}"
    );
    let default_device = metrics
        .lines()
        .find(|l| l.starts_with("edgeserve_device_info{") && l.ends_with(" 1"))
        .unwrap_or_else(|| panic!("no default device in {metrics}"));
    assert!(
        default_device.starts_with(&format!("edgeserve_device_info{{kind=\"{after_loss}\"")),
        "{metrics}"
    );
    // A fresh request after the switch is served too.
    assert_eq!(
        probabilities(&server, &one, 1).await,
        (after_p, before_labels)
    );
    server.stop().await;
}

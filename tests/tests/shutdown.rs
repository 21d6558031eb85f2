//! Graceful shutdown: requests in flight finish, new connections are refused.

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_requests_finish_before_the_server_stops() {
    let server = TestServer::start(&["linear", "faulty"]).await;
    let (base, client) = (server.base.clone(), server.client.clone());
    // A request that takes the faulty model's whole 500 ms deadline.
    let slow = common::spawn_faulty(&client, &base, 2);
    common::wait_inflight(&client, &base, 1).await;
    let started = std::time::Instant::now();
    server.stop().await;
    // Shutdown waited for the in-flight request, which got its answer.
    let (status, body) = answer(slow).await;
    assert_eq!(status, 500);
    assert!(
        body["error"].as_str().unwrap().contains("deadline"),
        "{body}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "shutdown returned before the request finished"
    );
    // And nothing new is accepted.
    let refused = common::client()
        .get(format!("{base}/v2/health/live"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a new connection was accepted after shutdown"
    );
}

/// A request that runs past the shutdown timeout does not hold the stop
/// up: shutdown returns while the request is still running.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_stops_at_its_timeout_with_a_request_still_running() {
    let repo = edgeserve_e2e::faulty_repository("instances = 1\ntimeout_ms = 3000\n");
    let mut settings = common::settings(&repo);
    settings.shutdown_timeout = Duration::from_millis(100);
    let running = edgeserve::app::start(settings).await.unwrap();
    let server = TestServer::attach(running, repo);
    let (base, client) = (server.base.clone(), server.client.clone());
    // Spins until its 3 s deadline, thirty times the shutdown timeout.
    let slow = common::spawn_faulty(&client, &base, 2);
    common::wait_inflight(&client, &base, 1).await;
    server.stop().await;
    assert!(
        !slow.is_finished(),
        "shutdown waited for a request past its timeout"
    );
}

/// The real binary, stopped the way Kubernetes stops a pod: SIGTERM while a
/// slow request is running.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    // Room for action 7's one second of work.
    let repo = edgeserve_e2e::faulty_repository("instances = 1\ntimeout_ms = 30000\n");
    let mut server = common::spawn_binary(&repo);
    let base = server.base.clone();
    let client = common::client();
    let (status, _) = get(&base, "/v2/health/ready").await.expect("it serves");
    assert_eq!(status, 200);
    let slow = common::spawn_faulty(&client, &base, 7);
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
    let (status, body) = answer(slow).await;
    assert_eq!(status, 200);
    assert_eq!(body["outputs"][0]["data"], json!([7]), "{body}");
    let status = tokio::task::block_in_place(|| server.wait())
        .expect("edgeserve exits after draining, within the guard time");
    assert!(status.success(), "edgeserve exited with {status}");
}

/// The answer to the in-flight request `slow`: (status, JSON body).
async fn answer(slow: JoinHandle<reqwest::Result<reqwest::Response>>) -> (u16, Value) {
    let response = slow
        .await
        .unwrap()
        .expect("the in-flight request is answered, not cut off");
    common::status_json(response).await
}

/// `GET path` on a fresh connection → (status, JSON body), or `None` when
/// the connection is refused.
async fn get(base: &str, path: &str) -> Option<(u16, Value)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let response = client.get(format!("{base}{path}")).send().await.ok()?;
    Some(common::status_json(response).await)
}

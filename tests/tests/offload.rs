//! Edge→datacenter offload: an edge server (in this process) forwards what
//! it cannot serve to an upstream `edgeserve` process.

mod common;

use common::{TestServer, error_text, faulty_request};
use edgeserve::offload::{SERVED_BY, UpstreamSettings};
use edgeserve_e2e::model_repository;
use serde_json::json;

/// Upstream settings for `url`, forwarding on queue timeouts or not.
fn upstream(url: &str) -> UpstreamSettings {
    UpstreamSettings {
        url: url.to_owned(),
        connect_timeout: std::time::Duration::from_secs(5),
        timeout: std::time::Duration::from_secs(60),
        offload_on_queue_timeout: false,
        ca: None,
    }
}

/// An edge server with `models`, forwarding to `upstream_url`.
async fn edge(models: &[&str], upstream_url: &str) -> TestServer {
    let repo = model_repository(models);
    let mut settings = common::settings(&repo);
    settings.upstream = Some(upstream(upstream_url));
    let running = edgeserve::app::start(settings).await.unwrap();
    TestServer::attach(running, repo)
}

async fn send(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, Option<String>, serde_json::Value) {
    let mut request = server.request(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let served_by = response
        .headers()
        .get(SERVED_BY)
        .map(|v| v.to_str().unwrap().to_owned());
    (status, served_by, response.json().await.unwrap_or_default())
}

fn linear_request() -> serde_json::Value {
    json!({"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32", "data": [1, 2, 3]}]})
}

/// Sends `linear` (which `edge` lacks) and asserts the upstream at
/// `upstream_url` failed it: `status`, marked `upstream-unavailable`, the
/// error naming the upstream. Returns the error body.
async fn unavailable(edge: &TestServer, upstream_url: &str, status: u16) -> serde_json::Value {
    let (got, served_by, body) = send(
        edge,
        reqwest::Method::POST,
        "/v2/models/linear/infer",
        Some(linear_request()),
    )
    .await;
    assert_eq!(got, status, "{body}");
    assert_eq!(served_by.as_deref(), Some("upstream-unavailable"));
    assert!(error_text(&body).contains(upstream_url), "{body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_serves_its_own_models_and_forwards_the_rest() {
    // The datacenter: the real binary.
    let dc_repo = model_repository(&["linear", "faulty"]);
    let dc = common::spawn_binary(&dc_repo);
    let edge = edge(&["faulty"], &dc.base).await;
    use reqwest::Method;

    // Local: answered here.
    let (status, served_by, body) = send(
        &edge,
        Method::POST,
        "/v2/models/faulty/infer",
        Some(faulty_request(0)),
    )
    .await;
    assert_eq!((status, served_by), (200, None), "{body}");
    assert_eq!(body["outputs"][0]["data"], json!([0]));

    // Missing here: infer, versioned infer, metadata and readiness come from
    // the datacenter, marked as such.
    for path in [
        "/v2/models/linear/infer",
        "/v2/models/linear/versions/1/infer",
    ] {
        let (status, served_by, body) =
            send(&edge, Method::POST, path, Some(linear_request())).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(served_by.as_deref(), Some("upstream"), "{path}");
        assert_eq!(body["model_name"], "linear");
        let ys = common::floats(&body["outputs"][0]["data"]);
        assert!(common::max_abs_diff(&ys, &[0.4, 0.5, 0.6]) < 1e-6, "{ys:?}");
    }
    let (status, served_by, body) = send(&edge, Method::GET, "/v2/models/linear", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served_by.as_deref(), Some("upstream"));
    assert_eq!(body["inputs"][0]["name"], "x", "{body}");
    let (status, served_by, body) = send(
        &edge,
        Method::GET,
        "/v2/models/linear/versions/1/ready",
        None,
    )
    .await;
    assert_eq!(
        (status, served_by.as_deref()),
        (200, Some("upstream")),
        "{body}"
    );

    // Unknown on both: the datacenter's 404 comes through.
    let (status, served_by, body) = send(
        &edge,
        Method::POST,
        "/v2/models/nope/infer",
        Some(linear_request()),
    )
    .await;
    assert_eq!(
        (status, served_by.as_deref()),
        (404, Some("upstream")),
        "{body}"
    );
    assert!(error_text(&body).contains("unknown model 'nope'"), "{body}");

    // A request that was itself forwarded is never forwarded again (no
    // loops between servers naming each other as upstream).
    let response = edge
        .client
        .post(format!("{}/v2/models/linear/infer", edge.base))
        .header(edgeserve::offload::FORWARDED, "1")
        .json(&linear_request())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(!response.headers().contains_key(SERVED_BY));

    let (_, metrics) = edge.get_text("/metrics").await;
    assert!(
        metrics
            .contains(r#"edgeserve_offloaded_requests_total{model="linear",reason="missing"} 4"#),
        "{metrics}"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_model_offloads_past_its_queue_deadline_by_policy() {
    let dc_repo = model_repository(&["faulty"]);
    let dc = common::spawn_binary(&dc_repo);
    // One instance, no queueing: a spinning request holds it until its
    // deadline.
    let repo = edgeserve_e2e::faulty_repository(
        "instances = 1\ntimeout_ms = 1000\nqueue_timeout_ms = 0\noffload_on_queue_timeout = true\n",
    );
    let mut settings = common::settings(&repo);
    settings.upstream = Some(upstream(&dc.base));
    let edge = TestServer::attach(edgeserve::app::start(settings).await.unwrap(), repo);
    // A probe sent while a spinning request holds the only instance finds
    // none free and goes to the datacenter. Should the probe overtake the
    // spinning request (both are in flight at once), it runs here instead:
    // try again.
    let mut offloaded = None;
    let mut offloads = 0;
    for _ in 0..20 {
        let spinning = common::spawn_faulty(&edge.client, &edge.base, 2);
        common::wait_inflight(&edge.client, &edge.base, 1).await;
        let (status, served_by, body) = send(
            &edge,
            reqwest::Method::POST,
            "/v2/models/faulty/infer",
            Some(faulty_request(0)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let spun = spinning.await.unwrap().unwrap();
        let (spin_status, spin_forwarded) = (
            spun.status().as_u16(),
            spun.headers().contains_key(SERVED_BY),
        );
        // Either way the spinning request hits a deadline, here or there.
        assert_eq!(spin_status, 500);
        offloads += usize::from(spin_forwarded) + usize::from(served_by.is_some());
        if served_by.is_some() {
            assert!(!spin_forwarded, "both requests were offloaded");
            offloaded = Some((served_by, body));
            break;
        }
    }
    let (served_by, body) = offloaded.expect("no request was offloaded while the model was busy");
    assert_eq!(served_by.as_deref(), Some("upstream"));
    assert_eq!(body["outputs"][0]["data"], json!([0]), "{body}");
    let (_, metrics) = edge.get_text("/metrics").await;
    assert!(
        metrics.contains(&format!(
            r#"edgeserve_offloaded_requests_total{{model="faulty",reason="queue_timeout"}} {offloads}"#
        )),
        "{metrics}"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_upstream_is_a_prompt_502_naming_it() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream_url = format!("http://127.0.0.1:{port}");
    let edge = edge(&["faulty"], &upstream_url).await;
    unavailable(&edge, &upstream_url, 502).await;
    // Local models are unaffected.
    let (status, body) = edge.faulty(0).await;
    assert_eq!(status, 200, "{body}");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_never_answers_is_a_504_naming_it() {
    // Accepts connections and reads nothing, answers nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            connections.push(socket);
        }
    });
    let repo = model_repository(&["faulty"]);
    let mut settings = common::settings(&repo);
    settings.upstream = Some(UpstreamSettings {
        timeout: std::time::Duration::from_millis(300),
        ..upstream(&upstream_url)
    });
    let edge = TestServer::attach(edgeserve::app::start(settings).await.unwrap(), repo);
    let body = unavailable(&edge, &upstream_url, 504).await;
    assert!(error_text(&body).contains("300 ms"), "{body}");
    edge.stop().await;
    held.abort();
}

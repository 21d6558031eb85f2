//! Safe to expose: API keys on inference, the admin key on management, the
//! secure default off loopback, keys kept out of logs, bundle fetches only
//! from allowed hosts (redirects and link-local addresses included),
//! connections that send nothing, half a request or a stalled body, closed,
//! connections past `--max-connections` held back, and request bodies past
//! `--max-body-memory-bytes` refused.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use common::{TestServer, error_text, status_json};
use edgeserve::bundle::Sha256Hex;
use edgeserve_e2e::model_repository;
use reqwest::Method;
use serde_json::json;

const LOAD: &str = "/v2/repository/models/linear/load";
const UNLOAD: &str = "/v2/repository/models/linear/unload";
const INFER: &str = "/v2/models/linear/infer";

fn linear_request() -> serde_json::Value {
    json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]})
}

/// `method path` with `key` as a Bearer token (none for `None`) → status,
/// `WWW-Authenticate`, JSON body.
async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    key: Option<&str>,
) -> (u16, Option<String>, serde_json::Value) {
    let mut request = server.request(method.clone(), path);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if method == Method::POST && path.ends_with("/infer") {
        request = request.json(&linear_request());
    }
    let response = request.send().await.unwrap();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = status_json(response).await;
    (status, challenge, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_guard_inference_and_the_admin_key_guards_management() {
    let repo = model_repository(&["linear"]);
    let mut settings = common::settings(&repo);
    settings.access.api_keys = vec!["team-a-key".parse().unwrap(), "team-b-key".parse().unwrap()];
    settings.access.admin_key = Some("the-admin-key".parse().unwrap());
    let server = TestServer::attach(edgeserve::app::start(settings).await.unwrap(), repo);

    // Probes and metrics need no key.
    for path in ["/v2/health/live", "/v2/health/ready", "/metrics"] {
        let (status, _, body) = call(&server, Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // Inference and metadata: none → 401 with a challenge; wrong → 401.
    for (method, path) in [
        (Method::POST, INFER),
        (Method::GET, "/v2/models/linear"),
        (Method::GET, "/v2"),
        (Method::POST, "/v2/repository/index"),
        (Method::POST, "/generate"),
        (Method::GET, "/v2/no/such/route"),
    ] {
        let (status, challenge, body) = call(&server, method.clone(), path, None).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="edgeserve""#));
        assert!(
            error_text(&body).contains("Authorization: Bearer"),
            "{body}"
        );
        let (status, challenge, body) = call(&server, method.clone(), path, Some("guess")).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert!(challenge.unwrap().contains("invalid_token"));
    }
    let (status, _, body) = call(&server, Method::POST, INFER, Some("team-b-key")).await;
    assert_eq!(status, 200, "{body}");
    assert!(common::max_abs_diff(&common::floats(&body["outputs"][0]["data"]), &[0.4]) < 1e-6);
    let (status, _, body) = call(
        &server,
        Method::GET,
        "/v2/models/linear",
        Some("team-a-key"),
    )
    .await;
    assert_eq!((status, &body["name"]), (200, &json!("linear")), "{body}");
    // A header of another scheme is refused, not ignored.
    let response = server
        .request(Method::GET, "/v2/models/linear")
        .basic_auth("team-a-key", None::<&str>)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Management: an API key is forbidden, the admin key works, however
    // the path is spelled.
    for path in [
        UNLOAD,
        "/v2/%72epository/models/linear/unload",
        "//v2/repository/models/linear/unload",
    ] {
        let (status, challenge, body) = call(&server, Method::POST, path, Some("team-a-key")).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(challenge, None);
        assert!(error_text(&body).contains("--admin-key"), "{body}");
        let (status, _, _) = call(&server, Method::POST, path, None).await;
        assert_eq!(status, 401, "{path}");
    }
    let (status, _, body) = call(&server, Method::POST, INFER, Some("team-a-key")).await;
    assert_eq!(
        status, 200,
        "refused management calls changed nothing: {body}"
    );
    let (status, _, body) = call(&server, Method::POST, UNLOAD, Some("the-admin-key")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(&server, Method::POST, INFER, Some("team-a-key")).await;
    assert_ne!(status, 200, "unloaded, yet served: {body}");
    let (status, _, body) = call(&server, Method::POST, LOAD, Some("the-admin-key")).await;
    assert_eq!(status, 200, "{body}");
    // The admin key may also infer.
    let (status, _, body) = call(&server, Method::POST, INFER, Some("the-admin-key")).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn management_is_disabled_off_loopback_without_an_admin_key() {
    for insecure in [false, true] {
        let repo = model_repository(&["linear"]);
        let mut settings = common::settings(&repo);
        settings.listen = (std::net::Ipv4Addr::UNSPECIFIED, 0).into();
        settings.access.insecure_management = insecure;
        let running = edgeserve::app::start(settings).await.unwrap();
        let port = running.addr().port();
        let mut server = TestServer::attach(running, repo);
        server.base = format!("http://127.0.0.1:{port}");

        // No API key configured: inference stays open.
        let (status, _, body) = call(&server, Method::POST, INFER, None).await;
        assert_eq!(status, 200, "{body}");
        let (status, _, body) = call(&server, Method::POST, UNLOAD, None).await;
        if insecure {
            assert_eq!(status, 200, "--insecure-management: {body}");
        } else {
            assert_eq!(status, 403, "{body}");
            let message = error_text(&body);
            for part in ["--admin-key", "--insecure-management", "0.0.0.0"] {
                assert!(message.contains(part), "{message} lacks {part}");
            }
            let (status, _, body) = call(&server, Method::POST, INFER, None).await;
            assert_eq!(status, 200, "the refused unload changed nothing: {body}");
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_never_reach_the_log_or_the_help() {
    let repo = model_repository(&["linear"]);
    let cache = common::shared_cache();
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("keys");
    std::fs::write(&key_file, "# one key a line\nfile-key-0123\n").unwrap();
    let process = edgeserve_e2e::ServerProcess::on_cpu(
        &repo,
        &cache,
        &[
            "--api-key".as_ref(),
            "flag-key-4567".as_ref(),
            "--api-key-file".as_ref(),
            key_file.as_os_str(),
            "--admin-key".as_ref(),
            "admin-key-89ab".as_ref(),
        ],
    );
    let client = common::client();
    let infer = format!("{}{INFER}", process.base);
    // Each key with the status it gets; none, not even a guess, is logged.
    let keys = [
        ("flag-key-4567", 200),
        ("file-key-0123", 200),
        ("admin-key-89ab", 200),
        ("guess-key-cdef", 401),
    ];
    for (key, expected) in keys {
        let response = client
            .post(&infer)
            .bearer_auth(key)
            .json(&linear_request())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{key}");
    }
    let log = process.log().join("\n");
    assert!(log.contains("serving"), "{log}");
    for (secret, _) in keys {
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }
    drop(process);

    let help = edgeserve_e2e::edgeserve_command()
        .args(["serve", "--help"])
        .env("EDGESERVE_API_KEYS", "env-key-1,env-key-2")
        .env("EDGESERVE_ADMIN_KEY", "env-admin-key")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("EDGESERVE_API_KEYS"), "{help}");
    for secret in ["env-key-1", "env-admin-key"] {
        assert!(!help.contains(secret), "--help shows {secret}:\n{help}");
    }
}

/// A loopback server that records every request and answers `/{name}`
/// from fixed files, or with a redirect for names in `redirects`.
struct Recorder {
    base: String,
    hits: Arc<Mutex<Vec<String>>>,
}

type RecorderState = (
    Arc<HashMap<String, Vec<u8>>>,
    Arc<HashMap<String, String>>,
    Arc<Mutex<Vec<String>>>,
);

impl Recorder {
    async fn start(files: &[(&str, &[u8])], redirects: &[(&str, String)]) -> Recorder {
        let files = files
            .iter()
            .map(|(n, b)| (n.to_string(), b.to_vec()))
            .collect();
        let redirects = redirects
            .iter()
            .map(|(n, to)| (n.to_string(), to.clone()))
            .collect();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let state: RecorderState = (Arc::new(files), Arc::new(redirects), hits.clone());
        let router = axum::Router::new()
            .route("/{name}", axum::routing::get(record))
            .with_state(state);
        let base = common::serve_on_loopback(router).await;
        Recorder { base, hits }
    }

    fn host(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

async fn record(
    State((files, redirects, hits)): State<RecorderState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    hits.lock().unwrap().push(name.clone());
    if let Some(to) = redirects.get(&name) {
        return Redirect::temporary(to).into_response();
    }
    match files.get(&name) {
        Some(bytes) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn load_bundle(server: &TestServer, url: &str, sha256: &str) -> (u16, serde_json::Value) {
    server
        .post(
            LOAD,
            &json!({"parameters": {"bundle_url": url, "sha256": sha256}}),
        )
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn bundle_urls_outside_the_allowlist_are_refused_before_any_fetch() {
    let bundle = common::linear_bundle();
    let digest = Sha256Hex::of(&bundle).to_string();
    let outside = Recorder::start(&[("linear.tar.gz", &bundle)], &[]).await;
    let allowed = Recorder::start(
        &[("linear.tar.gz", &bundle)],
        &[
            ("to-outside", outside.url("linear.tar.gz")),
            (
                "to-metadata",
                "http://169.254.169.254/latest/meta-data/".into(),
            ),
            ("to-ec2-v6", "http://[fd00:ec2::254]/latest/".into()),
        ],
    )
    .await;

    // No allowlist: no bundle over the API at all.
    let repo = model_repository(&[]);
    let cache = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&repo);
    settings.bundles.cache_dir = cache.path().to_owned();
    let server = TestServer::attach(edgeserve::app::start(settings).await.unwrap(), repo);
    let (status, body) = load_bundle(&server, &allowed.url("linear.tar.gz"), &digest).await;
    assert_eq!(status, 403, "{body}");
    assert!(error_text(&body).contains("--bundle-allow-host"), "{body}");
    assert_eq!(
        allowed.hits(),
        Vec::<String>::new(),
        "fetched while refused"
    );
    server.stop().await;

    // Allowed: one loopback host:port. The other is refused, directly or by
    // redirect, and so are metadata addresses, even with every host allowed.
    for allow in [allowed.host().to_owned(), "*".to_owned()] {
        let repo = model_repository(&[]);
        let cache = tempfile::tempdir().unwrap();
        let mut settings = common::settings(&repo);
        settings.bundles.cache_dir = cache.path().to_owned();
        settings.bundles.allow.hosts = vec![allow.parse().unwrap()];
        let server = TestServer::attach(edgeserve::app::start(settings).await.unwrap(), repo);
        let mut refused = vec![
            allowed.url("to-metadata"),
            allowed.url("to-ec2-v6"),
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "http://[fe80::1]/x.tar".to_owned(),
        ];
        if allow != "*" {
            refused.push(outside.url("linear.tar.gz"));
            refused.push(allowed.url("to-outside"));
        }
        for url in &refused {
            let (status, body) = load_bundle(&server, url, &digest).await;
            assert_eq!(status, 403, "{allow}: {url}: {body}");
            assert!(error_text(&body).contains("not allowed"), "{body}");
        }
        if allow != "*" {
            assert_eq!(
                outside.hits(),
                Vec::<String>::new(),
                "fetched from a refused host"
            );
        }
        assert!(!server.repo.join("linear").exists());
        let (status, body) = load_bundle(&server, &allowed.url("linear.tar.gz"), &digest).await;
        assert_eq!(status, 200, "{allow}: {body}");
        assert_eq!(server.linear(&[1.0]).await.len(), 1);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_client_sends_its_api_key_and_a_wrong_one_is_an_authentication_error() {
    let repo = model_repository(&["minilm"]);
    let cache = common::shared_cache();
    let process = edgeserve_e2e::ServerProcess::on_cpu(
        &repo,
        &cache,
        &["--api-key".as_ref(), "openai-client-key".as_ref()],
    );
    let url = process.base.trim_start_matches("http://").to_owned();
    common::run_python(
        "openai_auth.py",
        &[url.as_ref(), "openai-client-key".as_ref()],
        "openai api key: OK",
    )
    .await;
}

/// What the server sent on `connection` until it closed it, read for up to
/// a minute (`Err` when it kept it open that long).
async fn until_closed(
    connection: &mut tokio::net::TcpStream,
) -> Result<std::io::Result<String>, tokio::time::error::Elapsed> {
    use tokio::io::AsyncReadExt;
    let mut answered = Vec::new();
    let read = connection.read_to_end(&mut answered);
    let read = tokio::time::timeout(std::time::Duration::from_secs(60), read).await?;
    Ok(read.map(|_| String::from_utf8_lossy(&answered).into_owned()))
}

/// A client that connects and sends nothing, half an HTTP/1 request head,
/// or HTTP/2's preface and half a frame gets its connection closed once it
/// idles past the idle timeout, on the REST and the gRPC port alike, while
/// a request that takes longer than that on another connection is answered.
#[tokio::test(flavor = "multi_thread")]
async fn connections_that_send_nothing_or_half_a_request_are_closed() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    // Room for action 7's second of work, three idle timeouts long.
    let repo = edgeserve_e2e::faulty_repository("instances = 1\ntimeout_ms = 30000\n");
    let mut settings = common::settings(&repo);
    settings.idle_timeout = Duration::from_millis(300);
    settings.grpc_port = Some(0);
    let running = edgeserve::app::start(settings).await.unwrap();
    let (rest, grpc) = (running.addr(), running.grpc_addr().unwrap());
    let server = TestServer::attach(running, repo);
    let slow = common::spawn_faulty(&server.client, &server.base, 7);

    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let half_frame = [&preface[..], &[0, 0, 6, 4][..]].concat();
    let head = b"POST /v2/models/faulty/infer HTTP/1.1\r\nHost: edgeserve\r\n";
    for (what, addr, sent) in [
        ("nothing", rest, &b""[..]),
        ("half a head", rest, &head[..]),
        ("half an HTTP/2 frame", rest, &half_frame[..]),
        ("nothing to gRPC", grpc, &b""[..]),
        ("half a frame to gRPC", grpc, &half_frame[..]),
    ] {
        let mut connection = tokio::net::TcpStream::connect(addr).await.unwrap();
        connection.write_all(sent).await.unwrap();
        // The server's HTTP/2 settings may come first; then the close.
        let closed = until_closed(&mut connection).await;
        assert!(closed.is_ok(), "a connection sent {what} was kept open");
    }
    // A request whose body stops arriving: 408, and the connection closed.
    let mut connection = tokio::net::TcpStream::connect(rest).await.unwrap();
    let stalled = "POST /v2/models/faulty/infer HTTP/1.1\r\nHost: edgeserve\r\n\
                   Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"inputs\":";
    connection.write_all(stalled.as_bytes()).await.unwrap();
    let answered = until_closed(&mut connection)
        .await
        .expect("a connection whose body stalled was kept open")
        .unwrap();
    assert!(
        answered.starts_with("HTTP/1.1 408") && answered.contains("stopped arriving"),
        "{answered}"
    );
    // A body that pauses for less than the idle time each time, but longer
    // than it in all: read whole and answered.
    let body = common::faulty_request(0).to_string();
    let mut connection = tokio::net::TcpStream::connect(rest).await.unwrap();
    let head = format!(
        "POST /v2/models/faulty/infer HTTP/1.1\r\nHost: edgeserve\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    connection.write_all(head.as_bytes()).await.unwrap();
    // Five parts 100 ms apart: a third of the idle time each, 500 ms in all.
    for part in body.as_bytes().chunks(body.len().div_ceil(5)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        connection.write_all(part).await.unwrap();
    }
    let answered = until_closed(&mut connection)
        .await
        .expect("an answer to a body sent in pauses")
        .unwrap();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let (status, body) = status_json(slow.await.unwrap().unwrap()).await;
    assert_eq!(
        (status, &body["outputs"][0]["data"]),
        (200, &json!([7])),
        "{body}"
    );
    server.stop().await;
}

/// `GET path` on a kept-alive HTTP/1.1 connection: the answer's head and
/// body.
async fn get_on(connection: &mut tokio::net::TcpStream, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: edgeserve\r\n\r\n");
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|n| n.trim().parse::<usize>().unwrap())
                })
                .expect("the answer has a content-length");
            if answer.len() >= end + 4 + length {
                return text;
            }
        }
        let n = connection.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection mid-answer: {text}");
        answer.extend_from_slice(&chunk[..n]);
    }
}

/// The value of the metric `series` in a `/metrics` answer.
fn series(metrics: &str, series: &str) -> f64 {
    common::metric_in(metrics, series).unwrap_or_else(|| panic!("no {series} in {metrics}"))
}

/// Past `--max-connections`, counted over REST and gRPC together, a new
/// connection waits unanswered until an open one closes; the clients
/// already connected are served all along.
#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_limit_wait_until_one_closes() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    let repo = model_repository(&["linear"]);
    let mut settings = common::settings(&repo);
    settings.max_connections = Some(2);
    settings.grpc_port = Some(0);
    let running = edgeserve::app::start(settings).await.unwrap();
    let (rest, grpc) = (running.addr(), running.grpc_addr().unwrap());
    let _server = TestServer::attach(running, repo);

    let mut first = TcpStream::connect(rest).await.unwrap();
    assert!(
        get_on(&mut first, "/v2/health/live")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // A silent gRPC connection takes the second place once accepted.
    let second = TcpStream::connect(grpc).await.unwrap();
    let metrics = until_open(&mut first, 2).await;
    assert_eq!(series(&metrics, "edgeserve_max_connections"), 2.0);

    let mut third = TcpStream::connect(rest).await.unwrap();
    let request = "GET /v2/health/live HTTP/1.1\r\nHost: edgeserve\r\nConnection: close\r\n\r\n";
    third.write_all(request.as_bytes()).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(500), until_closed(&mut third)).await;
    assert!(
        waited.is_err(),
        "a connection past the limit was served: {waited:?}"
    );
    // The first client is still served.
    assert!(
        get_on(&mut first, "/v2/health/ready")
            .await
            .starts_with("HTTP/1.1 200")
    );

    drop(second);
    let answered = until_closed(&mut third).await.unwrap().unwrap();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    // The third's place is given back once the server has closed it.
    until_open(&mut first, 1).await;
}

/// `/metrics` read on `connection` until `edgeserve_open_connections` is
/// `n`, for up to a minute.
async fn until_open(connection: &mut tokio::net::TcpStream, n: usize) -> String {
    let mut metrics = String::new();
    for _ in 0..6000 {
        metrics = get_on(connection, "/metrics").await;
        if series(&metrics, "edgeserve_open_connections") == n as f64 {
            return metrics;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never {n} connections open: {metrics}");
}

/// A `linear` request of `n` values as JSON, about 4 bytes a value.
fn linear_of(n: usize) -> Vec<u8> {
    let data = vec![1.0f32; n];
    serde_json::to_vec(
        &json!({"inputs": [{"name": "x", "shape": [n, 1], "datatype": "FP32", "data": data}]}),
    )
    .unwrap()
}

/// While one client's large body holds most of `--max-body-memory-bytes`,
/// another's that would take the server past it is refused, REST with a
/// 503 and Retry-After and gRPC with RESOURCE_EXHAUSTED, each naming the
/// limit; the first client gets its answer, and once it has, the refused
/// request is served.
#[tokio::test(flavor = "multi_thread")]
async fn bodies_past_the_servers_memory_for_them_are_refused_and_the_others_served() {
    use edgeserve::server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
    use edgeserve::server::grpc::proto::{
        ModelInferRequest, model_infer_request::InferInputTensor,
    };
    use tokio::io::AsyncWriteExt;

    const LIMIT: usize = 1 << 20;
    let repo = model_repository(&["linear"]);
    let mut settings = common::settings(&repo);
    settings.max_body_bytes = LIMIT;
    settings.max_body_memory_bytes = Some(LIMIT);
    settings.grpc_port = Some(0);
    let running = edgeserve::app::start(settings).await.unwrap();
    let grpc = running.grpc_addr().unwrap();
    let server = TestServer::attach(running, repo);
    assert_eq!(
        common::metric(&server, "edgeserve_body_memory_limit_bytes").await,
        LIMIT as f64
    );

    // 700 KiB on its way: 600 KiB sent, the rest held back.
    let held = linear_of(175_000);
    let sent = 600 << 10;
    let mut holder = tokio::net::TcpStream::connect(server.authority())
        .await
        .unwrap();
    let head = format!(
        "POST {INFER} HTTP/1.1\r\nHost: edgeserve\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        held.len()
    );
    holder.write_all(head.as_bytes()).await.unwrap();
    holder.write_all(&held[..sent]).await.unwrap();
    while common::metric(&server, "edgeserve_body_memory_bytes").await < sent as f64 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let other = linear_of(120_000);
    assert!(other.len() + sent > LIMIT && other.len() < LIMIT);
    let refused = server
        .request(Method::POST, INFER)
        .header(header::CONTENT_TYPE, "application/json")
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.headers().get(header::RETRY_AFTER).unwrap(), "1");
    let (status, body) = status_json(refused).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        error_text(&body).contains("--max-body-memory-bytes"),
        "{body}"
    );

    let mut grpc = GrpcInferenceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let message = ModelInferRequest {
        model_name: "linear".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![120_000, 1],
            ..Default::default()
        }],
        raw_input_contents: vec![vec![0; 480_000].into()],
        ..Default::default()
    };
    let status = grpc.model_infer(message.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-body-memory-bytes"),
        "{status:?}"
    );

    // The first client, unhurried, is answered.
    holder.write_all(&held[sent..]).await.unwrap();
    let answered = until_closed(&mut holder).await.unwrap().unwrap();
    assert!(
        answered.starts_with("HTTP/1.1 200"),
        "{}",
        &answered[..200.min(answered.len())]
    );
    while common::metric(&server, "edgeserve_body_memory_bytes").await != 0.0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (status, body) = status_json(
        server
            .request(Method::POST, INFER)
            .header(header::CONTENT_TYPE, "application/json")
            .body(other)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer = grpc.model_infer(message).await.unwrap().into_inner();
    assert_eq!(answer.raw_output_contents[0].len(), 480_000);
}

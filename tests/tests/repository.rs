//! Models come and go without a restart (Triton's repository API), and
//! compiled components are cached across restarts.

mod common;

use common::{TestServer, error_text};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn models_load_and_unload_without_restart() {
    let server = TestServer::start(&["linear"]).await;
    let (status, index) = server.post("/v2/repository/index", &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        index,
        json!([{"name": "linear", "version": "1", "state": "READY"}])
    );

    assert_eq!(
        server
            .post("/v2/repository/models/linear/unload", &json!({}))
            .await
            .0,
        200
    );
    let (status, body) = server
        .post("/v2/models/linear/infer", &json!({"inputs": []}))
        .await;
    assert_eq!(status, 400);
    assert!(
        error_text(&body).contains("model 'linear' is not loaded: unloaded"),
        "{body}"
    );
    let (_, index) = server.post("/v2/repository/index", &json!({})).await;
    assert_eq!(index[0]["state"], "UNAVAILABLE");

    assert_eq!(
        server
            .post("/v2/repository/models/linear/load", &json!({}))
            .await
            .0,
        200
    );
    assert!((server.linear(&[1.0]).await[0] - 0.4).abs() < 1e-6);

    // A model dropped into the repository while serving.
    edgeserve_e2e::add_model(&server.repo, "digits").unwrap();
    let (_, index) = server.post("/v2/repository/index", &json!({})).await;
    assert_eq!(
        index[0],
        json!({"name": "digits", "state": "UNAVAILABLE", "reason": "not loaded"})
    );
    assert_eq!(
        server
            .post("/v2/repository/models/digits/load", &json!({}))
            .await
            .0,
        200
    );
    assert_eq!(server.get("/v2/models/digits/ready").await.0, 200);

    let (status, body) = server
        .post("/v2/repository/models/ghost/load", &json!({}))
        .await;
    assert_eq!(status, 404);
    assert!(
        error_text(&body).contains("model 'ghost' is not in the repository"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_up_request_is_answered_at_load_and_one_that_fails_fails_the_load() {
    let server = TestServer::start(&["linear"]).await;
    let model = server.repo.join("linear");
    let config = std::fs::read_to_string(model.join("config.toml")).unwrap();
    // Top-level keys go before the config's tables.
    std::fs::write(
        model.join("config.toml"),
        format!("warmup = \"warmup.json\"\n{config}"),
    )
    .unwrap();
    let empty = json!({});
    let load = || server.post("/v2/repository/models/linear/load", &empty);
    // Each failed reload leaves the loaded version serving (as Triton does).
    for (request, says) in [
        (None, "warmup.json: No such file"),
        (Some("{\"inputs\": ["), "warm-up request"),
        // Decoded, but the handler's product refuses a [1, 2] x.
        (
            Some(
                r#"{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}"#,
            ),
            "failed: warm-up request",
        ),
    ] {
        if let Some(request) = request {
            std::fs::write(model.join("warmup.json"), request).unwrap();
        }
        let (status, body) = load().await;
        assert_eq!(status, 500, "{body}");
        let text = error_text(&body);
        assert!(
            text.contains(says) && text.contains("warmup.json"),
            "{body}"
        );
        let (_, index) = server.post("/v2/repository/index", &json!({})).await;
        assert_eq!(index[0]["state"], "READY", "{index}");
        assert!((server.linear(&[1.0]).await[0] - 0.4).abs() < 1e-6);
    }
    std::fs::write(
        model.join("warmup.json"),
        r#"{"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [1, 2]}]}"#,
    )
    .unwrap();
    let (status, body) = load().await;
    assert_eq!(status, 200, "{body}");
    assert!((server.linear(&[1.0]).await[0] - 0.4).abs() < 1e-6);
    // A file outside the model's folder is refused when the config is read.
    std::fs::write(
        model.join("config.toml"),
        format!("warmup = \"../linear/warmup.json\"\n{config}"),
    )
    .unwrap();
    let (status, body) = load().await;
    assert_eq!(status, 500, "{body}");
    assert!(
        error_text(&body).contains("warmup must name a file in the model's folder"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_reload_leaves_the_loaded_version_serving() {
    let server = TestServer::start(&["linear"]).await;
    let wasm = server.repo.join("linear/1/model.wasm");
    let good = std::fs::read(&wasm).unwrap();
    std::fs::write(&wasm, b"not a component").unwrap();
    let empty = json!({});
    let load = || server.post("/v2/repository/models/linear/load", &empty);
    let (status, body) = load().await;
    assert_eq!(status, 500, "{body}");
    assert!(
        error_text(&body).contains("cannot compile linear:1"),
        "{body}"
    );
    let (_, index) = server.post("/v2/repository/index", &empty).await;
    assert_eq!(
        index,
        json!([{"name": "linear", "version": "1", "state": "READY"}])
    );
    assert!((server.linear(&[1.0]).await[0] - 0.4).abs() < 1e-6);

    // With nothing loaded, the failure is the model's state.
    assert_eq!(
        server
            .post("/v2/repository/models/linear/unload", &empty)
            .await
            .0,
        200
    );
    assert_eq!(load().await.0, 500);
    let (_, index) = server.post("/v2/repository/index", &empty).await;
    assert_eq!(index[0]["state"], "UNAVAILABLE");
    assert!(
        index[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot compile linear:1")),
        "{index}"
    );

    std::fs::write(&wasm, good).unwrap();
    assert_eq!(load().await.0, 200);
    assert!((server.linear(&[1.0]).await[0] - 0.4).abs() < 1e-6);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_whose_config_cannot_be_read_is_unavailable_with_the_reason() {
    let repo = edgeserve_e2e::model_repository(&["linear"]);
    let config = repo.join("linear/config.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "instances = \"two\"\n").unwrap();
    let running = edgeserve::app::start(common::settings(&repo))
        .await
        .unwrap();
    let server = common::TestServer::attach(running, repo);
    let says_why = |text: &str| text.contains("invalid config") && text.contains("config.toml");

    // Broken from the start: the index and a request both say why.
    let empty = json!({});
    let (_, index) = server.post("/v2/repository/index", &empty).await;
    assert_eq!(index[0]["state"], "UNAVAILABLE", "{index}");
    assert!(says_why(index[0]["reason"].as_str().unwrap()), "{index}");
    let body =
        json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]});
    let (status, answer) = server.post("/v2/models/linear/infer", &body).await;
    assert_eq!(status, 400, "{answer}");
    let text = error_text(&answer);
    assert!(
        text.contains("model 'linear' is not loaded") && says_why(text),
        "{answer}"
    );

    std::fs::write(&config, good).unwrap();
    let load = || server.post("/v2/repository/models/linear/load", &empty);
    assert_eq!(load().await.0, 200);
    assert!((server.linear(&[1.0]).await[0] - 0.4).abs() < 1e-6);

    // Broken after an unload: the failure replaces "unloaded".
    let unload = server
        .post("/v2/repository/models/linear/unload", &empty)
        .await;
    assert_eq!(unload.0, 200);
    std::fs::write(&config, "instances = \"two\"\n").unwrap();
    let (status, body) = load().await;
    assert_eq!(status, 500, "{body}");
    let (_, index) = server.post("/v2/repository/index", &empty).await;
    assert!(says_why(index[0]["reason"].as_str().unwrap()), "{index}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unversioned_requests_go_to_the_latest_version() {
    let repo = edgeserve_e2e::model_repository(&["linear"]);
    std::fs::create_dir(repo.join("linear/2")).unwrap();
    for file in ["model.wasm", "model.safetensors"] {
        std::fs::copy(
            repo.join("linear/1").join(file),
            repo.join("linear/2").join(file),
        )
        .unwrap();
    }
    let running = edgeserve::app::start(common::settings(&repo))
        .await
        .unwrap();
    let server = common::TestServer::attach(running, repo);
    let body =
        json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]});
    let (status, latest) = server.post("/v2/models/linear/infer", &body).await;
    assert_eq!(
        (status, latest["model_version"].as_str()),
        (200, Some("2")),
        "{latest}"
    );
    let (status, first) = server
        .post("/v2/models/linear/versions/1/infer", &body)
        .await;
    assert_eq!(
        (status, first["model_version"].as_str()),
        (200, Some("1")),
        "{first}"
    );
    let (_, meta) = server.get("/v2/models/linear").await;
    assert_eq!(meta["versions"], json!(["1", "2"]));
    server.stop().await;
}

#[test]
fn compiled_components_are_cached_on_disk() {
    use edgeserve::runtime::{CacheOutcome, Runtime, RuntimeConfig};
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().to_owned();
    let config = RuntimeConfig {
        cache_dir: Some(cache.clone()),
        cache_max_bytes: edgeserve::runtime::DEFAULT_CACHE_MAX_BYTES,
        pooling: false,
        max_instances: 4,
        max_memory: 64 << 20,
    };
    let wasm = std::fs::read(edgeserve_e2e::plugin("linear")).unwrap();
    let first = Runtime::new(&config).unwrap();
    assert_eq!(
        first.compile("linear", &wasm).unwrap().1,
        CacheOutcome::Miss
    );
    drop(first);
    // A restart: a new engine finds the compiled code.
    let second = Runtime::new(&config).unwrap();
    assert_eq!(
        second.compile("linear", &wasm).unwrap().1,
        CacheOutcome::Hit
    );
    let entries = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(entries, 1);
}

#[test]
fn the_compile_cache_keeps_to_its_size_by_dropping_the_least_recently_used() {
    use edgeserve::runtime::{CacheOutcome, Runtime, RuntimeConfig};
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().to_owned();
    let wasm = |name| std::fs::read(edgeserve_e2e::plugin(name)).unwrap();
    let (linear, digits, faulty) = (wasm("linear"), wasm("digits"), wasm("faulty"));
    let config = |cache_max_bytes| RuntimeConfig {
        cache_dir: Some(cache.clone()),
        cache_max_bytes,
        pooling: false,
        max_instances: 4,
        max_memory: 64 << 20,
    };
    let entries = || -> Vec<u64> {
        let mut sizes: Vec<u64> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .collect();
        sizes.sort();
        sizes
    };
    // The entries' sizes, from a cache with room for all three.
    let unbounded = Runtime::new(&config(u64::MAX)).unwrap();
    for wasm in [&linear, &digits, &faulty] {
        unbounded.compile("sizing", wasm).unwrap();
    }
    drop(unbounded);
    let all = entries();
    assert_eq!(all.len(), 3);
    std::fs::remove_dir_all(&cache).unwrap();

    // Room for any two of the three.
    let bounded = Runtime::new(&config(all.iter().sum::<u64>() - 1)).unwrap();
    let outcome = |wasm: &[u8]| bounded.compile("model", wasm).unwrap().1;
    assert_eq!(outcome(&linear), CacheOutcome::Miss);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(outcome(&digits), CacheOutcome::Miss);
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Using linear again makes digits the least recently used.
    assert_eq!(outcome(&linear), CacheOutcome::Hit);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(outcome(&faulty), CacheOutcome::Miss);
    assert_eq!(entries().len(), 2);
    assert!(entries().iter().sum::<u64>() < all.iter().sum::<u64>());
    assert_eq!(outcome(&linear), CacheOutcome::Hit);
    assert_eq!(outcome(&faulty), CacheOutcome::Hit);
    assert_eq!(outcome(&digits), CacheOutcome::Miss);
}

#[tokio::test(flavor = "multi_thread")]
async fn tritonclient_speaks_to_edgeserve() {
    let server = TestServer::start(&["digits"]).await;
    let reference = edgeserve_e2e::test_data("digits_reference.json");
    common::run_python(
        "triton_compat.py",
        &[server.authority().as_ref(), reference.as_os_str()],
        "tritonclient compatibility: OK",
    )
    .await;
    server.stop().await;
}

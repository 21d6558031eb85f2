//! Model bundles: fetched over HTTP from a loopback file server, verified
//! against their digest before unpacking, cached by digest.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use common::{TestServer, error_text};
use edgeserve::bundle::Sha256Hex;
use edgeserve_e2e::model_repository;
use serde_json::json;

/// Serves fixed files at `/{name}` and counts the requests for each.
struct FileServer {
    base: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl FileServer {
    async fn start(files: &[(&str, &[u8])]) -> FileServer {
        let files: HashMap<String, Vec<u8>> = files
            .iter()
            .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
            .collect();
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let state = (Arc::new(files), hits.clone());
        let router = axum::Router::new()
            .route("/{name}", axum::routing::get(serve))
            .with_state(state);
        let base = common::serve_on_loopback(router).await;
        FileServer { base, hits }
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    fn hits(&self, name: &str) -> usize {
        self.hits.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

/// The file server's files and request counts.
type Shared = (
    Arc<HashMap<String, Vec<u8>>>,
    Arc<Mutex<HashMap<String, usize>>>,
);

async fn serve(
    State((files, hits)): State<Shared>,
    UrlPath(name): UrlPath<String>,
) -> Result<Vec<u8>, StatusCode> {
    *hits.lock().unwrap().entry(name.clone()).or_default() += 1;
    files.get(&name).cloned().ok_or(StatusCode::NOT_FOUND)
}

/// A tar whose second entry climbs out of the bundle with `..`.
fn escaping_bundle() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for path in ["linear/config.toml", "linear/../../escape"] {
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // `set_path` refuses `..`; an attacker's archive need not.
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        tar.append(&header, &b"x"[..]).unwrap();
    }
    tar.into_inner().unwrap()
}

fn assert_linear(ys: &[f64]) {
    let expected = [0.4, 0.5, 0.6];
    assert_eq!(ys.len(), 3, "{ys:?}");
    assert!(common::max_abs_diff(ys, &expected) < 1e-6, "{ys:?}");
}

/// Files in `dir` whose names do not start with '.', i.e. not temporary.
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_named_at_start_is_served_and_a_restart_uses_the_cache() {
    let bundle = common::linear_bundle();
    let files = FileServer::start(&[("linear.tar.gz", &bundle)]).await;
    let source = format!(
        "{}#sha256={}",
        files.url("linear.tar.gz"),
        Sha256Hex::of(&bundle)
    );
    let cache = tempfile::tempdir().unwrap();
    for start in ["first", "second"] {
        // A fresh, empty repository each time: only the cache carries over.
        let repo = model_repository(&[]);
        let mut settings = common::settings(&repo);
        settings.bundles.sources = vec![source.parse().unwrap()];
        settings.bundles.cache_dir = cache.path().to_owned();
        let running = edgeserve::app::start(settings).await.unwrap();
        let server = TestServer::attach(running, repo);
        assert_linear(&server.linear(&[1.0, 2.0, 3.0]).await);
        assert_eq!(
            files.hits("linear.tar.gz"),
            1,
            "the {start} start downloaded again instead of using the cache"
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bundle_cache_keeps_to_its_size_by_dropping_the_least_recently_used() {
    use flate2::Compression;
    // Three archives of `linear`, each a cache entry of its own.
    let archives = [
        Compression::none(),
        Compression::fast(),
        Compression::best(),
    ]
    .map(common::linear_bundle_at);
    let names = ["a.tar.gz", "b.tar.gz", "c.tar.gz"];
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .copied()
        .zip(archives.iter().map(|a| &a[..]))
        .collect();
    let files = FileServer::start(&files).await;
    let cache = tempfile::tempdir().unwrap();
    // Starts a server on the bundle `name` alone, checks that it serves it,
    // and says whether the start downloaded it.
    let start = async |name: &str, cache_max_bytes: u64| {
        let index = names.iter().position(|n| *n == name).unwrap();
        let before = files.hits(name);
        let repo = model_repository(&[]);
        let mut settings = common::settings(&repo);
        let source = format!(
            "{}#sha256={}",
            files.url(name),
            Sha256Hex::of(&archives[index])
        );
        settings.bundles.sources = vec![source.parse().unwrap()];
        settings.bundles.cache_dir = cache.path().to_owned();
        settings.bundles.cache_max_bytes = cache_max_bytes;
        let running = edgeserve::app::start(settings).await.unwrap();
        let server = TestServer::attach(running, repo);
        assert_linear(&server.linear(&[1.0, 2.0, 3.0]).await);
        server.stop().await;
        // Apart on the clock, so that the order of use is unambiguous.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        files.hits(name) > before
    };
    assert!(start("a.tar.gz", u64::MAX).await);
    let [entry] = &entries(cache.path())[..] else {
        panic!("one bundle, one entry")
    };
    let unpacked = folder_bytes(&cache.path().join(entry));
    // Room for two of the three.
    let room = 2 * unpacked + unpacked / 2;
    assert!(start("b.tar.gz", room).await);
    assert_eq!(entries(cache.path()).len(), 2);
    // Using a again makes b the least recently used.
    assert!(!start("a.tar.gz", room).await, "a was downloaded again");
    assert!(start("c.tar.gz", room).await);
    assert_eq!(entries(cache.path()).len(), 2);
    assert!(!start("a.tar.gz", room).await, "a was dropped instead of b");
    assert!(!start("c.tar.gz", room).await, "c was dropped instead of b");
    assert!(start("b.tar.gz", room).await, "b stayed in the cache");
}

/// Bytes of the files under `dir`.
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                folder_bytes(&e.path())
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_with_the_wrong_digest_stops_the_start_and_nothing_is_unpacked() {
    let bundle = common::linear_bundle();
    let files = FileServer::start(&[("linear.tar.gz", &bundle)]).await;
    let url = files.url("linear.tar.gz");
    let wrong = "0".repeat(64);
    let actual = Sha256Hex::of(&bundle).to_string();
    let cache = tempfile::tempdir().unwrap();
    let repo = model_repository(&[]);

    let mut settings = common::settings(&repo);
    settings.bundles.sources = vec![format!("{url}#sha256={wrong}").parse().unwrap()];
    settings.bundles.cache_dir = cache.path().to_owned();
    let error = match edgeserve::app::start(settings).await {
        Ok(_) => panic!("a server started on a bundle with the wrong digest"),
        Err(e) => e.to_string(),
    };
    for part in [&url, &wrong, &actual] {
        assert!(error.contains(part.as_str()), "{error} lacks {part}");
    }
    assert_eq!(entries(repo.path()), Vec::<String>::new());
    assert_eq!(entries(cache.path()), Vec::<String>::new());

    // The binary exits non-zero with the same message.
    let output = edgeserve_e2e::edgeserve_command()
        .args([
            "serve",
            "--http-port",
            "0",
            "--device",
            "cpu",
            "--no-compile-cache",
        ])
        .arg("--model-repository")
        .arg(repo.path())
        .arg("--bundle-cache-dir")
        .arg(cache.path())
        .arg("--bundle")
        .arg(format!("{url}#sha256={wrong}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "edgeserve started: {stderr}");
    for part in [&url, &wrong, &actual] {
        assert!(
            stderr.contains(part.as_str()),
            "stderr lacks {part}:\n{stderr}"
        );
    }
    assert_eq!(entries(repo.path()), Vec::<String>::new());
    assert_eq!(entries(cache.path()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_load_request_installs_a_bundle_and_refuses_bad_ones_while_serving_the_rest() {
    let bundle = common::linear_bundle();
    let escaping = escaping_bundle();
    let files = FileServer::start(&[("linear.tar.gz", &bundle), ("escaping.tar", &escaping)]).await;
    let repo = model_repository(&["faulty"]);
    let cache = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&repo);
    settings.bundles.cache_dir = cache.path().join("bundles");
    settings.bundles.allow.hosts = vec!["127.0.0.1".parse().unwrap()];
    let running = edgeserve::app::start(settings).await.unwrap();
    let server = TestServer::attach(running, repo);
    let client = &server;
    let load = move |model: &str, url: String, sha256: String| {
        let path = format!("/v2/repository/models/{model}/load");
        let body = json!({"parameters": {"bundle_url": url, "sha256": sha256}});
        async move { client.post(&path, &body).await }
    };
    let url = files.url("linear.tar.gz");
    let digest = Sha256Hex::of(&bundle).to_string();

    // Wrong digest: refused, naming both digests and the URL.
    let wrong = "f".repeat(64);
    let (status, body) = load("linear", url.clone(), wrong.clone()).await;
    assert_eq!(status, 400, "{body}");
    for part in [&url, &wrong, &digest] {
        assert!(
            error_text(&body).contains(part.as_str()),
            "{body} lacks {part}"
        );
    }
    assert!(!server.repo.join("linear").exists());
    assert_eq!(entries(&cache.path().join("bundles")), Vec::<String>::new());

    // An archive entry climbing out with '..': refused, nothing escapes.
    let (status, body) = load(
        "linear",
        files.url("escaping.tar"),
        Sha256Hex::of(&escaping).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("linear/../../escape"), "{body}");
    assert!(!cache.path().join("escape").exists());
    assert!(!cache.path().join("bundles/escape").exists());
    assert!(!server.repo.join("linear").exists());

    // A bundle of another model than the one named.
    let (status, body) = load("faulty", url.clone(), digest.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("holds model 'linear'"), "{body}");

    // The other model kept serving throughout.
    let (status, body) = server.faulty(0).await;
    assert_eq!(status, 200, "{body}");

    // The right digest: installed, loaded, served.
    let (status, body) = load("linear", url.clone(), digest.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_linear(&server.linear(&[1.0, 2.0, 3.0]).await);
    let (_, index) = server.post("/v2/repository/index", &json!({})).await;
    assert!(
        index
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["name"] == "linear" && row["state"] == "READY"),
        "{index}"
    );
    // Loading the same bundle again uses the cache.
    let before = files.hits("linear.tar.gz");
    let (status, body) = load("linear", url.clone(), digest).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(files.hits("linear.tar.gz"), before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_over_the_size_limit_is_refused() {
    let bundle = common::linear_bundle();
    let files = FileServer::start(&[("linear.tar.gz", &bundle)]).await;
    let repo = model_repository(&[]);
    let cache = tempfile::tempdir().unwrap();
    let mut settings = common::settings(&repo);
    settings.bundles.cache_dir = cache.path().to_owned();
    settings.bundles.max_bytes = 1000;
    settings.bundles.allow.hosts = vec!["127.0.0.1".parse().unwrap()];
    let server = TestServer::attach(edgeserve::app::start(settings).await.unwrap(), repo);
    let (status, body) = server
        .post(
            "/v2/repository/models/linear/load",
            &json!({"parameters": {
                "bundle_url": files.url("linear.tar.gz"),
                "sha256": Sha256Hex::of(&bundle).to_string(),
            }}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        error_text(&body).contains("exceeds the 1000 byte limit"),
        "{body}"
    );
    assert!(!server.repo.join("linear").exists());
    assert_eq!(entries(cache.path()), Vec::<String>::new());
    server.stop().await;
}

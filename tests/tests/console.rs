//! The web console (`/console/`): served from the binary, off with
//! `--no-console`, and driven in a real browser (Debian's chromium through
//! chromedriver, `tests/python/console_browser.py`) against live servers:
//! every view checked against the API it shows.
//!
//! Needs chromium, chromium-driver and selenium (`scripts/test.sh` installs
//! them) and minilm's weights (`scripts/fetch-minilm.sh`). Screenshots go to
//! `$EDGESERVE_SCREENSHOTS`, or `edgeserve-console-screenshots` in the
//! temporary folder.

mod common;

use std::ffi::OsStr;

use common::{TestServer, settings};
use edgeserve_e2e::model_repository;
use reqwest::redirect::Policy;

const KEY: &str = "console-test-key";

/// A repository of every example model plus `broken`, whose component is
/// not a component, so the console has a load error to show.
async fn server(
    models: &[&str],
    configure: impl FnOnce(&mut edgeserve::app::Settings),
) -> TestServer {
    let repo = model_repository(models);
    let broken = repo.join("broken/1");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("model.wasm"), b"not a component").unwrap();
    let mut settings = settings(&repo);
    configure(&mut settings);
    let running = edgeserve::app::start(settings)
        .await
        .expect("server starts");
    TestServer::attach(running, repo)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_is_served_and_can_be_turned_off() {
    let on = server(&["linear"], |_| {}).await;
    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    for path in ["/", "/console"] {
        let response = client
            .get(format!("{}{path}", on.base))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_redirection(),
            "{path}: {}",
            response.status()
        );
        assert_eq!(response.headers()["location"], "/console/", "{path}");
    }
    for (path, content_type, holds) in [
        ("/console/", "text/html", "edgeserve console"),
        ("/console/app.js", "text/javascript", "hashchange"),
        ("/console/vendor/uPlot.min.css", "text/css", ".uplot"),
    ] {
        let response = client
            .get(format!("{}{path}", on.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let served = response.headers()["content-type"].to_str().unwrap();
        assert!(served.starts_with(content_type), "{path}: {served}");
        assert!(response.text().await.unwrap().contains(holds), "{path}");
    }
    let (status, body) = on.get("/console/nope.js").await;
    assert_eq!(status, 404);
    assert!(common::error_text(&body).contains("nope.js"), "{body}");
    on.stop().await;

    let off = server(&["linear"], |s| s.console = false).await;
    for path in ["/", "/console/", "/console/app.js"] {
        let (status, _) = off.get(path).await;
        assert_eq!(status, 404, "{path} with the console off");
    }
    let (status, _) = off.get("/v2/health/ready").await;
    assert_eq!(status, 200);
    off.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_declares_its_task_in_metadata() {
    let server = server(&["digits", "linear"], |_| {}).await;
    let (_, digits) = server.get("/v2/models/digits").await;
    assert_eq!(digits["parameters"]["task"], "digits", "{digits}");
    let (_, linear) = server.get("/v2/models/linear").await;
    assert!(linear["parameters"]["task"].is_null(), "{linear}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_works_in_a_real_browser() {
    let main = server(
        &["linear", "digits", "minilm", "recommender", "gpt2"],
        |_| {},
    )
    .await;
    let locked = server(&["linear"], |s| {
        s.access.api_keys = vec![KEY.parse().expect("a valid key")];
    })
    .await;
    let shots = std::env::var_os("EDGESERVE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("edgeserve-console-screenshots"));
    let printed = common::run_python(
        "console_browser.py",
        &[
            OsStr::new(&main.base),
            OsStr::new(&locked.base),
            OsStr::new(KEY),
            shots.as_os_str(),
        ],
        "console ok",
    )
    .await;
    eprintln!("{printed}screenshots in {}", shots.display());
    main.stop().await;
    locked.stop().await;
}

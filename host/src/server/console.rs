//! The web console: a single-page app under `/console/`, embedded in the
//! binary (`host/console/`), that talks to this node's own API only.
//!
//! Its page and assets are public; the API calls it makes carry the key the
//! user types in when the API asks for one.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::error::ApiError;

macro_rules! asset {
    ($name:literal, $type:expr) => {
        (
            $name,
            $type,
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/console/", $name)),
        )
    };
}
/// `(file name, content type, bytes)` of every asset, compiled in.
const ASSETS: &[(&str, &str, &[u8])] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("prom.js", JS),
    asset!("models.js", JS),
    asset!("model.js", JS),
    asset!("widgets.js", JS),
    asset!("digits.js", JS),
    asset!("snippets.js", JS),
    asset!("metrics.js", JS),
    asset!("vendor/uPlot.iife.min.js", JS),
    asset!("vendor/uPlot.min.css", "text/css; charset=utf-8"),
];

const JS: &str = "text/javascript; charset=utf-8";

/// The console's routes: `/` and `/console` redirect to `/console/`, which
/// serves the page; `/console/{file}` its assets.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(|| async { serve("index.html") }))
        .route(
            "/console/{*file}",
            get(|Path(file): Path<String>| async move { serve(&file) }),
        )
}

fn serve(file: &str) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // Assets change with the binary; revalidating is cheap on loopback
                // and never shows a page from an older build.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, format!("no console file {file:?}"))
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_and_the_page_references_only_embedded_files() {
        let page = std::str::from_utf8(ASSETS[0].2).unwrap();
        for (name, _, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{name} is empty");
        }
        for reference in page
            .split(['"', '\''])
            .filter(|s| s.ends_with(".js") || s.ends_with(".css"))
        {
            assert!(
                ASSETS.iter().any(|(name, _, _)| *name == reference),
                "index.html loads {reference}, which is not embedded"
            );
        }
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "the page loads nothing from elsewhere"
        );
    }

    #[test]
    fn every_module_imports_only_embedded_modules() {
        for (name, _, bytes) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            let source = std::str::from_utf8(bytes).unwrap();
            for import in source.split("from \"./").skip(1) {
                let target = &import[..import.find('"').unwrap()];
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == target),
                    "{name} imports {target}, which is not embedded"
                );
            }
        }
    }
}

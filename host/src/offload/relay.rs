//! Relaying an upstream answer as it arrives: a stream of generated text
//! (Server-Sent Events) reaches the client chunk by chunk, not once the
//! upstream has finished.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Method, Response, header};
use bytes::Bytes;

use super::{CARRIED, OffloadError, SERVED_BY, Upstream};

/// Response headers a relayed answer keeps: besides the carried ones, the
/// stream's cache policy (SSE answers are `no-cache`).
const RELAYED: [&str; 2] = ["retry-after", "cache-control"];

impl Upstream {
    /// Like [`Upstream::forward`], but answers once the upstream's head
    /// has arrived, with its body relayed as it streams. The upstream
    /// timeout bounds the wait for the head and for each chunk after it,
    /// not the whole stream.
    pub async fn relay(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response<Body>, OffloadError> {
        let upstream = self
            .request(&self.streaming, method, path_and_query, headers)
            .body(body)
            .send()
            .await
            .map_err(|e| self.failure(e))?;
        let mut response = Response::builder().status(upstream.status());
        for &name in CARRIED.iter().chain(&RELAYED) {
            if let Some(value) = upstream.headers().get(name) {
                response = response.header(HeaderName::from_static(name), value.clone());
            }
        }
        let response = response
            .header(SERVED_BY, header::HeaderValue::from_static("upstream"))
            .body(Body::from_stream(upstream.bytes_stream()))
            .expect("status and headers come from a valid response");
        Ok(response)
    }

    /// What a failed exchange with the upstream means.
    pub(super) fn failure(&self, source: reqwest::Error) -> OffloadError {
        if source.is_timeout() {
            OffloadError::Timeout {
                url: self.url.clone(),
                timeout_ms: self.timeout.as_millis(),
            }
        } else if source.is_connect() {
            OffloadError::Connect {
                url: self.url.clone(),
                source,
            }
        } else {
            OffloadError::Failed {
                url: self.url.clone(),
                source,
            }
        }
    }
}

//! Edge→datacenter offload: an OIP client for the upstream server that takes
//! the requests this node cannot serve (models it lacks, or, by policy,
//! requests that found no free instance within their queue deadline).

use std::path::PathBuf;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, Method, Response, StatusCode, header};
use bytes::Bytes;

use crate::protocol::HEADER_LENGTH;

mod relay;

/// Response header set on every answer that came from the upstream.
pub const SERVED_BY: &str = "x-edgeserve-served-by";

/// Request header marking a forwarded request: its receiver serves it
/// itself or fails, and never forwards it again, so servers that name each
/// other as upstream cannot bounce a request forever.
pub const FORWARDED: &str = "x-edgeserve-forwarded";

/// Request and response headers carried across: the body's encoding (JSON,
/// or the binary tensor extension's JSON length), the client's request id,
/// and its key: the upstream is the deployer's own server, which takes the
/// same keys (one Secret in Kubernetes).
const CARRIED: [&str; 5] = [
    "content-type",
    HEADER_LENGTH,
    "accept",
    "x-request-id",
    "authorization",
];

/// Where to offload and when.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// Base URL of the upstream OIP server, e.g. `http://dc:8000`.
    pub url: String,
    /// Longest wait for the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest wait for the whole forwarded exchange; for a relayed stream,
    /// the longest wait for each piece of it (the head, then every chunk),
    /// so a long generation is not cut while it keeps arriving.
    pub timeout: Duration,
    /// Forward requests that found no free instance within their queue
    /// deadline (models may override this in their config).
    pub offload_on_queue_timeout: bool,
    /// PEM file of the CA (or CAs) that signed an `https://` upstream's
    /// certificate; when set, only these are trusted, not the built-in roots.
    pub ca: Option<PathBuf>,
}

/// Why a forwarded request got no answer from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    /// The HTTP client could not be built.
    #[error("cannot create the upstream HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The `--upstream-ca` file is unreadable or holds no certificate.
    #[error("cannot use the upstream CA: {0}")]
    Ca(#[source] crate::tls::TlsError),
    /// The upstream URL is unusable.
    #[error("invalid upstream URL '{url}': it must start with http:// or https://")]
    Url {
        /// The URL as given.
        url: String,
    },
    /// No connection: refused, unreachable, or the TLS handshake failed
    /// (the message ends with the innermost cause, e.g. the certificate's).
    #[error("upstream {url} is unreachable: {}", causes(source))]
    Connect {
        /// The upstream base URL.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// No (complete) answer within the timeout.
    #[error("upstream {url} did not answer within {timeout_ms} ms")]
    Timeout {
        /// The upstream base URL.
        url: String,
        /// The limit that ran out.
        timeout_ms: u128,
    },
    /// The exchange broke off after connecting.
    #[error("upstream {url} failed: {source}")]
    Failed {
        /// The upstream base URL.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
}

impl OffloadError {
    /// The status to answer the client with: 504 for a timeout, 502 for
    /// every other failure of the upstream.
    pub fn status(&self) -> StatusCode {
        match self {
            OffloadError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            OffloadError::Client(_) | OffloadError::Url { .. } | OffloadError::Ca(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// A client of the upstream server.
pub struct Upstream {
    url: String,
    timeout: Duration,
    offload_on_queue_timeout: bool,
    /// For answers forwarded whole: the timeout bounds the exchange.
    client: reqwest::Client,
    /// For answers relayed as they stream: the timeout bounds each read.
    streaming: reqwest::Client,
}

impl Upstream {
    /// A client for `settings.url`; connects lazily.
    pub fn new(settings: &UpstreamSettings) -> Result<Upstream, OffloadError> {
        let url = settings.url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(OffloadError::Url { url });
        }
        let tls = crate::tls::client_config(settings.ca.as_deref()).map_err(OffloadError::Ca)?;
        let client = |bound: fn(reqwest::ClientBuilder, Duration) -> reqwest::ClientBuilder| {
            let builder = reqwest::Client::builder().use_preconfigured_tls(tls.clone());
            bound(builder, settings.timeout)
                .connect_timeout(settings.connect_timeout)
                // An OIP server answers directly; a redirect would be a
                // misconfiguration, not something to follow silently.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(OffloadError::Client)
        };
        Ok(Upstream {
            url,
            timeout: settings.timeout,
            offload_on_queue_timeout: settings.offload_on_queue_timeout,
            client: client(reqwest::ClientBuilder::timeout)?,
            streaming: client(reqwest::ClientBuilder::read_timeout)?,
        })
    }

    /// The upstream base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether a request that found no free instance is forwarded, given
    /// the model's own setting (which wins) and the server's.
    pub fn offloads_on_queue_timeout(&self, model_setting: Option<bool>) -> bool {
        model_setting.unwrap_or(self.offload_on_queue_timeout)
    }

    /// A request for `method path_and_query` on the upstream, marked as
    /// forwarded and carrying the client's [`CARRIED`] headers.
    fn request(
        &self,
        client: &reqwest::Client,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> reqwest::RequestBuilder {
        let mut request = client
            .request(method, format!("{}{path_and_query}", self.url))
            .header(FORWARDED, "1");
        for name in CARRIED {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value);
            }
        }
        request
    }

    /// Sends `method path_and_query` with `body` and the carried headers to
    /// the upstream; returns its answer (whatever the status) with the
    /// carried headers and [`SERVED_BY`].
    pub async fn forward(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response<Bytes>, OffloadError> {
        let request = self.request(&self.client, method, path_and_query, headers);
        let failed = |source| self.failure(source);
        let upstream = request.body(body).send().await.map_err(failed)?;
        let status = upstream.status();
        let carried: Vec<_> = CARRIED
            .iter()
            .chain(&["retry-after"])
            .filter_map(|&name| Some((name, upstream.headers().get(name)?.clone())))
            .collect();
        let body = upstream.bytes().await.map_err(failed)?;
        let mut response = Response::new(body);
        *response.status_mut() = status;
        for (name, value) in carried {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
        response.headers_mut().insert(
            HeaderName::from_static(SERVED_BY),
            header::HeaderValue::from_static("upstream"),
        );
        Ok(response)
    }
}

/// `error` and its sources, joined: reqwest's own message names only the
/// URL, the reason (a refused connection, an unknown certificate issuer) is
/// further down.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

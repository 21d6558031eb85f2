//! Access control: which requests need which key.
//!
//! One layer in front of every route sorts a request by its path into a
//! [`Class`] and checks its `Authorization: Bearer <key>` against the
//! [`AccessPolicy`]. Sorting by path rather than by route means a route
//! added later (a new protocol, a console page) is covered without touching
//! this module: anything not named here is an inference route.
//!
//! Keys are kept only as sha256 digests and compared in constant time, so
//! neither a log line nor the time an answer takes tells anything about
//! them.

use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use futures::future::{BoxFuture, Either};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::error::ApiError;

/// A key given on the command line, in the environment or in a file. Its
/// `Debug` form never shows it, so settings can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    fn digest(&self) -> KeyDigest {
        KeyDigest::of(self.0.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Why a key was refused before the server started.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The key is empty or holds whitespace or control characters, which
    /// an `Authorization` header cannot carry.
    #[error("{what} must be non-empty printable ASCII without spaces")]
    BadKey {
        /// Which key (never the key itself).
        what: String,
    },
    /// The key file could not be read.
    #[error("cannot read the API key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file holds no key: almost certainly a mistake that would
    /// leave the server open.
    #[error("the API key file {path} holds no key")]
    EmptyKeyFile {
        /// The file.
        path: PathBuf,
    },
    /// The admin key is also an API key, so API clients could manage.
    #[error("the admin key must differ from every API key")]
    AdminIsApiKey,
}

impl FromStr for Secret {
    type Err = AccessError;

    fn from_str(key: &str) -> Result<Secret, AccessError> {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AccessError::BadKey {
                what: "a key".into(),
            });
        }
        Ok(Secret(key.to_owned()))
    }
}

/// Who may call what, as configured.
#[derive(Clone, Debug, Default)]
pub struct AccessSettings {
    /// Keys that may call inference and metadata routes.
    pub api_keys: Vec<Secret>,
    /// A file of more API keys, one a line (`#` starts a comment).
    pub api_key_file: Option<PathBuf>,
    /// The key management routes need.
    pub admin_key: Option<Secret>,
    /// `/metrics` needs an API key too.
    pub protect_metrics: bool,
    /// Management routes stay open without an admin key on a non-loopback
    /// address.
    pub insecure_management: bool,
}

/// The rule a request falls under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Health probes, metrics (by default) and the console's static page:
    /// no key.
    Open,
    /// Inference and metadata: an API key when any is configured.
    Inference,
    /// Loading, unloading and installing models: the admin key.
    Management,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// No `Authorization` header.
    #[error("this route needs a key: send 'Authorization: Bearer <key>'")]
    MissingKey,
    /// An `Authorization` header of another scheme than Bearer.
    #[error("the Authorization header must be 'Bearer <key>'")]
    NotBearer,
    /// A key this server does not know.
    #[error("the key is not valid for this server")]
    WrongKey,
    /// An API key on a management route.
    #[error("an API key cannot call management routes; they need the admin key (--admin-key)")]
    NeedsAdmin,
    /// A management route on a non-loopback address with no admin key.
    #[error(
        "management routes are disabled: the server listens on {listen}, a non-loopback address, and has no --admin-key (EDGESERVE_ADMIN_KEY); set one to enable them, or pass --insecure-management to allow them without a key"
    )]
    ManagementDisabled {
        /// The address the server listens on.
        listen: IpAddr,
    },
}

impl Denied {
    /// 401 when a (right) key would help, 403 when no key of the caller's
    /// kind ever will.
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::MissingKey | Denied::NotBearer | Denied::WrongKey => StatusCode::UNAUTHORIZED,
            Denied::NeedsAdmin | Denied::ManagementDisabled { .. } => StatusCode::FORBIDDEN,
        }
    }
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let challenge = match self {
            Denied::MissingKey => Some(r#"Bearer realm="edgeserve""#),
            Denied::NotBearer | Denied::WrongKey => {
                Some(r#"Bearer realm="edgeserve", error="invalid_token""#)
            }
            Denied::NeedsAdmin | Denied::ManagementDisabled { .. } => None,
        };
        let mut response = ApiError::new(self.status(), self.to_string()).into_response();
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// A key's sha256: what is kept and compared, never the key.
#[derive(Clone, Copy)]
struct KeyDigest([u8; 32]);

impl KeyDigest {
    fn of(key: &[u8]) -> KeyDigest {
        KeyDigest(Sha256::digest(key).into())
    }

    fn matches(&self, other: &KeyDigest) -> Choice {
        self.0.ct_eq(&other.0)
    }
}

/// What a presented key turned out to be.
enum Holder {
    Admin,
    Api,
    Unknown,
}

/// The checks of a running server.
pub struct AccessPolicy {
    api_keys: Vec<KeyDigest>,
    admin_key: Option<KeyDigest>,
    protect_metrics: bool,
    /// Management without an admin key: loopback, or explicitly insecure.
    management_without_admin: bool,
    listen: IpAddr,
}

impl AccessPolicy {
    /// The policy of `settings` for a server listening on `listen` (reads
    /// the key file).
    pub fn new(settings: &AccessSettings, listen: IpAddr) -> Result<AccessPolicy, AccessError> {
        let mut api_keys: Vec<KeyDigest> = settings.api_keys.iter().map(Secret::digest).collect();
        if let Some(path) = &settings.api_key_file {
            let text = std::fs::read_to_string(path).map_err(|source| AccessError::KeyFile {
                path: path.clone(),
                source,
            })?;
            let before = api_keys.len();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let key: Secret = line.parse().map_err(|_| AccessError::BadKey {
                    what: format!("the key on line {} of {}", n + 1, path.display()),
                })?;
                api_keys.push(key.digest());
            }
            if api_keys.len() == before {
                return Err(AccessError::EmptyKeyFile { path: path.clone() });
            }
        }
        let admin_key = settings.admin_key.as_ref().map(Secret::digest);
        if let Some(admin) = &admin_key
            && bool::from(any_matches(&api_keys, admin))
        {
            return Err(AccessError::AdminIsApiKey);
        }
        Ok(AccessPolicy {
            api_keys,
            admin_key,
            protect_metrics: settings.protect_metrics,
            management_without_admin: listen.is_loopback() || settings.insecure_management,
            listen,
        })
    }

    /// Whether any key is configured (for the startup log).
    pub fn has_keys(&self) -> bool {
        !self.api_keys.is_empty() || self.admin_key.is_some()
    }

    /// The rule for a request to `path` (as sent, percent-encoded or not).
    pub fn classify(&self, path: &str) -> Class {
        let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        let segments: Vec<&str> = decoded.split('/').filter(|s| !s.is_empty()).collect();
        // No client sends dot segments; routing would not normalise them, so
        // a path with any gets the strictest rule rather than a guess.
        if segments.iter().any(|s| *s == "." || *s == "..") {
            return Class::Management;
        }
        match segments.as_slice() {
            [] | ["console", ..] => Class::Open,
            ["v2", "health", _] => Class::Open,
            ["metrics"] if !self.protect_metrics => Class::Open,
            ["v2", "repository", "index"] => Class::Inference,
            ["v2", "repository", ..] | ["admin", ..] => Class::Management,
            // gRPC: health probes are open (Kubernetes' gRPC probe sends no
            // key), the inference service has the REST rules by method.
            ["grpc.health.v1.Health", _] => Class::Open,
            ["inference.GRPCInferenceService", method] => match *method {
                "ServerLive" | "ServerReady" => Class::Open,
                "RepositoryModelLoad" | "RepositoryModelUnload" => Class::Management,
                _ => Class::Inference,
            },
            _ => Class::Inference,
        }
    }

    /// Checks `request`: its path's class against its `Authorization`
    /// header. What a front end's access layer calls, whatever it answers.
    pub fn check_request<B>(&self, request: &axum::http::Request<B>) -> Result<(), Denied> {
        if self.refuses_nothing() {
            return Ok(());
        }
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        self.check(self.classify(request.uri().path()), authorization)
    }

    /// Whether every request passes, whatever its path and header: no key
    /// is set and management is open (loopback, or insecure by choice), so
    /// the path need not be classified.
    fn refuses_nothing(&self) -> bool {
        self.api_keys.is_empty() && self.admin_key.is_none() && self.management_without_admin
    }

    /// Checks a request of `class` carrying `authorization` (the raw header
    /// or gRPC metadata value, if any).
    pub fn check(&self, class: Class, authorization: Option<&[u8]>) -> Result<(), Denied> {
        let needs_api_key = !self.api_keys.is_empty();
        match class {
            Class::Open => Ok(()),
            Class::Inference if !needs_api_key => Ok(()),
            Class::Inference => match self.holder(authorization)? {
                Holder::Admin | Holder::Api => Ok(()),
                Holder::Unknown => Err(Denied::WrongKey),
            },
            Class::Management if self.admin_key.is_some() => match self.holder(authorization)? {
                Holder::Admin => Ok(()),
                Holder::Api => Err(Denied::NeedsAdmin),
                Holder::Unknown => Err(Denied::WrongKey),
            },
            Class::Management if !self.management_without_admin => {
                Err(Denied::ManagementDisabled {
                    listen: self.listen,
                })
            }
            // No admin key, loopback (or insecure by choice): management
            // asks what inference asks.
            Class::Management => self.check(Class::Inference, authorization),
        }
    }

    /// Who holds the key in `authorization`. Every configured key is
    /// compared, whatever matched, so timing tells nothing.
    fn holder(&self, authorization: Option<&[u8]>) -> Result<Holder, Denied> {
        let presented = KeyDigest::of(bearer_token(authorization.ok_or(Denied::MissingKey)?)?);
        let admin = self
            .admin_key
            .as_ref()
            .map_or(Choice::from(0), |k| k.matches(&presented));
        let api = any_matches(&self.api_keys, &presented);
        Ok(if bool::from(admin) {
            Holder::Admin
        } else if bool::from(api) {
            Holder::Api
        } else {
            Holder::Unknown
        })
    }
}

fn any_matches(keys: &[KeyDigest], presented: &KeyDigest) -> Choice {
    keys.iter()
        .fold(Choice::from(0), |found, key| found | key.matches(presented))
}

/// The key of a `Bearer <key>` header value (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Result<&[u8], Denied> {
    let value = value.trim_ascii();
    match value.split_at_checked(7) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => Ok(token.trim_ascii()),
        _ => Err(Denied::NotBearer),
    }
}

/// How a protocol writes a refusal: REST's 401/403, gRPC's status.
pub type RenderDenied = fn(Denied) -> Response;

/// A router behind the access checks: the service a listener serves. It
/// checks a request, then hands it to the router on the same call, so an
/// allowed request costs one path sort and no extra routing, boxing or
/// cloning of the router's stack (which a router nested as another's
/// fallback behind `axum::middleware::from_fn` costs on every request).
#[derive(Clone)]
pub struct Protected {
    router: Router,
    policy: Arc<AccessPolicy>,
    render: RenderDenied,
}

impl tower::Service<Request> for Protected {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<RouteFuture<Infallible>, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.policy.check_request(&request) {
            Ok(()) => Either::Left(self.router.call(request)),
            Err(denied) => {
                let render = self.render;
                Either::Right(Box::pin(async move {
                    tracing::debug!(path = request.uri().path(), "refused: {denied}");
                    drain(request).await;
                    Ok(render(denied))
                }))
            }
        }
    }
}

/// Request bodies up to this size are read before a refusal is sent (Go's
/// net/http server reads as much of a body its handler left unread).
const DRAIN_LIMIT: usize = 256 << 10;

/// Reads and drops a small body the refusal does not use. Over HTTP/2, an
/// answer sent while the client is still sending ends the stream with
/// RST_STREAM(NO_ERROR): RFC 9113 allows it, but curl (exit 92) and other
/// clients take it as a failure and lose the answer. Bodies of no declared
/// length (gRPC streams) or larger ones are not waited for.
async fn drain(request: Request) {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > 0 && length <= DRAIN_LIMIT) {
        let _ = axum::body::to_bytes(request.into_body(), DRAIN_LIMIT).await;
    }
}

/// `router` behind the access checks of `policy`, covering every route
/// and the fallback.
pub fn protect(router: Router, policy: Arc<AccessPolicy>) -> Protected {
    protect_with(router, policy, IntoResponse::into_response)
}

/// [`protect`] for a protocol that writes its refusals as `render` does.
pub fn protect_with(router: Router, policy: Arc<AccessPolicy>, render: RenderDenied) -> Protected {
    Protected {
        router,
        policy,
        render,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(api: &[&str], admin: Option<&str>, listen: &str) -> AccessPolicy {
        let settings = AccessSettings {
            api_keys: api.iter().map(|k| k.parse().unwrap()).collect(),
            admin_key: admin.map(|k| k.parse().unwrap()),
            ..AccessSettings::default()
        };
        AccessPolicy::new(&settings, listen.parse().unwrap()).unwrap()
    }

    fn status(policy: &AccessPolicy, path: &str, header: Option<&str>) -> u16 {
        match policy.check(policy.classify(path), header.map(str::as_bytes)) {
            Ok(()) => 200,
            Err(denied) => denied.status().as_u16(),
        }
    }

    #[test]
    fn paths_sort_into_open_inference_and_management() {
        let p = policy(&[], None, "127.0.0.1");
        for (path, class) in [
            ("/", Class::Open),
            ("/console", Class::Open),
            ("/console/app.js", Class::Open),
            ("/v2/health/live", Class::Open),
            ("/v2/health/ready", Class::Open),
            ("/metrics", Class::Open),
            ("/v2", Class::Inference),
            ("/v2/models/linear/infer", Class::Inference),
            ("/v1/chat/completions", Class::Inference),
            ("/generate", Class::Inference),
            ("/v2/repository/index", Class::Inference),
            ("/v2/repository/models/linear/load", Class::Management),
            ("//v2/repository/models/linear/unload", Class::Management),
            ("/v2/%72epository/models/linear/unload", Class::Management),
            ("/console/../v2/repository/models/x/load", Class::Management),
            ("/admin/anything", Class::Management),
            (
                "/inference.GRPCInferenceService/RepositoryModelLoad",
                Class::Management,
            ),
            (
                "/inference.GRPCInferenceService/ModelInfer",
                Class::Inference,
            ),
            ("/inference.GRPCInferenceService/ServerLive", Class::Open),
            ("/grpc.health.v1.Health/Check", Class::Open),
        ] {
            assert_eq!(p.classify(path), class, "{path}");
        }
        let settings = AccessSettings {
            protect_metrics: true,
            ..AccessSettings::default()
        };
        let protected = AccessPolicy::new(&settings, "127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(protected.classify("/metrics"), Class::Inference);
    }

    #[test]
    fn api_and_admin_keys_each_open_their_routes() {
        let p = policy(&["k1", "k2"], Some("root"), "0.0.0.0");
        let infer = "/v2/models/m/infer";
        let load = "/v2/repository/models/m/load";
        assert_eq!(status(&p, "/v2/health/ready", None), 200);
        assert_eq!(status(&p, infer, None), 401);
        assert_eq!(status(&p, infer, Some("Bearer nope")), 401);
        assert_eq!(status(&p, infer, Some("Basic azE=")), 401);
        assert_eq!(status(&p, infer, Some("Bearer k2")), 200);
        assert_eq!(status(&p, infer, Some("bearer  k1 ")), 200);
        assert_eq!(status(&p, infer, Some("Bearer root")), 200);
        assert_eq!(status(&p, load, None), 401);
        assert_eq!(status(&p, load, Some("Bearer k1")), 403);
        assert_eq!(status(&p, load, Some("Bearer root")), 200);
        assert_eq!(status(&p, load, Some("Bearer k1x")), 401);
    }

    #[test]
    fn management_needs_an_admin_key_off_loopback_unless_insecure() {
        let open = policy(&[], None, "127.0.0.1");
        assert_eq!(status(&open, "/v2/repository/models/m/unload", None), 200);
        let exposed = policy(&[], None, "0.0.0.0");
        assert_eq!(status(&exposed, "/v2/models/m/infer", None), 200);
        let denied = exposed
            .check(Class::Management, None)
            .unwrap_err()
            .to_string();
        assert!(denied.contains("--admin-key"), "{denied}");
        assert!(denied.contains("0.0.0.0"), "{denied}");
        let settings = AccessSettings {
            insecure_management: true,
            ..AccessSettings::default()
        };
        let insecure = AccessPolicy::new(&settings, "::".parse().unwrap()).unwrap();
        assert!(insecure.check(Class::Management, None).is_ok());
        // Keys but no admin key, on loopback: management asks for an API key.
        let keyed = policy(&["k"], None, "::1");
        assert_eq!(status(&keyed, "/v2/repository/models/m/load", None), 401);
        assert_eq!(
            status(&keyed, "/v2/repository/models/m/load", Some("Bearer k")),
            200
        );
    }

    #[test]
    fn keys_come_from_a_file_and_never_show_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# team a\nfile-key-1\n\n  file-key-2  \n").unwrap();
        let settings = AccessSettings {
            api_keys: vec!["flag-key".parse().unwrap()],
            api_key_file: Some(file.clone()),
            admin_key: Some("admin-secret".parse().unwrap()),
            ..AccessSettings::default()
        };
        let debug = format!("{settings:?}");
        for secret in ["flag-key", "admin-secret"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        let p = AccessPolicy::new(&settings, "0.0.0.0".parse().unwrap()).unwrap();
        for key in ["flag-key", "file-key-1", "file-key-2"] {
            let header = format!("Bearer {key}");
            assert!(p.check(Class::Inference, Some(header.as_bytes())).is_ok());
        }
        std::fs::write(&file, "# nothing\n").unwrap();
        let err = AccessPolicy::new(&settings, "0.0.0.0".parse().unwrap())
            .err()
            .unwrap();
        assert!(matches!(err, AccessError::EmptyKeyFile { .. }), "{err}");
        assert!("two words".parse::<Secret>().is_err());
        assert!("".parse::<Secret>().is_err());
        let same = AccessSettings {
            api_keys: vec!["k".parse().unwrap()],
            admin_key: Some("k".parse().unwrap()),
            ..AccessSettings::default()
        };
        assert!(matches!(
            AccessPolicy::new(&same, "::1".parse().unwrap()),
            Err(AccessError::AdminIsApiKey)
        ));
    }
}

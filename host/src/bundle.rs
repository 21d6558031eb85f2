//! Model bundles: one model's repository folder packed as a tar archive
//! (optionally gzipped), fetched over HTTP(S), verified against a sha256
//! digest and installed into the model repository.
//!
//! ```text
//! <name>/config.toml                  optional serving settings
//! <name>/<warm-up request>            optional, as the config's `warmup` names it
//! <name>/<version>/model.wasm         the handler component
//! <name>/<version>/model.safetensors  optional weights
//! <name>/<version>/<asset>            files the handler may read
//! ```
//! A bundle is named by `<url>#sha256=<hex>`. The digest covers the bytes as
//! downloaded and is checked before anything is unpacked. Unpacked bundles
//! are cached under their digest, so a restart does not download again.

mod policy;
pub(crate) mod unpack;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub use policy::{
    BadRule, FetchAllowList, GuardedResolver, HostRule, Refusal, UrlPrefix, forbidden,
};
use unpack::{place, unpack};

use crate::disk_cache;

/// File written into an installed model folder, holding the bundle's
/// digest: marks the folder as the bundle's to replace.
pub const MARKER_FILE: &str = ".bundle-sha256";

/// Why a bundle could not be fetched or installed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle reference is malformed.
    #[error("invalid bundle '{spec}': {message} (expected <http(s) url>#sha256=<64 hex digits>)")]
    Spec {
        /// The reference as given.
        spec: String,
        /// What is wrong.
        message: String,
    },
    /// A load request named a bundle URL (or was redirected to one) that
    /// the allowlist does not allow; nothing was fetched from it.
    #[error("cannot fetch bundle {url}: {refusal}")]
    NotAllowed {
        /// The URL the request named.
        url: String,
        /// Why it is refused.
        refusal: Refusal,
    },
    /// The HTTP client could not be built.
    #[error("cannot create the bundle HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The HTTP client's TLS could not be set up.
    #[error("cannot set up TLS for bundle downloads: {0}")]
    Tls(#[source] crate::tls::TlsError),
    /// The download failed (connection, TLS, reset…).
    #[error("cannot download bundle {url}: {source}")]
    Download {
        /// The bundle URL.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("cannot download bundle {url}: the server answered {status}")]
    Status {
        /// The bundle URL.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
    },
    /// The bundle (downloaded or unpacked) exceeds the size limit.
    #[error("bundle {url} exceeds the {limit} byte limit (--max-bundle-bytes)")]
    TooLarge {
        /// The bundle URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The downloaded bytes do not have the expected digest.
    #[error("bundle {url} has sha256 {actual}, expected {expected}; refusing to unpack it")]
    DigestMismatch {
        /// The bundle URL.
        url: String,
        /// The digest the reference names.
        expected: String,
        /// The digest of what was downloaded.
        actual: String,
    },
    /// The archive is not a readable tar (or tar.gz) of one model folder.
    #[error("bundle {url} is not a valid model bundle: {message}")]
    Archive {
        /// The bundle URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// An archive entry would land outside the bundle's folder, or is a link.
    #[error("bundle {url} holds an unsafe entry '{entry}': {message}")]
    UnsafeEntry {
        /// The bundle URL.
        url: String,
        /// The entry's path as stored in the archive.
        entry: String,
        /// Why it is refused.
        message: String,
    },
    /// The bundle holds another model than the one asked for.
    #[error("bundle {url} holds model '{found}', not '{expected}'")]
    WrongModel {
        /// The bundle URL.
        url: String,
        /// The model asked for.
        expected: String,
        /// The model folder in the bundle.
        found: String,
    },
    /// The repository already has a folder of that name that no bundle
    /// installed; it is left alone.
    #[error(
        "{path} exists and was not installed from a bundle; remove it to install model '{name}' from a bundle"
    )]
    Occupied {
        /// The model.
        name: String,
        /// The folder in the repository.
        path: PathBuf,
    },
    /// A local file operation failed.
    #[error("bundle cache: cannot write {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A lowercase hex sha256 digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    /// Parses 64 hex digits (either case).
    pub fn parse(hex: &str) -> Option<Sha256Hex> {
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Sha256Hex(hex.to_ascii_lowercase()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256Hex {
        Sha256Hex::finish(Sha256::new_with_prefix(bytes))
    }

    /// The digest of what `hasher` has taken in.
    fn finish(hasher: Sha256) -> Sha256Hex {
        Sha256Hex(format!("{:x}", hasher.finalize()))
    }

    /// The 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a bundle is and what its bytes must hash to: `<url>#sha256=<hex>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleSource {
    /// The http:// or https:// URL, without the fragment.
    pub url: String,
    /// The expected digest of the downloaded bytes.
    pub sha256: Sha256Hex,
}

impl BundleSource {
    /// A source from a URL and a separate digest.
    pub fn new(url: &str, sha256: &str) -> Result<BundleSource, BundleError> {
        let spec = || format!("{url}#sha256={sha256}");
        let bad = |message: &str| BundleError::Spec {
            spec: spec(),
            message: message.into(),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad("the URL must start with http:// or https://"));
        }
        if url.contains('#') {
            return Err(bad("the URL must not have a fragment besides #sha256="));
        }
        let sha256 = Sha256Hex::parse(sha256).ok_or_else(|| bad("sha256 must be 64 hex digits"))?;
        Ok(BundleSource {
            url: url.to_owned(),
            sha256,
        })
    }
}

impl FromStr for BundleSource {
    type Err = BundleError;

    fn from_str(spec: &str) -> Result<BundleSource, BundleError> {
        let (url, digest) = spec
            .rsplit_once("#sha256=")
            .ok_or_else(|| BundleError::Spec {
                spec: spec.to_owned(),
                message: "missing #sha256=<digest>".into(),
            })?;
        BundleSource::new(url, digest)
    }
}

impl fmt::Display for BundleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#sha256={}", self.url, self.sha256)
    }
}

/// How many bytes of unpacked bundles a cache keeps unless told otherwise:
/// two of the largest bundles the default limit accepts.
pub const DEFAULT_BUNDLE_CACHE_MAX_BYTES: u64 = 8 << 30;

/// Bundles to fetch at start and where they are cached.
#[derive(Clone, Debug)]
pub struct BundleSettings {
    /// Fetched and installed before the repository is loaded.
    pub sources: Vec<BundleSource>,
    /// Cache of unpacked bundles, by digest.
    pub cache_dir: PathBuf,
    /// Most bytes of unpacked bundles the cache keeps; the least recently
    /// used go first (a model installed from one keeps its files).
    pub cache_max_bytes: u64,
    /// Largest bundle accepted, downloaded or unpacked, in bytes.
    pub max_bytes: u64,
    /// Where load requests may fetch bundles from (startup sources are not
    /// checked against it).
    pub allow: FetchAllowList,
}

/// Fetches bundles into a digest-keyed cache and installs them into a
/// model repository.
pub struct BundleStore {
    cache_dir: PathBuf,
    cache_max_bytes: u64,
    max_bytes: u64,
    /// For startup sources: the deployer's own configuration.
    client: reqwest::Client,
    /// For load requests: follows and connects only where `allow` says.
    requested: reqwest::Client,
    allow: FetchAllowList,
}

/// Give up on a bundle server that does not connect or goes silent, rather
/// than hang startup or a load request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

impl BundleStore {
    /// A store caching under `settings.cache_dir` (created when needed).
    pub fn new(settings: &BundleSettings) -> Result<BundleStore, BundleError> {
        let tls = crate::tls::client_config(None).map_err(BundleError::Tls)?;
        let builder = || {
            reqwest::Client::builder()
                .use_preconfigured_tls(tls.clone())
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
        };
        let client = builder().build().map_err(BundleError::Client)?;
        // No proxy: a proxy would resolve and connect on our behalf,
        // beyond the resolver's checks.
        let requested = builder()
            .redirect(settings.allow.redirects())
            .dns_resolver(settings.allow.resolver())
            .no_proxy()
            .build()
            .map_err(BundleError::Client)?;
        Ok(BundleStore {
            cache_dir: settings.cache_dir.clone(),
            cache_max_bytes: settings.cache_max_bytes,
            max_bytes: settings.max_bytes,
            client,
            requested,
            allow: settings.allow.clone(),
        })
    }

    /// Fetches `source` (or finds it in the cache) and installs its model
    /// into `repository`, replacing an earlier bundle of the same model.
    /// With `expected` set, the bundle must hold that model. Returns the
    /// model's name. For sources the deployer named; see
    /// [`BundleStore::install_requested`] for the others.
    pub async fn install(
        &self,
        source: &BundleSource,
        repository: &Path,
        expected: Option<&str>,
    ) -> Result<String, BundleError> {
        self.install_with(&self.client, source, repository, expected)
            .await
    }

    /// [`BundleStore::install`] for a source a request named: refused
    /// unless the allowlist allows its URL (checked before the cache, so a
    /// refused URL is refused every time), and every redirect and resolved
    /// address is checked too.
    pub async fn install_requested(
        &self,
        source: &BundleSource,
        repository: &Path,
        expected: &str,
    ) -> Result<String, BundleError> {
        self.allow
            .check_str(&source.url)
            .map_err(|refusal| BundleError::NotAllowed {
                url: source.url.clone(),
                refusal,
            })?;
        self.install_with(&self.requested, source, repository, Some(expected))
            .await
    }

    async fn install_with(
        &self,
        client: &reqwest::Client,
        source: &BundleSource,
        repository: &Path,
        expected: Option<&str>,
    ) -> Result<String, BundleError> {
        let unpacked = self.fetch(client, source).await?;
        let name = unpacked
            .file_name()
            .and_then(|n| n.to_str())
            .expect("fetch returns a validated model folder")
            .to_owned();
        if let Some(expected) = expected
            && expected != name
        {
            return Err(BundleError::WrongModel {
                url: source.url.clone(),
                expected: expected.to_owned(),
                found: name,
            });
        }
        let (repository, digest) = (repository.to_owned(), source.sha256.clone());
        let installed = name.clone();
        tokio::task::spawn_blocking(move || place(&unpacked, &repository, &installed, &digest))
            .await
            .expect("installing a bundle does not panic")?;
        tracing::info!(model = %name, bundle = %source.url, sha256 = %source.sha256, "bundle installed");
        Ok(name)
    }

    /// The unpacked model folder of `source`: from the cache, or downloaded,
    /// verified and unpacked into it.
    async fn fetch(
        &self,
        client: &reqwest::Client,
        source: &BundleSource,
    ) -> Result<PathBuf, BundleError> {
        let entry = self.cache_dir.join(source.sha256.as_str());
        if let Some(model) = cached_model(&entry) {
            tracing::info!(bundle = %source.url, sha256 = %source.sha256, "bundle cached");
            if let Err(e) = disk_cache::mark_used(&entry) {
                tracing::warn!(path = %entry.display(), "cannot mark a bundle cache entry used: {e}");
            }
            return Ok(model);
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BundleError::Io { path, source }
        };
        std::fs::create_dir_all(&self.cache_dir).map_err(io(&self.cache_dir))?;
        let download = tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(&self.cache_dir)
            .map_err(io(&self.cache_dir))?;
        self.download(client, source, &download).await?;
        let (url, cache_dir, max_bytes, cache_max_bytes) = (
            source.url.clone(),
            self.cache_dir.clone(),
            self.max_bytes,
            self.cache_max_bytes,
        );
        tokio::task::spawn_blocking(move || {
            let partial = tempfile::Builder::new()
                .prefix(".unpack-")
                .tempdir_in(&cache_dir)
                .map_err(io(&cache_dir))?;
            let archive = download.reopen().map_err(io(download.path()))?;
            let name = unpack(archive, partial.path(), &url, max_bytes)?;
            // Readers only ever see a complete entry: it appears by rename.
            match std::fs::rename(partial.path(), &entry) {
                Ok(()) => {
                    let _ = partial.keep();
                }
                // Another load unpacked the same digest meanwhile.
                Err(_) if cached_model(&entry).is_some() => {}
                Err(source) => {
                    return Err(BundleError::Io {
                        path: entry.clone(),
                        source,
                    });
                }
            }
            // Entries are named by their digest; the download and unpack
            // folders beside them start with a dot.
            let is_entry = |name: &str| !name.starts_with('.');
            if let Err(e) = disk_cache::trim(&cache_dir, &entry, cache_max_bytes, is_entry) {
                tracing::warn!(dir = %cache_dir.display(), "cannot trim the bundle cache: {e}");
            }
            Ok(entry.join(name))
        })
        .await
        .expect("unpacking a bundle does not panic")
    }

    /// Streams `source` into `file`, within the size limit, and checks its
    /// digest.
    async fn download(
        &self,
        client: &reqwest::Client,
        source: &BundleSource,
        file: &tempfile::NamedTempFile,
    ) -> Result<(), BundleError> {
        let url = &source.url;
        let failed = |source: reqwest::Error| match policy::refusal_in(&source) {
            Some(refusal) => BundleError::NotAllowed {
                url: url.clone(),
                refusal,
            },
            None => BundleError::Download {
                url: url.clone(),
                source,
            },
        };
        let too_large = || BundleError::TooLarge {
            url: url.clone(),
            limit: self.max_bytes,
        };
        tracing::info!(bundle = %url, "downloading bundle");
        let mut response = client.get(url).send().await.map_err(failed)?;
        if !response.status().is_success() {
            return Err(BundleError::Status {
                url: url.clone(),
                status: response.status(),
            });
        }
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes)
        {
            return Err(too_large());
        }
        let write_error = |e| BundleError::Io {
            path: file.path().to_owned(),
            source: e,
        };
        let mut out = tokio::fs::File::from_std(file.as_file().try_clone().map_err(write_error)?);
        let mut hasher = Sha256::new();
        let mut seen = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            seen += chunk.len() as u64;
            if seen > self.max_bytes {
                return Err(too_large());
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(write_error)?;
        }
        out.flush().await.map_err(write_error)?;
        let actual = Sha256Hex::finish(hasher);
        if actual != source.sha256 {
            return Err(BundleError::DigestMismatch {
                url: url.clone(),
                expected: source.sha256.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }
}

/// The model folder of a complete cache entry, if there is one.
fn cached_model(entry: &Path) -> Option<PathBuf> {
    let mut folders = std::fs::read_dir(entry)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()));
    let model = folders.next()?.path();
    folders.next().is_none().then_some(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_url_and_digest() {
        let hex = "AB".repeat(32);
        let source: BundleSource = format!("https://example.com/m.tar.gz#sha256={hex}")
            .parse()
            .unwrap();
        assert_eq!(source.url, "https://example.com/m.tar.gz");
        assert_eq!(source.sha256.as_str(), "ab".repeat(32));
        for bad in [
            "https://example.com/m.tar.gz",
            "https://example.com/m.tar.gz#sha256=abc",
            &format!("ftp://example.com/m#sha256={hex}"),
        ] {
            assert!(bad.parse::<BundleSource>().is_err(), "{bad}");
        }
    }
}

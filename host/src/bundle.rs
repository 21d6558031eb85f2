//! Model bundles: one model's repository folder packed as a tar archive
//! (optionally gzipped), fetched over HTTP(S), verified against a sha256
//! digest and installed into the model repository.
//!
//! ```text
//! <name>/config.toml                  optional serving settings
//! <name>/<version>/model.wasm         the handler component
//! <name>/<version>/model.safetensors  optional weights
//! <name>/<version>/<asset>            files the handler may read
//! ```
//! A bundle is named by `<url>#sha256=<hex>`. The digest covers the bytes as
//! downloaded and is checked before anything is unpacked. Unpacked bundles
//! are cached under their digest, so a restart does not download again.

use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

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
    /// The HTTP client could not be built.
    #[error("cannot create the bundle HTTP client: {0}")]
    Client(#[source] reqwest::Error),
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

/// Bundles to fetch at start and where they are cached.
#[derive(Clone, Debug)]
pub struct BundleSettings {
    /// Fetched and installed before the repository is loaded.
    pub sources: Vec<BundleSource>,
    /// Cache of unpacked bundles, by digest.
    pub cache_dir: PathBuf,
    /// Largest bundle accepted, downloaded or unpacked, in bytes.
    pub max_bytes: u64,
}

/// Fetches bundles into a digest-keyed cache and installs them into a
/// model repository.
pub struct BundleStore {
    cache_dir: PathBuf,
    max_bytes: u64,
    client: reqwest::Client,
}

/// Give up on a bundle server that does not connect or goes silent, rather
/// than hang startup or a load request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

impl BundleStore {
    /// A store caching under `settings.cache_dir` (created when needed).
    pub fn new(settings: &BundleSettings) -> Result<BundleStore, BundleError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(BundleError::Client)?;
        Ok(BundleStore {
            cache_dir: settings.cache_dir.clone(),
            max_bytes: settings.max_bytes,
            client,
        })
    }

    /// Fetches `source` (or finds it in the cache) and installs its model
    /// into `repository`, replacing an earlier bundle of the same model.
    /// With `expected` set, the bundle must hold that model. Returns the
    /// model's name.
    pub async fn install(
        &self,
        source: &BundleSource,
        repository: &Path,
        expected: Option<&str>,
    ) -> Result<String, BundleError> {
        let unpacked = self.fetch(source).await?;
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
    pub async fn fetch(&self, source: &BundleSource) -> Result<PathBuf, BundleError> {
        let entry = self.cache_dir.join(source.sha256.as_str());
        if let Some(model) = cached_model(&entry) {
            tracing::info!(bundle = %source.url, sha256 = %source.sha256, "bundle cached");
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
        self.download(source, &download).await?;
        let (url, cache_dir, max_bytes) =
            (source.url.clone(), self.cache_dir.clone(), self.max_bytes);
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
            Ok(entry.join(name))
        })
        .await
        .expect("unpacking a bundle does not panic")
    }

    /// Streams `source` into `file`, within the size limit, and checks its
    /// digest.
    async fn download(
        &self,
        source: &BundleSource,
        file: &tempfile::NamedTempFile,
    ) -> Result<(), BundleError> {
        let url = &source.url;
        let failed = |source| BundleError::Download {
            url: url.clone(),
            source,
        };
        let too_large = || BundleError::TooLarge {
            url: url.clone(),
            limit: self.max_bytes,
        };
        tracing::info!(bundle = %url, "downloading bundle");
        let mut response = self.client.get(url).send().await.map_err(failed)?;
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

/// Unpacks a tar (gzipped or not) into `dest`, refusing links, absolute
/// paths, `..`, more than one top-level folder and more than `max_bytes` of
/// content. Returns the model folder's name.
fn unpack(
    mut archive: std::fs::File,
    dest: &Path,
    url: &str,
    max_bytes: u64,
) -> Result<String, BundleError> {
    let bad = |message: String| BundleError::Archive {
        url: url.to_owned(),
        message,
    };
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BundleError::Io { path, source }
    };
    let mut magic = [0u8; 2];
    let gzipped = archive.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    std::io::Seek::rewind(&mut archive).map_err(io(dest))?;
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(archive))
    } else {
        Box::new(archive)
    };
    let mut tar = tar::Archive::new(reader);
    let mut model: Option<String> = None;
    let mut total = 0u64;
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("cannot read the archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("cannot read the archive: {e}")))?;
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            // pax metadata for the whole archive (e.g. from `git archive`).
            continue;
        }
        let raw = entry.path_bytes();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let unsafe_entry = |message: &str| BundleError::UnsafeEntry {
            url: url.to_owned(),
            entry: shown.clone(),
            message: message.into(),
        };
        let path = entry
            .path()
            .map_err(|_| unsafe_entry("the path is not valid UTF-8"))?
            .into_owned();
        // Only plain names: no root, no `..`, so nothing escapes `dest`.
        let mut parts = Vec::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_owned()),
                Component::CurDir => {}
                _ => return Err(unsafe_entry("absolute paths and '..' are not allowed")),
            }
        }
        let Some(top) = parts.first() else {
            continue;
        };
        let top = top
            .to_str()
            .ok_or_else(|| unsafe_entry("the path is not valid UTF-8"))?;
        if !crate::repository::valid_model_name(top) {
            return Err(bad(format!(
                "the top-level folder '{top}' is not a model name (letters, digits, '-', '_', '.')"
            )));
        }
        match &model {
            None => model = Some(top.to_owned()),
            Some(name) if name != top => {
                return Err(bad(format!(
                    "it holds more than one top-level folder ('{name}', '{top}'); a bundle holds one model"
                )));
            }
            Some(_) => {}
        }
        let target = parts.iter().fold(dest.to_owned(), |p, part| p.join(part));
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(io(&target))?;
        } else if kind.is_file() {
            if parts.len() < 2 {
                return Err(bad(format!(
                    "'{shown}' is a file at the top level; files belong inside the model folder"
                )));
            }
            let parent = target.parent().expect("a joined path has a parent");
            std::fs::create_dir_all(parent).map_err(io(parent))?;
            let mut out = std::fs::File::create(&target).map_err(io(&target))?;
            // Counts what is really written, whatever the header claims, so
            // a decompression bomb stops at the limit.
            let budget = max_bytes.saturating_sub(total);
            let written = std::io::copy(&mut (&mut entry).take(budget + 1), &mut out)
                .map_err(|e| bad(format!("cannot unpack '{shown}': {e}")))?;
            total += written;
            if total > max_bytes {
                return Err(BundleError::TooLarge {
                    url: url.to_owned(),
                    limit: max_bytes,
                });
            }
        } else {
            return Err(unsafe_entry(
                "only files and folders are allowed (no links or devices)",
            ));
        }
    }
    model.ok_or_else(|| bad("it is empty".into()))
}

/// Installs the unpacked model folder `from` as `<repository>/<name>`,
/// marked with `digest`; replaces only a folder an earlier bundle installed.
fn place(
    from: &Path,
    repository: &Path,
    name: &str,
    digest: &Sha256Hex,
) -> Result<(), BundleError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BundleError::Io { path, source }
    };
    let target = repository.join(name);
    let marker = target.join(MARKER_FILE);
    if target.exists() {
        match std::fs::read_to_string(&marker) {
            Ok(installed) if installed.trim() == digest.as_str() => return Ok(()),
            Ok(_) => {}
            Err(_) => {
                return Err(BundleError::Occupied {
                    name: name.to_owned(),
                    path: target,
                });
            }
        }
    }
    std::fs::create_dir_all(repository).map_err(io(repository))?;
    // Assembled in a hidden folder (the repository skips those), then
    // swapped in, so a reload never sees a half-copied model.
    let staging = tempfile::Builder::new()
        .prefix(".install-")
        .tempdir_in(repository)
        .map_err(io(repository))?;
    link_tree(from, staging.path())?;
    std::fs::write(staging.path().join(MARKER_FILE), digest.as_str())
        .map_err(io(staging.path()))?;
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(io(&target))?;
    }
    std::fs::rename(staging.path(), &target).map_err(io(&target))?;
    let _ = staging.keep();
    Ok(())
}

/// Mirrors `from` into `to` with hard links (weights can be large), copying
/// where linking is not possible (another filesystem).
fn link_tree(from: &Path, to: &Path) -> Result<(), BundleError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BundleError::Io { path, source }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().map_err(io(&source))?.is_dir() {
            link_tree(&source, &target)?;
        } else if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target).map_err(io(&target))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // set_path refuses '..', which is the point of some tests:
            // write the name bytes directly.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn unpack_bytes(bytes: &[u8], max: u64) -> (tempfile::TempDir, Result<String, BundleError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive");
        std::fs::write(&path, bytes).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let result = unpack(std::fs::File::open(&path).unwrap(), &out, "test://b", max);
        (dir, result)
    }

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

    #[test]
    fn unpacks_one_model_folder_plain_or_gzipped() {
        let tar = tar_of(&[
            ("m/config.toml", b"instances = 1"),
            ("m/1/model.wasm", b"x"),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        for bytes in [tar.clone(), gz.finish().unwrap()] {
            let (dir, result) = unpack_bytes(&bytes, 1 << 20);
            assert_eq!(result.unwrap(), "m");
            assert!(dir.path().join("out/m/1/model.wasm").is_file());
        }
    }

    #[test]
    fn refuses_traversal_two_models_and_oversize() {
        let (dir, result) = unpack_bytes(&tar_of(&[("m/../../evil", b"x")]), 1 << 20);
        let err = result.unwrap_err();
        assert!(matches!(err, BundleError::UnsafeEntry { .. }), "{err}");
        assert!(!dir.path().join("evil").exists());
        let (_, result) = unpack_bytes(&tar_of(&[("/abs/x", b"x")]), 1 << 20);
        assert!(matches!(result, Err(BundleError::UnsafeEntry { .. })));
        let (_, result) = unpack_bytes(&tar_of(&[("a/1/x", b"x"), ("b/1/x", b"x")]), 1 << 20);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("more than one top-level folder"), "{err}");
        let (_, result) = unpack_bytes(&tar_of(&[("m/1/model.wasm", &[0; 100])]), 10);
        assert!(matches!(result, Err(BundleError::TooLarge { .. })));
    }
}

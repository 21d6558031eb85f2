//! Entry points for fuzzing: each takes arbitrary bytes and feeds them to
//! one parser or rule the way the server does. Every error must come back as
//! a value; a panic, an abort or a hang is the bug.
//!
//! The cargo-fuzz targets in `fuzz/` (coverage-guided, nightly) and the
//! corpus replay test `host/tests/fuzz_corpora.rs` (stable, part of the test
//! suite) call these same functions, by the names in [`TARGETS`].

mod shapes;

use std::path::Path;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};

use crate::bundle::unpack::unpack;
use crate::protocol::{self, HEADER_LENGTH};
use crate::repository::{ModelConfig, Weights};
use crate::runtime::Value;
use crate::server::{ApiError, InferRequest, oip};

pub use shapes::shape_rules;

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every fuzz target by name: the folder names of its corpus
/// (`fuzz/corpus/<name>`) and of its cargo-fuzz binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("oip_json", oip_json),
    ("oip_binary", oip_binary),
    ("safetensors", safetensors),
    ("bundle_tar", bundle_tar),
    ("model_config", model_config),
    ("shape_rules", shape_rules),
];

/// The largest bundle content [`bundle_tar`] unpacks: small, so that a
/// decompression bomb shows as a refusal within one execution.
const BUNDLE_LIMIT: u64 = 1 << 20;

/// An OIP REST body without the binary extension, as
/// `POST /v2/models/{m}/infer` decodes it. The decoder's fast path, which
/// lifts numeric arrays out of the text and reads them itself, must come
/// to what decoding through `Value`s alone does: the same request, or the
/// same refusal.
pub fn oip_json(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    let fast = outcome(oip::decode(None, &body));
    assert_eq!(
        fast,
        outcome(oip::decode_as_values(None, &body)),
        "the fast path and the Value path decode differently"
    );
}

/// A decoded request (each input's dtype, shape and elements' bytes, the
/// parameters and the envelope) or the refusal, written out to compare.
fn outcome(decoded: Result<(InferRequest, oip::Envelope), ApiError>) -> String {
    let (request, envelope) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => return format!("{} {}", e.status, e.message),
    };
    let inputs: Vec<String> = request
        .inputs
        .iter()
        .map(|(name, value)| match value {
            Value::Numeric(t) => format!(
                "{name} {:?} {:?} {:?}",
                t.dtype(),
                t.shape(),
                t.host().map(|h| h.bytes())
            ),
            Value::Bytes { shape, elements } => format!("{name} BYTES {shape:?} {elements:?}"),
        })
        .collect();
    format!(
        "{inputs:?} {:?} {:?} {envelope:?}",
        request.parameters, request.outputs
    )
}

/// A binary-extension request: the bytes up to the first newline are the
/// `Inference-Header-Content-Length` header's value, the rest is the body,
/// split into its JSON head and binary tensor data. The BYTES element
/// framing is also read from the body and must write back identically.
pub fn oip_binary(data: &[u8]) {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(header) {
        headers.insert(HEADER_LENGTH, value);
    }
    if let Ok(json_len) = oip::json_len(&headers) {
        let _ = oip::decode(json_len, &Bytes::copy_from_slice(body));
    }
    if let Ok(elements) = protocol::split_bytes(body) {
        let mut written = Vec::with_capacity(body.len());
        protocol::join_bytes(&elements, &mut written);
        assert_eq!(written, body, "BYTES framing does not round-trip");
    }
}

/// A `model.safetensors` file, mapped and indexed as a model load does;
/// every tensor it yields must hold exactly its shape's bytes.
pub fn safetensors(data: &[u8]) {
    let dir = scratch();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, data).expect("writing the scratch file");
    if let Ok(weights) = Weights::open(&path) {
        let mut total = 0;
        for name in weights.names() {
            let tensor = weights.get(name).expect("a listed tensor");
            let host = tensor.host().expect("weights live on the host");
            assert_eq!(host.len(), tensor.byte_len(), "tensor '{name}'");
            total += host.bytes().len();
        }
        assert_eq!(total, weights.byte_len());
    }
}

/// A bundle archive (tar, gzipped or not), unpacked under a 1 MiB limit as
/// a bundle install does. What it accepts lies inside the destination,
/// holds no links, and stays within the limit.
pub fn bundle_tar(data: &[u8]) {
    let dir = scratch();
    let archive = dir.path().join("bundle.tar");
    std::fs::write(&archive, data).expect("writing the scratch file");
    let dest = dir.path().join("out");
    std::fs::create_dir(&dest).expect("creating the scratch folder");
    let file = std::fs::File::open(&archive).expect("reopening the scratch file");
    if let Ok(model) = unpack(file, &dest, "fuzz://bundle", BUNDLE_LIMIT) {
        assert!(dest.join(&model).is_dir(), "model folder '{model}'");
        let top = std::fs::read_dir(&dest)
            .expect("listing the output")
            .count();
        assert_eq!(top, 1, "one top-level folder");
        let content = tree_bytes(&dest);
        assert!(content <= BUNDLE_LIMIT, "{content} bytes unpacked");
    }
}

/// A model's `config.toml`, read and validated as a model load does; the
/// limits it accepts must convert to bytes without wrapping.
pub fn model_config(data: &[u8]) {
    let dir = scratch();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, data).expect("writing the scratch file");
    if let Ok(config) = ModelConfig::load(&path) {
        assert_eq!(
            (config.memory_limit_bytes() >> 20) as u64,
            config.memory_limit_mib
        );
        assert_eq!(
            (config.max_tensor_bytes() >> 20) as u64,
            config.max_tensor_mib
        );
        let _ = (config.timeout(), config.queue_timeout());
    }
}

/// A fresh folder for one execution's files, removed when dropped.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("creating a scratch folder")
}

/// Bytes of the regular files under `dir`, refusing links.
fn tree_bytes(dir: &Path) -> u64 {
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).expect("listing the output") {
        let entry = entry.expect("an entry");
        let kind = entry.file_type().expect("a file type");
        assert!(!kind.is_symlink(), "{} is a link", entry.path().display());
        if kind.is_dir() {
            bytes += tree_bytes(&entry.path());
        } else {
            bytes += entry.metadata().expect("metadata").len();
        }
    }
    bytes
}

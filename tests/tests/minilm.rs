//! The `minilm` example model (plugins/minilm: all-MiniLM-L6-v2 on its
//! pretrained weights) on a real server: token ids and embeddings against
//! sentence-transformers (`tests/data/minilm_reference.json`, written by
//! `plugins/minilm/reference.py`), one sentence at a time and as one batch
//! (its tokens packed with no padding, token ids padded with `[PAD]`).
//!
//! Needs the weights in `examples/models/minilm/1`: `scripts/fetch-minilm.sh`
//! (which `scripts/test.sh` runs) puts them there.

mod common;

use common::{TestServer, data_json, error_text, floats, ints, output};
use serde_json::{Value, json};

const INFER: &str = "/v2/models/minilm/infer";
const DIM: usize = 384;
/// Least cosine similarity to sentence-transformers' embedding.
const MIN_COSINE: f64 = 0.9999;

/// Fails with the fix when the weights have not been fetched.
fn require_weights() {
    let dir = edgeserve_e2e::repo_root().join("examples/models/minilm/1");
    for file in ["model.safetensors", "vocab.txt"] {
        assert!(
            dir.join(file).is_file(),
            "{} is missing: run scripts/fetch-minilm.sh to fetch all-MiniLM-L6-v2's \
             weights and vocabulary (scripts/test.sh does)",
            dir.join(file).display()
        );
    }
}

fn reference() -> Value {
    data_json("minilm_reference.json")
}

fn request(sentences: &[&str]) -> Value {
    json!({"inputs": [{"name": "text", "shape": [sentences.len()], "datatype": "BYTES", "data": sentences}]})
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Embeds `sentences` in one request and checks shapes, token ids (the
/// unpadded reference ids, then `[PAD]` = 0) and each embedding against the
/// reference; returns the cosines.
async fn check(
    server: &TestServer,
    sentences: &[&str],
    ids: &[Value],
    embeddings: &[Value],
) -> Vec<f64> {
    let n = sentences.len();
    let (status, body) = server.post(INFER, &request(sentences)).await;
    assert_eq!(status, 200, "{sentences:?}: {body}");

    let embedding = output(&body, "embedding");
    assert_eq!(embedding["datatype"], "FP32");
    assert_eq!(embedding["shape"], json!([n, DIM]), "{sentences:?}");
    let got = floats(&embedding["data"]);

    let input_ids = output(&body, "input_ids");
    assert_eq!(input_ids["datatype"], "INT64");
    let seq = ids
        .iter()
        .map(|r| r.as_array().unwrap().len())
        .max()
        .unwrap();
    assert_eq!(input_ids["shape"], json!([n, seq]), "{sentences:?}");
    let got_ids: Vec<i64> = floats(&input_ids["data"])
        .iter()
        .map(|&x| x as i64)
        .collect();

    let mut cosines = Vec::with_capacity(n);
    for (i, sentence) in sentences.iter().enumerate() {
        let want_ids = ints(&ids[i]);
        let row_ids = &got_ids[i * seq..(i + 1) * seq];
        assert_eq!(
            &row_ids[..want_ids.len()],
            want_ids,
            "token ids of {sentence:?}"
        );
        assert!(
            row_ids[want_ids.len()..].iter().all(|&id| id == 0),
            "padding of {sentence:?}: {row_ids:?}"
        );

        let row = &got[i * DIM..(i + 1) * DIM];
        let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-4,
            "|embedding| of {sentence:?} = {norm}"
        );
        let c = cosine(row, &floats(&embeddings[i]));
        assert!(
            c >= MIN_COSINE,
            "cosine to sentence-transformers for {sentence:?} = {c}"
        );
        cosines.push(c);
    }
    cosines
}

#[tokio::test(flavor = "multi_thread")]
async fn minilm_matches_sentence_transformers() {
    require_weights();
    let server = TestServer::start(&["minilm"]).await;
    let reference = reference();

    server
        .assert_signature(
            "minilm",
            json!([{"name": "text", "datatype": "BYTES", "shape": [-1]}]),
            Some(json!([
                {"name": "embedding", "datatype": "FP32", "shape": [-1, DIM]},
                {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
            ])),
        )
        .await;

    let mut worst = f64::INFINITY;
    for (name, case) in reference["cases"].as_object().unwrap() {
        let sentences: Vec<&str> = case["sentences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let ids = case["input_ids"].as_array().unwrap();
        let embeddings = case["embeddings"].as_array().unwrap();
        // Every sentence alone (no padding) …
        for i in 0..sentences.len() {
            let c = check(&server, &sentences[i..=i], &ids[i..=i], &embeddings[i..=i]).await;
            eprintln!("{name}[{i}] alone: 1 - cosine = {:.2e}", 1.0 - c[0]);
            worst = worst.min(c[0]);
        }
        // … and the case's sentences as one padded batch.
        if sentences.len() > 1 {
            let cs = check(&server, &sentences, ids, embeddings).await;
            let gaps: Vec<String> = cs.iter().map(|c| format!("{:.2e}", 1.0 - c)).collect();
            eprintln!(
                "{name} as a batch of {}: 1 - cosine = {gaps:?}",
                sentences.len()
            );
            worst = cs.iter().copied().fold(worst, f64::min);
        }
    }
    eprintln!("worst: 1 - cosine = {:.2e}", 1.0 - worst);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn minilm_requests_that_fail() {
    require_weights();
    let server = TestServer::start(&["minilm"]).await;

    // No sentence at all.
    let (status, body) = server.post(INFER, &request(&[])).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("text"), "{body}");

    // Numbers where text belongs.
    let (status, body) = server
        .post(
            INFER,
            &json!({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // Asking for the embedding alone leaves the ids out; the server kept
    // serving after the rejections.
    let mut body = request(&["still serving"]);
    body["outputs"] = json!([{"name": "embedding"}]);
    let (status, body) = server.post(INFER, &body).await;
    assert_eq!(status, 200, "{body}");
    let outputs = body["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "{body}");
    assert_eq!(outputs[0]["shape"], json!([1, DIM]));
    server.stop().await;
}

/// Every reference sentence (short, truncated at 256 tokens, accented,
/// Chinese, empty) in one request: the tokens of the batch run packed, with
/// no padding, so each sentence's embedding must be the one it has alone.
#[tokio::test(flavor = "multi_thread")]
async fn minilm_packed_batch_equals_each_sentence_alone() {
    require_weights();
    let server = TestServer::start(&["minilm"]).await;
    let reference = reference();
    let sentences: Vec<&str> = reference["cases"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|case| case["sentences"].as_array().unwrap())
        .map(|s| s.as_str().unwrap())
        .collect();
    let embed = |sentences: &[&str]| {
        let mut body = request(sentences);
        body["outputs"] = json!([{"name": "embedding"}]);
        let server = &server;
        async move {
            let (status, body) = server.post(INFER, &body).await;
            assert_eq!(status, 200, "{body}");
            floats(&output(&body, "embedding")["data"])
        }
    };
    let batch = embed(&sentences).await;
    assert_eq!(batch.len(), sentences.len() * DIM);
    // Its hundreds of tokens ran on weights packed once and kept, which
    // the metrics show (where the CPU has the kernel).
    let (_, metrics) = server.get_text("/metrics").await;
    let packed: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("edgeserve_cpu_packed_weight_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no packed weight bytes in the metrics:\n{metrics}"));
    #[cfg(target_arch = "x86_64")]
    let kernel =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let kernel = false;
    if kernel {
        // All 36 linear layers, at least 384 × 384 floats each.
        assert!(
            packed >= 36 * 384 * 384 * 4,
            "packed weights hold {packed} bytes"
        );
    } else {
        assert_eq!(packed, 0, "weights packed without the kernel");
    }
    for (i, sentence) in sentences.iter().enumerate() {
        let alone = embed(&[sentence]).await;
        let row = &batch[i * DIM..(i + 1) * DIM];
        let worst = row
            .iter()
            .zip(&alone)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= 1e-5,
            "{sentence:?}: batch vs alone differ by {worst}"
        );
    }
    server.stop().await;
}

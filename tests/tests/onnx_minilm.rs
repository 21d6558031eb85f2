//! all-MiniLM-L6-v2 as an ONNX file: built from the shipped weights as
//! torch exports a BERT (`tests/python/minilm_onnx.py`: BERT, mean pooling and
//! L2 normalization, dynamic batch and sequence axes), imported with `edgeserve import` and
//! served by the generic ONNX handler, it embeds the token ids of the
//! hand-written `minilm` plugin as that plugin does. The file also outputs
//! the last hidden state, as sentence-transformers' exports do: a request
//! for the embedding alone runs a padded batch packed, one for everything
//! runs it padded, and both agree.
//!
//! Needs the weights in `examples/models/minilm/1` (scripts/fetch-minilm.sh,
//! which scripts/test.sh runs) and the `onnx` package (tests/requirements.txt).

mod common;

use std::process::Command;

use common::{TestServer, data_json, error_text, floats, ints, output};
use edgeserve_e2e::{onnx_import, repo_root, run_ok};
use serde_json::json;

const DIM: usize = 384;
/// Least cosine similarity to the hand-written plugin's embedding.
const MIN_COSINE: f64 = 0.9999;

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[tokio::test(flavor = "multi_thread")]
async fn minilm_exported_to_onnx_embeds_like_the_hand_written_plugin() {
    let weights = repo_root().join("examples/models/minilm/1/model.safetensors");
    assert!(
        weights.is_file(),
        "{} is missing: run scripts/fetch-minilm.sh",
        weights.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("minilm.onnx");
    run_ok(
        Command::new("python3")
            .arg(repo_root().join("tests/python/minilm_onnx.py"))
            .arg(&model)
            .arg("--token-embeddings"),
        "building the ONNX file (python3 -m pip install -r tests/requirements.txt)",
    );
    let repo = edgeserve_e2e::model_repository(&["minilm"]);
    run_ok(
        &mut onnx_import(&repo, &model, "minilm-onnx"),
        "edgeserve import",
    );
    // A padded batch with a 256-token sentence, on a shared machine: more
    // than the default 5 s deadline allows.
    let config = repo.join("minilm-onnx/config.toml");
    let text = std::fs::read_to_string(&config).unwrap() + "timeout_ms = 60000\n";
    std::fs::write(&config, text).unwrap();
    let running = edgeserve::app::start(common::settings(&repo))
        .await
        .expect("server starts");
    let server = TestServer::attach(running, repo);

    let reference = data_json("minilm_reference.json");
    let sentences: Vec<&str> = reference["cases"]["batch"]["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // The padded batch's request for every output and its answer.
    let mut padded = None;
    // One padded batch, and the first sentence alone.
    for batch in [&sentences[..], &sentences[..1]] {
        let n = batch.len();
        let request =
            json!({"inputs": [{"name": "text", "shape": [n], "datatype": "BYTES", "data": batch}]});
        let (status, body) = server.post("/v2/models/minilm/infer", &request).await;
        assert_eq!(status, 200, "{body}");
        let want = floats(&output(&body, "embedding")["data"]);
        let ids_out = output(&body, "input_ids");
        let shape = ids_out["shape"].clone();
        let ids = ints(&ids_out["data"]);
        let mask: Vec<i64> = ids.iter().map(|&id| i64::from(id != 0)).collect();
        let types = vec![0i64; ids.len()];
        let input = |name: &str, data: &[i64]| json!({"name": name, "datatype": "INT64", "shape": shape, "data": data});
        let inputs = json!([
            input("input_ids", &ids),
            input("attention_mask", &mask),
            input("token_type_ids", &types),
        ]);
        let request = json!({"inputs": inputs, "outputs": [{"name": "embedding"}]});
        let (status, body) = server.post("/v2/models/minilm-onnx/infer", &request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outputs"].as_array().unwrap().len(), 1, "{body}");
        let embedding = output(&body, "embedding");
        assert_eq!(embedding["shape"], json!([n, DIM]));
        let got = floats(&embedding["data"]);

        // Asking for every output: the hidden state of every position, and
        // the same embedding, which is its mean over the mask, normalized.
        let (status, body) = server
            .post("/v2/models/minilm-onnx/infer", &json!({ "inputs": inputs }))
            .await;
        assert_eq!(status, 200, "{body}");
        let all = floats(&output(&body, "embedding")["data"]);
        let hidden = output(&body, "token_embeddings");
        let len = shape[1].as_u64().unwrap() as usize;
        assert_eq!(hidden["shape"], json!([n, len, DIM]));
        let hidden = floats(&hidden["data"]);
        for (i, row) in all.chunks(DIM).enumerate() {
            let kept = &mask[i * len..(i + 1) * len];
            let mut mean = vec![0.0; DIM];
            for (t, _) in kept.iter().enumerate().filter(|(_, k)| **k == 1) {
                let at = (i * len + t) * DIM;
                for (m, h) in mean.iter_mut().zip(&hidden[at..at + DIM]) {
                    *m += h;
                }
            }
            let norm = mean.iter().map(|m| m * m).sum::<f64>().sqrt();
            for (j, (a, m)) in row.iter().zip(&mean).enumerate() {
                let packed = got[i * DIM + j];
                assert!(
                    (a - m / norm).abs() < 1e-5,
                    "sentence {i} dim {j}: {a} vs {}",
                    m / norm
                );
                assert!(
                    (a - packed).abs() < 1e-5,
                    "sentence {i} dim {j}: {a} vs packed {packed}"
                );
            }
        }
        for (i, sentence) in batch.iter().enumerate() {
            let row = i * DIM..(i + 1) * DIM;
            let c = cosine(&got[row.clone()], &want[row]);
            eprintln!("{sentence:.40?}: 1 - cosine = {:.2e}", 1.0 - c);
            assert!(
                c >= MIN_COSINE,
                "cosine for {sentence:?} in a batch of {n}: {c}"
            );
        }
        padded.get_or_insert((inputs, all, hidden, mask));
    }

    // With zeros at padding positions, a request for every output runs
    // packed too: the same embedding, the same hidden state at real tokens,
    // and zeros at padding, where the graph computes a value.
    let (inputs, all, hidden, mask) = padded.unwrap();
    assert!(
        mask.iter()
            .zip(hidden.chunks(DIM))
            .any(|(&m, row)| m == 0 && row.iter().any(|&h| h != 0.0)),
        "the padded run computes values at padding"
    );
    let config = server.repo.join("minilm-onnx/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let empty = json!({});
    let load = |value: &str| {
        let table = format!("{text}[parameters]\npadding_positions = \"{value}\"\n");
        std::fs::write(&config, table).unwrap();
        server.post("/v2/repository/models/minilm-onnx/load", &empty)
    };
    let (status, body) = load("zero").await;
    assert_eq!(status, 500, "{body}");
    assert!(
        error_text(&body)
            .contains(r#"parameter padding_positions must be "computed" or "zeros", not "zero""#),
        "{body}"
    );
    assert_eq!(load("zeros").await.0, 200);
    let (status, body) = server
        .post("/v2/models/minilm-onnx/infer", &json!({ "inputs": inputs }))
        .await;
    assert_eq!(status, 200, "{body}");
    let packed = floats(&output(&body, "embedding")["data"]);
    for (j, (a, p)) in all.iter().zip(&packed).enumerate() {
        assert!(
            (a - p).abs() < 1e-5,
            "embedding value {j}: {a} padded, {p} packed"
        );
    }
    let zeroed = floats(&output(&body, "token_embeddings")["data"]);
    assert_eq!(zeroed.len(), hidden.len());
    for (t, (&m, (h, z))) in mask
        .iter()
        .zip(hidden.chunks(DIM).zip(zeroed.chunks(DIM)))
        .enumerate()
    {
        for (j, (h, z)) in h.iter().zip(z).enumerate() {
            let close = if m == 1 {
                (h - z).abs() < 1e-5
            } else {
                *z == 0.0
            };
            assert!(
                close,
                "token {t} dim {j}: {z} packed, {h} padded (mask {m})"
            );
        }
    }
    server.stop().await;
}

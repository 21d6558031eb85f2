//! Dynamic batching on a real server: concurrent requests run as one
//! handler call, and each client gets the answer it gets alone, from a twin
//! of the model with batching off served by the same server. The batch-size
//! histogram proves the requests were batched, so these tests fail if
//! batching silently never happens.
//!
//! The batching models wait up to a minute for a full batch
//! (`max_queue_delay_us`, even on an idle model: `wait_when_idle`), and
//! every batch here fills, so which requests run together does not depend
//! on timing.

mod common;

use std::path::Path;

use common::{TestServer, error_text, floats, max_abs_diff, output};
use edgeserve_e2e::{
    ModelRepository, model_repository, onnx_fixture, onnx_import, repo_root, run_ok,
};
use serde_json::{Value, json};

/// Largest difference to the unbatched answer accepted for an FP32 output:
/// a batch may take another GEMM path than a single row (the values are the
/// same up to rounding); distinct inputs differ far more.
const TOLERANCE: f64 = 1e-5;

/// A batching config: one instance, batches of up to `max` rows (or
/// `preferred`), waiting up to a minute for them to fill, the first one too.
fn batching_config(max: usize, preferred: &[usize], padded: &[&str]) -> String {
    format!(
        "instances = 1\nqueue_timeout_ms = 120000\ntimeout_ms = 60000\n\
         [batching]\nmax_batch_size = {max}\nmax_queue_delay_us = 60000000\nwait_when_idle = true\n\
         preferred_batch_sizes = {preferred:?}\npadded_outputs = {padded:?}\n"
    )
}

/// Gives model `name` of `repo` `config`, and adds its twin `<name>_alone`
/// (the same files, batching off).
fn with_twin(repo: &Path, name: &str, config: &str) {
    let twin = repo.join(format!("{name}_alone"));
    copy_tree(&repo.join(name), &twin);
    std::fs::write(twin.join("config.toml"), "instances = 1\n").unwrap();
    std::fs::write(repo.join(name).join("config.toml"), config).unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

async fn serve(repo: ModelRepository) -> TestServer {
    let running = edgeserve::app::start(common::settings(&repo))
        .await
        .expect("server starts");
    TestServer::attach(running, repo)
}

/// Sends every body to `model` at once; the answers, in order.
async fn concurrently(server: &TestServer, model: &str, bodies: &[Value]) -> Vec<Value> {
    let path = format!("/v2/models/{model}/infer");
    let answers =
        futures::future::join_all(bodies.iter().map(|body| server.post(&path, body))).await;
    answers
        .into_iter()
        .zip(bodies)
        .map(|((status, answer), body)| {
            assert_eq!(status, 200, "{body} -> {answer}");
            answer
        })
        .collect()
}

/// Sends each body to `model` alone, one after the other.
async fn one_by_one(server: &TestServer, model: &str, bodies: &[Value]) -> Vec<Value> {
    let mut answers = Vec::new();
    for body in bodies {
        answers.extend(concurrently(server, model, std::slice::from_ref(body)).await);
    }
    answers
}

/// Asserts `got` is `want` output by output: the same names, datatypes and
/// shapes, integers equal, floats within [`TOLERANCE`].
fn assert_same_answer(got: &Value, want: &Value) {
    let outputs = want["outputs"].as_array().unwrap();
    assert_eq!(
        got["outputs"].as_array().unwrap().len(),
        outputs.len(),
        "{got} vs {want}"
    );
    for expected in outputs {
        let name = expected["name"].as_str().unwrap();
        let actual = output(got, name);
        assert_eq!(actual["datatype"], expected["datatype"], "{name}");
        assert_eq!(
            actual["shape"], expected["shape"],
            "{name}: {got} vs {want}"
        );
        let worst = max_abs_diff(&floats(&actual["data"]), &floats(&expected["data"]));
        assert!(
            worst <= TOLERANCE,
            "{name} differs by {worst}: {got} vs {want}"
        );
    }
}

/// Asserts no two answers are the same, so an answer sent to the wrong
/// client could not pass for the right one.
fn assert_all_distinct(answers: &[Value]) {
    for (i, a) in answers.iter().enumerate() {
        for b in &answers[i + 1..] {
            assert_ne!(
                a["outputs"], b["outputs"],
                "two clients got the same answer"
            );
        }
    }
}

/// (count, sum, observations of at most one row) of `model`'s batch-size
/// histogram.
async fn batch_sizes(server: &TestServer, model: &str) -> (u64, u64, u64) {
    let (status, text) = server.get_text("/metrics").await;
    assert_eq!(status, 200);
    let series = |suffix: &str| {
        let prefix = format!("edgeserve_batch_size_{suffix}{{");
        text.lines()
            .filter(|l| l.starts_with(&prefix) && l.contains(&format!("model=\"{model}\"")))
            .filter(|l| suffix != "bucket" || l.contains("le=\"1.0\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum::<u64>()
    };
    (series("count"), series("sum"), series("bucket"))
}

/// Digit-like images: 64 pixels in 0..=16, a different image per `seed`.
fn image(seed: usize) -> Value {
    let pixels: Vec<f64> = (0..64)
        .map(|i| ((i * 7 + seed * 13 + i * seed) % 17) as f64)
        .collect();
    json!({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": pixels}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_clients_each_get_their_own_answer() {
    let repo = model_repository(&["digits"]);
    with_twin(&repo, "digits", &batching_config(16, &[], &[]));
    let server = serve(repo).await;
    let bodies: Vec<Value> = (0..16).map(image).collect();

    let alone = one_by_one(&server, "digits_alone", &bodies).await;
    assert_all_distinct(&alone);
    let batched = concurrently(&server, "digits", &bodies).await;
    for (got, want) in batched.iter().zip(&alone) {
        assert_same_answer(got, want);
    }

    // All 16 rows went through batches, and fewer batches than requests
    // ran: at least one held more than one request.
    let (count, sum, single) = batch_sizes(&server, "digits").await;
    assert_eq!(sum, 16, "rows batched");
    assert!(
        count < 16 && single < count,
        "{count} batches, {single} of one row"
    );
    assert_eq!(batch_sizes(&server, "digits_alone").await, (0, 0, 0));
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics.contains(
            "edgeserve_batch_wait_duration_seconds_count{model=\"digits\",version=\"1\"}"
        ),
        "the batch wait histogram is exported"
    );
    server.stop().await;
}

/// A request that finds its model idle runs at once: the window (an hour
/// here) is for gathering concurrent requests, and a lone one has none to
/// wait for.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_on_an_idle_model_does_not_wait_out_the_window() {
    let repo = model_repository(&["digits"]);
    let config = "instances = 1\nqueue_timeout_ms = 7200000\n\
                  [batching]\nmax_batch_size = 16\nmax_queue_delay_us = 3600000000\n";
    with_twin(&repo, "digits", config);
    let server = serve(repo).await;
    let bodies: Vec<Value> = (0..2).map(image).collect();
    let alone = one_by_one(&server, "digits_alone", &bodies).await;
    let batched = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        one_by_one(&server, "digits", &bodies),
    )
    .await
    .expect("each request ran without waiting out the hour-long window");
    for (got, want) in batched.iter().zip(&alone) {
        assert_same_answer(got, want);
    }
    assert_eq!(
        batch_sizes(&server, "digits").await,
        (2, 2, 2),
        "both went through the batcher, one batch each"
    );
    server.stop().await;
}

/// Fails with the fix when the MiniLM weights have not been fetched.
fn require_minilm_weights() {
    let dir = repo_root().join("examples/models/minilm/1");
    assert!(
        dir.join("model.safetensors").is_file() && dir.join("vocab.txt").is_file(),
        "run scripts/fetch-minilm.sh to fetch all-MiniLM-L6-v2 (scripts/test.sh does)"
    );
}

/// Sentences of different token lengths: BYTES inputs stack freely.
const SENTENCES: [&str; 8] = [
    "edge inference",
    "A man is playing a guitar on a small stage in the rain.",
    "",
    "Café crème",
    "The quick brown fox jumps over the lazy dog, then sleeps for a while.",
    "服务器",
    "batching",
    "Sandboxed handlers run their tensor math on host kernels.",
];

#[tokio::test(flavor = "multi_thread")]
async fn minilm_sentences_batch_and_token_ids_stay_unpadded() {
    require_minilm_weights();
    let repo = model_repository(&["minilm"]);
    // Preferred 8: the eight embedding requests run as soon as they are in.
    with_twin(&repo, "minilm", &batching_config(16, &[8], &["input_ids"]));
    let server = serve(repo).await;
    let embeddings: Vec<Value> = SENTENCES
        .iter()
        .map(|s| json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [s]}], "outputs": [{"name": "embedding"}]}))
        .collect();
    // Every output, token ids included: the batch pads them to its longest
    // sentence, and each client gets its own rows cut back to its own.
    let everything: Vec<Value> = SENTENCES
        .iter()
        .map(|s| json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [s]}]}))
        .collect();
    let bodies: Vec<Value> = embeddings.iter().chain(&everything).cloned().collect();

    let alone = one_by_one(&server, "minilm_alone", &bodies).await;
    assert_all_distinct(&alone[..SENTENCES.len()]);
    let batched = concurrently(&server, "minilm", &bodies).await;
    for (got, want) in batched.iter().zip(&alone) {
        assert_same_answer(got, want);
    }
    let (count, sum, _) = batch_sizes(&server, "minilm").await;
    assert_eq!(
        (count, sum),
        (2, 16),
        "one batch of the eight embedding requests, one of the eight asking for everything"
    );
    server.stop().await;
}

/// Runs `edgeserve import` of a tests/data/onnx fixture into `repo`.
fn import(repo: &Path, fixture: &str, name: &str) {
    run_ok(
        &mut onnx_import(repo, &onnx_fixture(fixture), name),
        "edgeserve import",
    );
}

/// One sequence of `len` tokens for the tiny BERT (ids < 100, its vocabulary).
fn tokens(len: usize, seed: usize, bad_id: bool) -> Value {
    let mut ids: Vec<i64> = (0..len)
        .map(|i| ((i * 31 + seed * 17) % 97) as i64 + 1)
        .collect();
    if bad_id {
        ids[0] = 1_000_000;
    }
    let ones = vec![1; len];
    let types: Vec<i64> = (0..len).map(|i| i64::from(i >= len / 2)).collect();
    let input = |name: &str, data: &[i64]| json!({"name": name, "datatype": "INT64", "shape": [1, len], "data": data});
    json!({"inputs": [input("input_ids", &ids), input("attention_mask", &ones), input("token_type_ids", &types)]})
}

#[tokio::test(flavor = "multi_thread")]
async fn token_arrays_of_different_lengths_are_not_merged() {
    let repo = model_repository(&[]);
    import(&repo, "bert_tiny.onnx", "bert");
    with_twin(&repo, "bert", &batching_config(4, &[], &[]));
    let server = serve(repo).await;
    // Four sequences of 7 tokens and four of 10, interleaved: [1, 7] and
    // [1, 10] inputs differ after axis 0, so they make two batches of four.
    let bodies: Vec<Value> = (0..8)
        .map(|i| tokens(if i % 2 == 0 { 7 } else { 10 }, i, false))
        .collect();

    let alone = one_by_one(&server, "bert_alone", &bodies).await;
    assert_all_distinct(&alone);
    let batched = concurrently(&server, "bert", &bodies).await;
    for (got, want) in batched.iter().zip(&alone) {
        assert_same_answer(got, want);
    }
    assert_eq!(batch_sizes(&server, "bert").await, (2, 8, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_the_handler_refuses_fails_alone() {
    let repo = model_repository(&[]);
    import(&repo, "bert_tiny.onnx", "bert");
    with_twin(&repo, "bert", &batching_config(4, &[], &[]));
    let server = serve(repo).await;
    let bad = tokens(5, 0, true);
    let (status, alone) = server.post("/v2/models/bert_alone/infer", &bad).await;
    assert_eq!(status, 400, "{alone}");

    // One bad request in a batch of four: it gets its own refusal, the
    // others their answers.
    let bodies: Vec<Value> = (1..4).map(|i| tokens(5, i, false)).collect();
    let want = one_by_one(&server, "bert_alone", &bodies).await;
    let path = "/v2/models/bert/infer";
    let (refused, answers) = tokio::join!(
        server.post(path, &bad),
        futures::future::join_all(bodies.iter().map(|b| server.post(path, b)))
    );
    assert_eq!(refused.0, 400, "{}", refused.1);
    // The same refusal, naming the model it was sent to.
    assert_eq!(
        error_text(&refused.1),
        error_text(&alone).replace("bert_alone:1", "bert:1")
    );
    for ((status, got), want) in answers.iter().zip(&want) {
        assert_eq!(*status, 200, "{got}");
        assert_same_answer(got, want);
    }
    assert_eq!(batch_sizes(&server, "bert").await, (1, 4, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batching_model_must_have_a_free_axis_0() {
    let repo = edgeserve_e2e::faulty_repository("[batching]\nmax_batch_size = 4\n");
    let server = serve(repo).await;
    let (status, body) = server
        .post(common::FAULTY, &common::faulty_request(0))
        .await;
    assert_eq!(status, 400, "{body}");
    let text = error_text(&body);
    assert!(
        text.contains("[batching]") && text.contains("'action'") && text.contains("[1]"),
        "{text}"
    );
    server.stop().await;
}

//! The `gpt2` example model (plugins/gpt2) on a real server, against the
//! Hugging Face reference written by plugins/gpt2/make_checkpoint.py: token
//! ids, last-position logits, greedy continuations, seeded sampling, and
//! the `/generate` route.

mod common;

use std::sync::LazyLock;

use common::{
    TestServer, data_json, error_text, floats, ints, max_abs_diff, metric, names, output, settings,
    status_json,
};
use edgeserve::devices::DeviceChoice;
use edgeserve_e2e::model_repository;
use reqwest::Method;
use serde_json::{Value, json};

const INFER: &str = "/v2/models/gpt2/infer";

/// The server's float32 forward pass against PyTorch's, with the reference
/// rounded to 6 decimals: differences are ~1e-6, far below this.
const LOGIT_TOLERANCE: f64 = 1e-4;

/// `tests/data/gpt2_reference.json`, read once per test binary.
fn reference() -> &'static Value {
    static REFERENCE: LazyLock<Value> = LazyLock::new(|| data_json("gpt2_reference.json"));
    &REFERENCE
}

/// An OIP request for `texts` with request `parameters`.
fn request(texts: &[&str], parameters: Value) -> Value {
    json!({
        "inputs": [{"name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts}],
        "parameters": parameters,
    })
}

/// The rows of a -1-padded INT64 `[n, width]` output, padding removed.
fn id_rows(output: &Value) -> Vec<Vec<i64>> {
    let shape: Vec<usize> = output["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data = ints(&output["data"]);
    assert_eq!(data.len(), shape[0] * shape[1], "{output}");
    if shape[1] == 0 {
        return vec![Vec::new(); shape[0]];
    }
    data.chunks(shape[1])
        .map(|row| row.iter().copied().filter(|&id| id >= 0).collect())
        .collect()
}

fn texts(body: &Value) -> Vec<String> {
    output(body, "text")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

impl TestServer {
    /// OIP inference on gpt2 that must succeed.
    async fn gpt2(&self, texts: &[&str], parameters: Value) -> Value {
        let (status, body) = self.post(INFER, &request(texts, parameters)).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `POST /generate` with a form body → (status, JSON body).
    async fn generate_form(&self, fields: &[(&str, &str)]) -> (u16, Value) {
        let response = self.request(Method::POST, "/generate").form(fields);
        status_json(response.send().await.unwrap()).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gpt2_matches_hugging_face() {
    let server = TestServer::start(&["gpt2"]).await;
    let reference = reference();
    let greedy_tokens = reference["greedy_tokens"].as_u64().unwrap();
    let vocab = reference["vocab_size"].as_u64().unwrap() as usize;

    server
        .assert_signature(
            "gpt2",
            json!([{"name": "text", "datatype": "BYTES", "shape": [-1]}]),
            None,
        )
        .await;

    let prompts = reference["prompts"].as_array().unwrap();
    let parameters =
        json!({"max_tokens": greedy_tokens, "return_tokens": true, "return_logits": true});
    let mut worst = 0.0f64;
    for prompt in prompts {
        let text = prompt["text"].as_str().unwrap();
        let body = server.gpt2(&[text], parameters.clone()).await;
        assert_eq!(
            id_rows(output(&body, "prompt_tokens")),
            [ints(&prompt["ids"])],
            "token ids of {text:?}"
        );
        let logits = output(&body, "logits");
        assert_eq!(logits["datatype"], "FP32");
        assert_eq!(logits["shape"], json!([1, vocab]));
        worst = worst.max(max_abs_diff(
            &floats(&logits["data"]),
            &floats(&prompt["logits"]),
        ));
        assert_eq!(
            id_rows(output(&body, "tokens")),
            [ints(&prompt["greedy_ids"])],
            "greedy ids after {text:?}"
        );
        assert_eq!(texts(&body), [prompt["greedy_text"].as_str().unwrap()]);
    }
    assert!(
        worst <= LOGIT_TOLERANCE,
        "max |logit - transformers| = {worst}"
    );
    eprintln!("max |logit - transformers| = {worst:e}");

    // The same prompts as one batch: each row as alone.
    let all: Vec<&str> = prompts
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    let body = server.gpt2(&all, parameters.clone()).await;
    let want: Vec<&str> = prompts
        .iter()
        .map(|p| p["greedy_text"].as_str().unwrap())
        .collect();
    assert_eq!(texts(&body), want);
    let want_ids: Vec<Vec<i64>> = prompts.iter().map(|p| ints(&p["greedy_ids"])).collect();
    assert_eq!(id_rows(output(&body, "tokens")), want_ids);
    assert_eq!(output(&body, "logits")["shape"], json!([all.len(), vocab]));

    // Tokenizer edge cases (whitespace runs, contractions, non-ASCII, the
    // special token), with nothing generated.
    let cases = reference["tokenizer"].as_array().unwrap();
    let inputs: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let body = server
        .gpt2(&inputs, json!({"max_tokens": 0, "return_tokens": true}))
        .await;
    let got = id_rows(output(&body, "prompt_tokens"));
    for (case, got) in cases.iter().zip(got) {
        assert_eq!(got, ints(&case["ids"]), "token ids of {:?}", case["text"]);
    }
    assert_eq!(texts(&body), vec![String::new(); cases.len()]);

    // Without the flags only the text comes back.
    let body = server.gpt2(&[all[0]], json!({"max_tokens": 2})).await;
    assert_eq!(names(&body["outputs"]), ["text"]);

    // Naming an optional output in `outputs` turns it on: the handler sees
    // which outputs the client asked for.
    let mut named = request(&[all[0]], json!({"max_tokens": 2}));
    named["outputs"] = json!([{"name": "logits"}]);
    let (status, body) = server.post(INFER, &named).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(names(&body["outputs"]), ["logits"], "{body}");
    assert_eq!(output(&body, "logits")["shape"], json!([1, vocab]));
    server.stop().await;
}

/// Greedy decoding that nothing watches token by token reads its ids back a
/// chunk at a time (1, 2, 4, then 8 ids; the model's argmax feeds the next
/// step on the host either way); a stop text that never matches makes the
/// same request decode token by token. Both must give the same tokens,
/// text and finish reason: at lengths that end inside a chunk and at the
/// context's end, for the reference prompts, on the CPU and on the GPU
/// (Mesa lavapipe in CI), and on the GPU the reference's greedy ids. A
/// sampled request draws the same ids on both, waiting for the GPU once a
/// token, and every way of picking gives each token the log probability
/// of the logits it came from.
#[tokio::test(flavor = "multi_thread")]
async fn gpt2_chunked_greedy_decoding_matches_token_by_token() {
    let cpu = TestServer::start(&["gpt2"]).await;
    let repo = model_repository(&["gpt2"]);
    let mut on_gpu = settings(&repo);
    on_gpu.device = DeviceChoice::Gpu;
    let running = edgeserve::app::start(on_gpu).await.unwrap_or_else(|e| {
        panic!("the GPU backend must start (install mesa-vulkan-drivers): {e}")
    });
    let gpu = TestServer::attach(running, repo);
    let all = reference()["prompts"].as_array().unwrap();
    let ends = |body: &Value| {
        let reasons = output(body, "finish_reason")["data"].clone();
        (id_rows(output(body, "tokens")), texts(body), reasons)
    };
    for (device, server) in [("cpu", &cpu), ("gpu", &gpu)] {
        for max_tokens in [1, 6, 13, 1000] {
            // 1000 runs each row into the context (128 positions, which an
            // empty prompt starts with one <|endoftext|> of), about 110
            // tokens: on lavapipe the longest prompt alone, to stay well
            // within the model's 10 s deadline.
            let prompts = match (device, max_tokens) {
                ("gpu", 1000) => &all[2..3],
                _ => &all[..],
            };
            let texts: Vec<&str> = prompts
                .iter()
                .map(|p| p["text"].as_str().unwrap())
                .collect();
            let chunked = json!({"max_tokens": max_tokens, "return_tokens": true, "return_finish_reason": true});
            let mut watched = chunked.clone();
            watched["stop"] = json!("<a stop text this model never writes>");
            let (want, got) = (
                ends(&server.gpt2(&texts, watched).await),
                ends(&server.gpt2(&texts, chunked).await),
            );
            assert_eq!(got, want, "{device}, max_tokens {max_tokens}");
            // Every row runs to its budget (this random model does not end
            // early).
            let lengths: Vec<usize> = got.0.iter().map(Vec::len).collect();
            let budgets: Vec<usize> = prompts
                .iter()
                .map(|p| max_tokens.min(128 - ints(&p["ids"]).len().max(1)))
                .collect();
            assert_eq!(lengths, budgets, "{device}, max_tokens {max_tokens}");
        }
    }
    let texts: Vec<&str> = all.iter().map(|p| p["text"].as_str().unwrap()).collect();
    let body = gpu
        .gpt2(
            &texts,
            json!({"max_tokens": reference()["greedy_tokens"], "return_tokens": true}),
        )
        .await;
    let want: Vec<Vec<i64>> = all.iter().map(|p| ints(&p["greedy_ids"])).collect();
    assert_eq!(id_rows(output(&body, "tokens")), want, "gpu greedy ids");
    // Sampling reads each step's top-k values and ids, and the log-sum-exp
    // for its log probability, back in one wait for the device, and the
    // ids it returns need none: the same draw as on the CPU, and one
    // read-back per token.
    let (_, meta) = gpu.get("/v2").await;
    let name = meta["device"]["name"].as_str().unwrap();
    let read_backs = format!("edgeserve_device_read_backs_total{{device=\"{name}\"}}");
    let sampled = json!({"max_tokens": 5, "top_k": 40, "temperature": 0.8, "seed": 3, "return_tokens": true, "return_logprobs": true});
    let on_cpu = cpu.gpt2(&texts[..1], sampled.clone()).await;
    let before = metric(&gpu, &read_backs).await;
    let on_gpu = gpu.gpt2(&texts[..1], sampled).await;
    assert_eq!(metric(&gpu, &read_backs).await - before, 5.0, "{on_gpu}");
    assert_eq!(
        id_rows(output(&on_gpu, "tokens")),
        id_rows(output(&on_cpu, "tokens")),
        "sampled ids, gpu vs cpu"
    );
    // Each token's log probability is that of the logits it was picked
    // from (the `logits` output holds the first token's), whether the
    // handler read the row whole (sampling without top-k) or only the
    // log-sum-exp beside its pick (greedy, top-k).
    for (device, server) in [("cpu", &cpu), ("gpu", &gpu)] {
        for decoding in [
            json!({}),
            json!({"top_k": 40, "temperature": 0.8, "seed": 5}),
            json!({"temperature": 1.2, "seed": 6}),
        ] {
            let mut parameters = json!({"max_tokens": 1, "return_logits": true, "return_tokens": true, "return_logprobs": true});
            parameters
                .as_object_mut()
                .unwrap()
                .extend(decoding.as_object().unwrap().clone());
            let body = server.gpt2(&texts[..1], parameters).await;
            let logits = floats(&output(&body, "logits")["data"]);
            let token = id_rows(output(&body, "tokens"))[0][0] as usize;
            let best = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = best + logits.iter().map(|x| (x - best).exp()).sum::<f64>().ln();
            let got = floats(&output(&body, "logprobs")["data"])[0];
            let want = logits[token] - lse;
            assert!(
                (got - want).abs() <= 1e-4,
                "{device}, {decoding}: logprob {got}, log-softmax {want}"
            );
        }
    }
    cpu.stop().await;
    gpu.stop().await;
}

/// A repository with gpt2 whose vocabulary names id `end` `<|endoftext|>`,
/// and the real one's id by `end`'s string.
fn end_of_text_at(end: u64) -> edgeserve_e2e::ModelRepository {
    let repo = model_repository(&["gpt2"]);
    let path = repo.path().join("gpt2/1/vocab.json");
    let mut vocab: serde_json::Map<String, Value> =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let word = vocab
        .iter()
        .find_map(|(word, id)| (id.as_u64() == Some(end)).then(|| word.clone()))
        .unwrap();
    let real = vocab.insert("<|endoftext|>".into(), json!(end)).unwrap();
    vocab.insert(word, real);
    std::fs::write(&path, serde_json::to_vec(&vocab).unwrap()).unwrap();
    repo
}

/// Chunked greedy decoding stops where token-by-token decoding stops when
/// the model writes `<|endoftext|>`, dropping the ids read back after it in
/// the same chunk. The bundled random model never writes the real one, so
/// a copy of it names id 677 `<|endoftext|>` (and the real one's id gets
/// 677's string): greedy decoding of "Alice" writes 795 twelve times, then
/// 677, which falls inside the fourth chunk (ids 7 to 14); the empty
/// prompt, now started by 677, writes 677 first (the first chunk). CPU and
/// GPU (Mesa lavapipe in CI).
#[tokio::test(flavor = "multi_thread")]
async fn gpt2_chunked_greedy_decoding_stops_at_end_of_text() {
    let (cpu_repo, gpu_repo) = (end_of_text_at(677), end_of_text_at(677));
    let mut on_gpu = settings(&gpu_repo);
    on_gpu.device = DeviceChoice::Gpu;
    let gpu = edgeserve::app::start(on_gpu).await.unwrap_or_else(|e| {
        panic!("the GPU backend must start (install mesa-vulkan-drivers): {e}")
    });
    let cpu = edgeserve::app::start(settings(&cpu_repo)).await.unwrap();
    let (cpu, gpu) = (
        TestServer::attach(cpu, cpu_repo),
        TestServer::attach(gpu, gpu_repo),
    );
    let prompts = ["Alice", "", "The"];
    for (device, server) in [("cpu", &cpu), ("gpu", &gpu)] {
        for max_tokens in [6, 20] {
            let chunked = json!({"max_tokens": max_tokens, "return_tokens": true, "return_finish_reason": true});
            let mut watched = chunked.clone();
            watched["stop"] = json!("<a stop text this model never writes>");
            let body = server.gpt2(&prompts, chunked).await;
            let (ids, reasons) = (
                id_rows(output(&body, "tokens")),
                output(&body, "finish_reason"),
            );
            let want = server.gpt2(&prompts, watched).await;
            assert_eq!(
                (&ids, reasons, texts(&body)),
                (
                    &id_rows(output(&want, "tokens")),
                    output(&want, "finish_reason"),
                    texts(&want)
                ),
                "{device}, max_tokens {max_tokens}: chunked vs token by token"
            );
            let alice = match max_tokens {
                6 => (vec![795; 6], "length"),
                _ => (vec![795; 12], "eos"),
            };
            assert_eq!(
                (ids[0].clone(), reasons["data"][0].as_str().unwrap()),
                alice,
                "{device}"
            );
            assert_eq!(
                (ids[1].len(), &reasons["data"][1]),
                (0, &json!("eos")),
                "{device}"
            );
            assert_eq!(
                (ids[2].len(), &reasons["data"][2]),
                (max_tokens, &json!("length")),
                "{device}"
            );
        }
    }
    cpu.stop().await;
    gpu.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gpt2_sampling_is_seeded_and_bounded() {
    let server = TestServer::start(&["gpt2"]).await;
    let prompt = &reference()["prompts"][0];
    let text = prompt["text"].as_str().unwrap();
    let greedy = ints(&prompt["greedy_ids"]);

    // max_tokens is respected (this random model practically never emits
    // <|endoftext|> early, and greedy is deterministic).
    for n in [0, 1, 5] {
        let body = server
            .gpt2(&[text], json!({"max_tokens": n, "return_tokens": true}))
            .await;
        assert_eq!(id_rows(output(&body, "tokens")), [greedy[..n].to_vec()]);
    }
    // The default is the config's max_tokens (32); the context (128
    // positions) caps any request.
    let body = server.gpt2(&[text], json!({"return_tokens": true})).await;
    assert_eq!(id_rows(output(&body, "tokens"))[0].len(), 32);
    let body = server
        .gpt2(&[text], json!({"max_tokens": 1000, "return_tokens": true}))
        .await;
    let prompt_len = ints(&prompt["ids"]).len();
    assert_eq!(id_rows(output(&body, "tokens"))[0].len(), 128 - prompt_len);

    let sample = |seed: i64| json!({"max_tokens": 24, "temperature": 1.5, "top_k": 50, "top_p": 0.95, "seed": seed, "return_tokens": true});
    let first = server.gpt2(&[text], sample(7)).await;
    let again = server.gpt2(&[text], sample(7)).await;
    assert_eq!(
        output(&first, "tokens"),
        output(&again, "tokens"),
        "same seed, same tokens"
    );
    assert_eq!(texts(&first), texts(&again));
    // Different seeds: not every one of four draws of 24 tokens can agree.
    let mut distinct = std::collections::BTreeSet::new();
    for seed in [1, 2, 3, 4] {
        distinct.insert(texts(&server.gpt2(&[text], sample(seed)).await));
    }
    assert!(distinct.len() > 1, "four seeds gave one text: {distinct:?}");
    // A prompt's draw does not depend on the prompts after it in a batch.
    let batch = server.gpt2(&[text, "Down"], sample(7)).await;
    assert_eq!(texts(&batch)[0], texts(&first)[0]);

    // Sampling restricted to one candidate is greedy decoding.
    for narrow in [
        json!({"max_tokens": 20, "top_k": 1, "seed": 3, "return_tokens": true}),
        json!({"max_tokens": 20, "top_p": 1e-9, "seed": 3, "return_tokens": true}),
        json!({"max_tokens": 20, "temperature": 0, "return_tokens": true}),
    ] {
        let body = server.gpt2(&[text], narrow.clone()).await;
        assert_eq!(
            id_rows(output(&body, "tokens")),
            std::slice::from_ref(&greedy),
            "{narrow}"
        );
    }
    // Without a seed, sampling still works (a fresh seed per request). A
    // draw may meet `<|endoftext|>` before its 4 tokens and stop there (the
    // suite once drew it first), so each gives at most 4, and one of a few
    // gives all 4.
    let mut longest = 0;
    for _ in 0..8 {
        let body = server
            .gpt2(
                &[text],
                json!({"max_tokens": 4, "temperature": 1.0, "return_tokens": true}),
            )
            .await;
        let drawn = id_rows(output(&body, "tokens"))[0].len();
        assert!(drawn <= 4, "{drawn} tokens drawn for max_tokens 4");
        longest = longest.max(drawn);
        if longest == 4 {
            break;
        }
    }
    assert_eq!(longest, 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gpt2_rejects_bad_parameters_and_long_prompts() {
    let server = TestServer::start(&["gpt2"]).await;
    for (key, value) in [
        ("max_tokens", json!(-1)),
        ("max_tokens", json!("ten")),
        ("temperature", json!(-0.5)),
        ("top_k", json!(-2)),
        ("top_p", json!(0)),
        ("top_p", json!(1.5)),
        ("seed", json!("abc")),
        ("return_logits", json!("yes")),
    ] {
        let mut parameters = json!({});
        parameters[key] = value.clone();
        let (status, body) = server.post(INFER, &request(&["hi"], parameters)).await;
        assert_eq!(status, 400, "{key} = {value}: {body}");
        assert!(error_text(&body).contains(key), "{key}: {body}");
    }
    // Longer than the 128-position context.
    let long = "Alice ".repeat(200);
    let (status, body) = server.post(INFER, &request(&[&long], json!({}))).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("context"), "{body}");
    // Still serving.
    server.gpt2(&["ok"], json!({"max_tokens": 1})).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn generate_route_takes_forms_and_json() {
    let server = TestServer::start(&["gpt2"]).await;
    let greedy_tokens = &reference()["greedy_tokens"];
    let prompt = &reference()["prompts"][1];
    let text = prompt["text"].as_str().unwrap();
    let greedy = prompt["greedy_text"].as_str().unwrap();
    let n = greedy_tokens.to_string();

    let (status, body) = server
        .generate_form(&[("text", text), ("max_tokens", &n)])
        .await;
    assert_eq!(status, 200, "{body}");
    // The prompt followed by the continuation, as the seed's Flask app.
    let full = format!("{text}{greedy}");
    assert_eq!(body, json!({ "generated_text": full }));

    let (status, body) = server
        .post(
            "/generate",
            &json!({"text": text, "max_tokens": greedy_tokens}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "generated_text": full }));

    // Sampling options reach the model: the same as over OIP.
    let (status, body) = server
        .generate_form(&[
            ("text", text),
            ("max_tokens", "12"),
            ("temperature", "0.8"),
            ("top_k", "40"),
            ("top_p", "0.9"),
            ("seed", "42"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    let oip = server
        .gpt2(
            &[text],
            json!({"max_tokens": 12, "temperature": 0.8, "top_k": 40, "top_p": 0.9, "seed": 42}),
        )
        .await;
    assert_eq!(body["generated_text"], format!("{text}{}", texts(&oip)[0]));
    let (status, json_body) = server
        .post(
            "/generate",
            &json!({"text": text, "max_tokens": 12, "temperature": 0.8, "top_k": 40, "top_p": 0.9, "seed": 42}),
        )
        .await;
    assert_eq!(status, 200, "{json_body}");
    assert_eq!(json_body, body);

    // `curl -d '{...}'` sends JSON with the form content type.
    let form = ("content-type", "application/x-www-form-urlencoded");
    let sent = json!({"text": text, "max_tokens": greedy_tokens}).to_string();
    let response = server.send_with("/generate", form, sent).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["generated_text"], full);

    // Missing text: 400, form and JSON.
    let (status, body) = server.generate_form(&[("max_tokens", "3")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("text"), "{body}");
    let (status, body) = server.post("/generate", &json!({"max_tokens": 3})).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("text"), "{body}");
    let (status, body) = server.post_raw("/generate", b"{not json".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    // A bad option is the model's 400, as over OIP.
    let (status, body) = server
        .post("/generate", &json!({"text": "hi", "top_p": 2.0}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("top_p"), "{body}");
    // A model this server does not have: 404 naming it.
    let (status, body) = server
        .post("/generate", &json!({"text": "hi", "model": "gpt5"}))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(error_text(&body).contains("gpt5"), "{body}");
    server.stop().await;
}

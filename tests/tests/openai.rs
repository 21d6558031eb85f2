//! Language-model clients on loopback: the official `openai` Python package
//! against `/v1`, an SSE client on the OIP generate extension, `curl -F` on
//! the Flask-style `/generate`, and a client that hangs up mid-stream.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, error_text, metric, output, strings};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

/// The `data:` payloads of a Server-Sent Events body, read as it arrives.
async fn sse_events(response: reqwest::Response) -> Vec<String> {
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    while let Some(bytes) = body.next().await {
        buffer.push_str(std::str::from_utf8(&bytes.unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    events.push(data.trim_start().to_owned());
                }
            }
        }
    }
    events
}

/// A gpt2 server and its OIP continuation of `prompt`: the text each other
/// front door must answer.
async fn gpt2_continuing(prompt: &str, max_tokens: u32) -> (TestServer, String) {
    let server = TestServer::start(&["gpt2"]).await;
    let body = json!({
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [prompt]}],
        "parameters": {"max_tokens": max_tokens},
    });
    let (status, body) = server.post("/v2/models/gpt2/infer", &body).await;
    assert_eq!(status, 200, "{body}");
    let continuation = output(&body, "text")["data"][0]
        .as_str()
        .unwrap()
        .to_owned();
    (server, continuation)
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_client_works() {
    let server = TestServer::start(&["gpt2", "minilm"]).await;
    server
        .run_python("openai_compat.py", "openai compatibility: OK")
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn generate_extension_streams_what_it_answers() {
    let prompt = "The quick brown fox";
    let (server, expected) = gpt2_continuing(prompt, 10).await;
    let request = json!({"text_input": prompt, "parameters": {"max_tokens": 10, "details": true}});

    let (status, whole) = server
        .post("/v2/models/gpt2/versions/1/generate", &request)
        .await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["text_output"], expected.as_str());
    assert_eq!(
        (&whole["model_name"], &whole["model_version"]),
        (&json!("gpt2"), &json!("1"))
    );
    let details = &whole["details"];
    let generated = details["generated_tokens"].as_u64().unwrap();
    assert!(["length", "eos"].contains(&details["finish_reason"].as_str().unwrap()));
    let counted = json!({"max_tokens": 10, "return_tokens": true});
    let oip = json!({
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [prompt]}],
        "parameters": counted,
    });
    let (_, oip) = server.post("/v2/models/gpt2/infer", &oip).await;
    assert_eq!(
        details["prompt_tokens"],
        output(&oip, "prompt_tokens")["shape"][1]
    );
    assert_eq!(
        details["generated_tokens"],
        output(&oip, "tokens")["shape"][1]
    );
    let logprobs = details["logprobs"].as_array().unwrap();
    assert_eq!(logprobs.len() as u64, generated);
    assert!(
        logprobs.iter().all(|p| p.as_f64().unwrap() <= 0.0),
        "{details}"
    );

    let response = server
        .send_json("/v2/models/gpt2/generate_stream", &request)
        .await;
    let events: Vec<Value> = sse_events(response)
        .await
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (last, pieces) = events.split_last().unwrap();
    assert_eq!(last["done"], true);
    assert_eq!(last["details"], *details);
    assert!(pieces.iter().all(|e| e["done"] == false));
    let streamed: String = pieces
        .iter()
        .map(|e| e["text_output"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, expected);

    // Stop sequences end the text, without the stop text.
    if expected.len() > 3 {
        let stop = &expected[2..4];
        let (status, body) = server
            .post(
                "/v2/models/gpt2/generate",
                &json!({"text_input": prompt, "parameters": {"max_tokens": 10, "stop": [stop], "details": true}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["text_output"],
            &expected[..expected.find(stop).unwrap()]
        );
        assert_eq!(body["details"]["finish_reason"], "stop");
    }

    // Bad input: a 400 in the extension's error shape, and still serving.
    for (bad, words) in [
        (json!({"text_input": ""}), "empty"),
        (
            json!({"text_input": "x", "parameters": {"max_tokens": -1}}),
            "max_tokens",
        ),
        (
            json!({"text_input": "x", "parameters": {"temperature": -1}}),
            "temperature",
        ),
        (json!({"text_input": "x", "colour": 1}), "colour"),
        (json!({"text_input": ["x"]}), "text_input"),
        (json!({"text_input": "word ".repeat(400)}), "context"),
    ] {
        let (status, body) = server.post("/v2/models/gpt2/generate_stream", &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(error_text(&body).contains(words), "{bad}: {body}");
    }
    let (status, _) = server.post("/v2/models/gpt2/generate", &request).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flask_generate_takes_curl_multipart() {
    let prompt = "Hello world";
    let (server, continuation) = gpt2_continuing(prompt, 8).await;
    let curl = |fields: &[&str]| {
        let mut command = tokio::process::Command::new("curl");
        command.args(["-sS", "-w", "\n%{http_code}"]);
        for field in fields {
            command.args(["-F", field]);
        }
        command.arg(format!("{}/generate", server.base));
        async move {
            let out = command.output().await.expect("curl runs");
            let text = String::from_utf8(out.stdout).unwrap();
            let (body, status) = text.rsplit_once('\n').unwrap();
            (
                status.to_owned(),
                serde_json::from_str::<Value>(body).unwrap(),
            )
        }
    };
    // Like the Flask app: the prompt followed by the continuation.
    let labels = "{model=\"gpt2\",version=\"1\"}";
    let series = [
        format!("edgeserve_generated_tokens_total{labels}"),
        format!("edgeserve_time_to_first_token_seconds_count{labels}"),
        format!("edgeserve_time_per_output_token_seconds_count{labels}"),
    ];
    let mut before = Vec::new();
    for series in &series {
        before.push(metric(&server, series).await);
    }
    let (status, body) = curl(&[&format!("text={prompt}"), "max_tokens=8"]).await;
    assert_eq!(status, "200", "{body}");
    assert_eq!(body["generated_text"], format!("{prompt}{continuation}"));
    // Counted in the generation metrics like every generation: its tokens,
    // one first token, and the time per token of the others.
    let counted = json!({
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [prompt]}],
        "parameters": {"max_tokens": 8, "return_tokens": true},
    });
    let (_, oip) = server.post("/v2/models/gpt2/infer", &counted).await;
    let tokens = output(&oip, "tokens")["shape"][1].as_f64().unwrap();
    assert!(tokens >= 2.0, "{oip}");
    let mut moved = Vec::new();
    for (series, before) in series.iter().zip(before) {
        moved.push(metric(&server, series).await - before);
    }
    assert_eq!(moved, [tokens, 1.0, tokens - 1.0], "{series:?}");
    let (status, body) = curl(&[
        &format!("text={prompt}"),
        "max_tokens=8",
        "return_full_text=false",
    ])
    .await;
    assert_eq!(status, "200", "{body}");
    assert_eq!(body["generated_text"], continuation.as_str());

    // Another content type: 415 naming the ones /generate reads.
    let text = ("content-type", "text/plain");
    let response = server.send_with("/generate", text, "text=hi").await;
    assert_eq!(response.status(), 415);
    let body: Value = response.json().await.unwrap();
    for accepted in [
        "multipart/form-data",
        "application/x-www-form-urlencoded",
        "application/json",
    ] {
        assert!(error_text(&body).contains(accepted), "{body}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hanging_up_cancels_the_stream() {
    let server = TestServer::start(&["gpt2"]).await;
    // 16 samples of up to 120 tokens, two at a time on gpt2's two
    // instances: far more than what is done by the time the first chunk
    // arrives.
    let request = json!({
        "model": "gpt2", "prompt": "Once", "max_tokens": 120, "n": 16,
        "temperature": 1.0, "seed": 1, "stream": true,
    });
    let most = 16.0 * 120.0;
    let tokens = "edgeserve_generated_tokens_total{model=\"gpt2\",version=\"1\"}";
    let cancelled = "edgeserve_cancelled_streams_total{model=\"gpt2\",version=\"1\"}";
    let response = server.send_json("/v1/completions", &request).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body); // hang up

    // The model stops at its next token, its instance goes back to the
    // pool and the in-flight gauge drops, within a second.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let idle = metric(&server, "edgeserve_inflight_requests").await == 0.0
            && metric(&server, cancelled).await == 1.0;
        if idle {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream still runs a second after the hang-up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let generated = metric(&server, tokens).await;
    assert!(
        generated < most,
        "{generated} tokens: generation went on for nobody"
    );

    // A new request is served at once, and nothing more was generated for
    // the one that hung up.
    let (status, body) = server
        .post(
            "/v1/completions",
            &json!({"model": "gpt2", "prompt": "Once", "max_tokens": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let served = body["usage"]["completion_tokens"].as_f64().unwrap();
    assert_eq!(metric(&server, tokens).await, generated + served);
    server.stop().await;
}

/// A server over a repository with `models`, after `edit` changed the
/// repository (e.g. a model's `config.toml`), forwarding to `upstream`
/// when given.
async fn server_with(
    models: &[&str],
    edit: impl FnOnce(&std::path::Path),
    upstream: Option<&str>,
) -> TestServer {
    let repo = edgeserve_e2e::model_repository(models);
    edit(&repo);
    let mut settings = common::settings(&repo);
    settings.upstream = upstream.map(|url| upstream_within(url, Duration::from_secs(60)));
    let running = edgeserve::app::start(settings).await.unwrap();
    TestServer::attach(running, repo)
}

/// Offloading to `url`, waiting at most `timeout` for it.
fn upstream_within(url: &str, timeout: Duration) -> edgeserve::offload::UpstreamSettings {
    edgeserve::offload::UpstreamSettings {
        url: url.to_owned(),
        connect_timeout: Duration::from_secs(5),
        timeout,
        offload_on_queue_timeout: false,
        ca: None,
    }
}

/// Sets `key = value` in `model`'s `config.toml` in `repo`, where the key
/// is already set.
fn configure(repo: &std::path::Path, model: &str, key: &str, value: &str) {
    let path = repo.join(model).join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find(|line| line.starts_with(&format!("{key} =")))
        .unwrap_or_else(|| panic!("{key} is not set in {}", path.display()));
    std::fs::write(&path, text.replace(line, &format!("{key} = {value}"))).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_model_is_a_503_the_openai_client_raises() {
    // One instance, no queue: while a long generation holds the instance,
    // every other request finds the model busy at once.
    let server = server_with(
        &["gpt2"],
        |repo| {
            configure(repo, "gpt2", "instances", "1");
            configure(repo, "gpt2", "queue_timeout_ms", "0");
            configure(repo, "gpt2", "timeout_ms", "120000");
        },
        None,
    )
    .await;
    server.run_python("openai_busy.py", "openai busy: OK").await;
    server.stop().await;
}

/// The text of an OpenAI completion stream's events, by choice, and
/// whether it ended with `[DONE]`.
fn streamed_choices(events: &[String], field: &str) -> (Vec<String>, bool) {
    let mut texts: Vec<String> = Vec::new();
    for event in events.iter().filter(|e| *e != "[DONE]") {
        let chunk: Value = serde_json::from_str(event).unwrap();
        for choice in chunk["choices"].as_array().unwrap() {
            let index = choice["index"].as_u64().unwrap() as usize;
            if texts.len() <= index {
                texts.resize(index + 1, String::new());
            }
            let text = match field {
                "delta" => choice["delta"]["content"].as_str(),
                _ => choice["text"].as_str(),
            };
            texts[index].push_str(text.unwrap_or_default());
        }
    }
    (texts, events.last().map(String::as_str) == Some("[DONE]"))
}

#[tokio::test(flavor = "multi_thread")]
async fn choices_run_side_by_side_and_each_is_reproducible() {
    let server = TestServer::start(&["gpt2"]).await;
    let prompt = "Once upon";
    // n = 3 on gpt2's 2 instances: more choices than instances.
    let request = json!({
        "model": "gpt2", "prompt": prompt, "n": 3, "max_tokens": 12,
        "temperature": 1.0, "seed": 42,
    });
    let (status, first) = server.post("/v1/completions", &request).await;
    assert_eq!(status, 200, "{first}");
    let choices = first["choices"].as_array().unwrap();
    let indices: Vec<u64> = choices
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [0, 1, 2]);
    let texts: Vec<&str> = choices
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert!(
        texts[0] != texts[1] || texts[1] != texts[2],
        "three samples, one text: {texts:?}"
    );
    // The same seed, the same text for each choice, whichever instance ran
    // it: again, and equal to the elements of one batched OIP request with
    // that seed.
    let (_, again) = server.post("/v1/completions", &request).await;
    assert_eq!(again["choices"], first["choices"]);
    let batched = json!({
        "inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": [prompt, prompt, prompt]}],
        "parameters": {"max_tokens": 12, "temperature": 1.0, "seed": 42},
    });
    let (status, oip) = server.post("/v2/models/gpt2/infer", &batched).await;
    assert_eq!(status, 200, "{oip}");
    assert_eq!(output(&oip, "text")["data"], json!(texts));

    // Two choices on two free instances run at once: the second one's text
    // starts arriving before the first one's is done.
    let response = server
        .send_json(
            "/v1/completions",
            &json!({
                "model": "gpt2", "prompt": "Once", "n": 2, "max_tokens": 120,
                "temperature": 1.0, "seed": 3, "stream": true,
            }),
        )
        .await;
    let events = sse_events(response).await;
    let order: Vec<u64> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter(|chunk| chunk["choices"][0]["finish_reason"].is_null())
        .map(|chunk| chunk["choices"][0]["index"].as_u64().unwrap())
        .collect();
    let first_of_second = order.iter().position(|&i| i == 1).unwrap();
    let last_of_first = order.iter().rposition(|&i| i == 0).unwrap();
    assert!(
        first_of_second < last_of_first,
        "the choices ran one after the other: {order:?}"
    );
    let (streamed, done) = streamed_choices(&events, "text");
    assert!(done);
    let (_, whole) = server
        .post(
            "/v1/completions",
            &json!({"model": "gpt2", "prompt": "Once", "n": 2, "max_tokens": 120, "temperature": 1.0, "seed": 3}),
        )
        .await;
    let whole = strings(&whole["choices"], "text");
    assert_eq!(streamed, whole);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn generation_for_a_missing_model_is_relayed_from_the_upstream() {
    // The back serves gpt2; the front does not, and names the back as its
    // upstream.
    let back = TestServer::start(&["gpt2"]).await;
    let front = server_with(&["linear"], |_| {}, Some(&back.base)).await;
    let relayed = |path: &'static str, body: Value| {
        let request = front.request(Method::POST, path).json(&body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(
                response.headers()[edgeserve::offload::SERVED_BY],
                "upstream",
                "{path}"
            );
            // Relayed as it streams, not gathered into one body first.
            assert!(
                !response.headers().contains_key("content-length"),
                "{path}: {:?}",
                response.headers()
            );
            response
        }
    };
    let prompt = "The quick brown fox";

    // Completions, streamed and whole, equal the back's own answer.
    let completion = json!({"model": "gpt2", "prompt": prompt, "max_tokens": 10});
    let (status, expected) = back.post("/v1/completions", &completion).await;
    assert_eq!(status, 200, "{expected}");
    let expected = expected["choices"][0]["text"].as_str().unwrap().to_owned();
    let mut streamed = completion.clone();
    streamed["stream"] = json!(true);
    let events = sse_events(relayed("/v1/completions", streamed).await).await;
    assert_eq!(
        streamed_choices(&events, "text"),
        (vec![expected.clone()], true)
    );
    let whole: Value = relayed("/v1/completions", completion)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(whole["choices"][0]["text"], expected.as_str());

    // Chat, streamed.
    let chat =
        json!({"model": "gpt2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8});
    let (status, answer) = back.post("/v1/chat/completions", &chat).await;
    assert_eq!(status, 200, "{answer}");
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let events = sse_events(relayed("/v1/chat/completions", streamed).await).await;
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        streamed_choices(&events, "delta"),
        (vec![content.to_owned()], true)
    );

    // The generate extension's stream.
    let request = json!({"text_input": prompt, "parameters": {"max_tokens": 10}});
    let events = sse_events(relayed("/v2/models/gpt2/generate_stream", request).await).await;
    let events: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (last, pieces) = events.split_last().unwrap();
    assert_eq!(last["done"], true);
    let text: String = pieces
        .iter()
        .map(|e| e["text_output"].as_str().unwrap())
        .collect();
    assert_eq!(text, expected);

    // The Flask route forwards too.
    let (status, body) = front
        .post("/generate", &json!({"text": prompt, "max_tokens": 10}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["generated_text"], format!("{prompt}{expected}"));

    let offloaded = "edgeserve_offloaded_requests_total{model=\"gpt2\",reason=\"missing\"}";
    assert_eq!(metric(&front, offloaded).await, 5.0);
    front.stop().await;
    back.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relayed_stream_may_outlast_the_upstream_timeout_while_it_keeps_coming() {
    // The upstream decodes on the GPU backend (lavapipe in CI): each token
    // takes milliseconds there, so a quarter of the whole stream is a
    // timeout of hundreds of milliseconds, far above the wait for the head
    // or any one token even on a loaded machine. On the CPU the tiny model
    // streams all of it in a few milliseconds, too close to scheduling noise.
    let back_repo = edgeserve_e2e::model_repository(&["gpt2"]);
    let mut on_gpu = common::settings(&back_repo);
    on_gpu.device = edgeserve::devices::DeviceChoice::Gpu;
    let running = edgeserve::app::start(on_gpu).await.unwrap_or_else(|e| {
        panic!("the GPU backend must start (install mesa-vulkan-drivers): {e}")
    });
    let back = TestServer::attach(running, back_repo);
    let request = json!({
        "text_input": "The quick brown fox",
        "parameters": {"max_tokens": 60}
    });
    let path = "/v2/models/gpt2/generate_stream";
    let started = Instant::now();
    let direct = sse_events(
        back.request(Method::POST, path)
            .json(&request)
            .send()
            .await
            .unwrap(),
    )
    .await;
    // A quarter of the whole stream (60 tokens): far longer than the wait
    // for any one token, far shorter than all of them.
    let timeout = started.elapsed() / 4;
    let repo = edgeserve_e2e::model_repository(&["linear"]);
    let mut settings = common::settings(&repo);
    settings.upstream = Some(upstream_within(&back.base, timeout));
    let front = TestServer::attach(edgeserve::app::start(settings).await.unwrap(), repo);

    let started = Instant::now();
    let response = front.send_json(path, &request).await;
    let relayed = sse_events(response).await;
    let took = started.elapsed();
    assert_eq!(
        relayed, direct,
        "the relayed stream is the upstream's, whole"
    );
    assert!(
        took > timeout,
        "the premise: the stream took longer ({took:?}) than the upstream timeout ({timeout:?})"
    );
    front.stop().await;
    back.stop().await;
}

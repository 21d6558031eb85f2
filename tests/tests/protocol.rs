//! The Open Inference Protocol surface, driven over real HTTP on loopback.

mod common;

use common::{
    TestServer, assert_matches_sklearn, digits_reference, error_text, floats, ints, names, output,
};
use edgeserve_e2e::MAX_BODY;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn health_server_and_model_metadata() {
    let server = TestServer::start(&["linear", "digits"]).await;
    assert_eq!(
        server.get("/v2/health/live").await,
        (200, json!({"live": true}))
    );
    assert_eq!(
        server.get("/v2/health/ready").await,
        (200, json!({"ready": true}))
    );

    let (status, meta) = server.get("/v2").await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "edgeserve");
    assert!(
        meta["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("binary_tensor_data"))
    );
    assert_eq!(meta["device"]["kind"], "cpu");

    let (status, meta) = server.get("/v2/models/digits").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["name"], "digits");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}])
    );
    assert_eq!(names(&meta["outputs"]), ["probabilities", "label"]);

    assert_eq!(
        server.get("/v2/models/linear/versions/1").await.1["name"],
        "linear"
    );
    assert_eq!(
        server.get("/v2/models/linear/ready").await,
        (200, json!({"name": "linear", "ready": true}))
    );
    assert_eq!(
        server.get("/v2/models/linear/versions/1/ready").await.0,
        200
    );

    let (status, body) = server.get("/v2/models/nope").await;
    assert_eq!(status, 404);
    assert!(error_text(&body).contains("unknown model 'nope'"), "{body}");
    let (status, body) = server.get("/v2/models/linear/versions/7").await;
    assert_eq!(status, 404);
    assert!(error_text(&body).contains("no version 7"), "{body}");
    let (status, body) = server.get("/v2/models/nope/ready").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.get("/v2/no/such/route").await;
    assert_eq!(status, 404);
    assert!(error_text(&body).contains("/v2/no/such/route"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn linear_regression_answers_in_json() {
    let server = TestServer::start(&["linear"]).await;
    let ys = server.linear(&[1.0, 2.0, -3.0, 0.0]).await;
    let expected = [0.4, 0.5, 0.0, 0.3];
    for (y, e) in ys.iter().zip(expected) {
        assert!((y - e).abs() < 1e-6, "{ys:?} vs {expected:?}");
    }

    // Nested data, a request id, an explicit version and an output filter.
    let (status, body) = server
        .post(
            "/v2/models/linear/versions/1/infer",
            &json!({
                "id": "req-42",
                "inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [[10.0], [20.0]]}],
                "outputs": [{"name": "y"}]
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "req-42");
    assert_eq!(body["model_name"], "linear");
    assert_eq!(body["model_version"], "1");
    assert_eq!(body["outputs"][0]["shape"], json!([2, 1]));
    assert_eq!(body["outputs"][0]["datatype"], "FP32");
    let ys = floats(&body["outputs"][0]["data"]);
    assert!(
        (ys[0] - 1.3).abs() < 1e-5 && (ys[1] - 2.3).abs() < 1e-5,
        "{ys:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn digits_reproduces_sklearn_in_json_and_binary() {
    let server = TestServer::start(&["digits"]).await;
    let reference = digits_reference();
    let inputs = &reference["inputs"];
    let n = inputs.as_array().unwrap().len();

    let (status, body) = server.digits(inputs, n).await;
    assert_eq!(status, 200, "{body}");
    let (probabilities, label) = (output(&body, "probabilities"), output(&body, "label"));
    assert_eq!(probabilities["shape"], json!([n, 10]));
    assert_eq!(label["datatype"], "INT64");
    assert_matches_sklearn(
        &floats(&probabilities["data"]),
        &ints(&label["data"]),
        &reference,
    );

    // The binary tensor extension, both ways.
    let pixels: Vec<u8> = inputs
        .as_array()
        .unwrap()
        .iter()
        .flat_map(floats)
        .flat_map(|p| (p as f32).to_le_bytes())
        .collect();
    let head = serde_json::to_vec(&json!({
        "inputs": [{"name": "pixels", "shape": [n, 64], "datatype": "FP32", "parameters": {"binary_data_size": pixels.len()}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}, {"name": "label", "parameters": {"binary_data": true}}]
    }))
    .unwrap();
    let mut body = head.clone();
    body.extend_from_slice(&pixels);
    let framing = head.len().to_string();
    let framing = ("Inference-Header-Content-Length", framing.as_str());
    let response = server
        .send_with("/v2/models/digits/infer", framing, body)
        .await;
    assert_eq!(response.status(), 200);
    let json_len: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    let header: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    let outputs = header["outputs"].as_array().unwrap();
    assert_eq!(outputs[0]["name"], "probabilities");
    let p_len = outputs[0]["parameters"]["binary_data_size"]
        .as_u64()
        .unwrap() as usize;
    let l_len = outputs[1]["parameters"]["binary_data_size"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!((p_len, l_len), (n * 10 * 4, n * 8));
    let data = &bytes[json_len..];
    let probabilities: Vec<f64> = data[..p_len]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    let labels: Vec<i64> = data[p_len..]
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_matches_sklearn(&probabilities, &labels, &reference);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_precise_errors_and_the_server_keeps_serving() {
    let server = TestServer::start(&["linear", "digits"]).await;
    let infer = "/v2/models/linear/infer";
    let x = |shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]});
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            x(json!([2, 1]), "FP32", json!([1.0])),
            400,
            "input 'x': shape [2, 1] needs 2 elements but data has 1",
        ),
        (
            x(json!([1, 1]), "INT32", json!([1])),
            400,
            "input 'x' of model linear:1 must be FP32, got INT32",
        ),
        (
            x(json!([1, 2]), "FP32", json!([1.0, 2.0])),
            400,
            "input 'x' of model linear:1 must have shape [-1, 1]",
        ),
        (
            x(json!([1, 1]), "FP32", json!(["one"])),
            400,
            "data element 0 is \"one\", expected a number",
        ),
        (
            x(json!([1, 1]), "BOOL", json!([true])),
            400,
            "datatype BOOL is not supported",
        ),
        (json!({"inputs": []}), 400, "model linear:1 needs input 'x'"),
        (
            json!({"inputs": [{"name": "z", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}),
            400,
            "model linear:1 has no input 'z' (its inputs: x)",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}], "outputs": [{"name": "w"}]}),
            400,
            "model linear:1 has no output 'w'",
        ),
        (
            json!({"nothing": true}),
            400,
            "malformed request JSON: missing field `inputs`",
        ),
    ];
    for (body, status, message) in cases {
        let (got, response) = server.post(infer, &body).await;
        assert_eq!(got, status, "{body} -> {response}");
        assert!(
            error_text(&response).contains(message),
            "{body}: '{}' lacks '{message}'",
            error_text(&response)
        );
    }

    let (status, body) = server.post_raw(infer, b"{\"inputs\": [".to_vec()).await;
    assert_eq!(status, 400);
    assert!(
        error_text(&body).starts_with("malformed request JSON"),
        "{body}"
    );

    // A model or version this server does not have: 404.
    for (path, message) in [
        ("/v2/models/ghost/infer", Some("unknown model 'ghost'")),
        ("/v2/models/linear/versions/9/infer", None),
    ] {
        let (status, body) = server
            .post(path, &x(json!([1, 1]), "FP32", json!([1.0])))
            .await;
        assert_eq!(status, 404);
        if let Some(message) = message {
            assert!(error_text(&body).contains(message));
        }
    }

    // Over the body limit: a 413, declared or streamed.
    let big = vec![b' '; MAX_BODY + 1];
    let (status, body) = server.post_raw(infer, big).await;
    assert_eq!(status, 413);
    assert!(
        error_text(&body).contains("exceeds the 1048576 byte limit"),
        "{body}"
    );
    let chunks =
        futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b' '; MAX_BODY / 2])));
    let response = common::client()
        .post(format!("{}{infer}", server.base))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // Binary framing errors.
    let framing = ("Inference-Header-Content-Length", "999");
    let response = server.send_with(infer, framing, "{}").await;
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("inference-header-content-length is 999")
    );

    // Wrong method.
    let response = server.request(Method::DELETE, infer).send().await.unwrap();
    assert_eq!(response.status(), 405);

    // Everyone else is still served.
    assert_eq!(server.linear(&[1.0]).await.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_latency_and_instances() {
    let server = TestServer::start(&["linear"]).await;
    for _ in 0..3 {
        server.linear(&[1.0, 2.0]).await;
    }
    let (status, _) = server
        .post("/v2/models/linear/infer", &json!({"inputs": []}))
        .await;
    assert_eq!(status, 400);
    let (status, text) = server.get_text("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"edgeserve_requests_total{model="linear",version="1",outcome="success",protocol="http"} 3"#,
        r#"edgeserve_requests_total{model="linear",version="1",outcome="failure",protocol="http"} 1"#,
        r#"edgeserve_inferences_total{model="linear",version="1"} 6"#,
        r#"edgeserve_instances{model="linear",version="1"} 2"#,
        r#"edgeserve_compute_duration_seconds_count{model="linear",version="1"} 3"#,
        r#"edgeserve_queue_duration_seconds_count{model="linear",version="1"} 3"#,
        "edgeserve_inflight_requests 0",
        // `linear`'s product is far too small for the packed kernel.
        "edgeserve_cpu_packed_weight_bytes 0",
        r#"edgeserve_model_weight_bytes{model="linear",version="1"} 8"#,
        r#"edgeserve_device_info{kind="cpu""#,
    ] {
        assert!(text.contains(line), "metrics lack {line}:\n{text}");
    }
    server.stop().await;
}

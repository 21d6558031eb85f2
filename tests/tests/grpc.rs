//! The Open Inference Protocol over gRPC, on a real server on loopback:
//! Triton's own gRPC client (tests/python/grpc_compat.py) against the REST
//! answers, and a tonic client for what tritonclient cannot show (the
//! server honouring `grpc-timeout`, the health service, graceful shutdown
//! with a call in flight, API keys).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestServer;
use edgeserve::offload::UpstreamSettings;
use edgeserve::server::grpc::proto::ModelInferRequest;
use edgeserve::server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use edgeserve::server::grpc::proto::infer_parameter::ParameterChoice;
use edgeserve::server::grpc::proto::model_infer_request::InferInputTensor;
use edgeserve::server::grpc::proto::{InferParameter, InferTensorContents};
use tonic::Code;
use tonic::transport::Channel;

/// The server's message limit: above gRPC's 4 MiB default, so a 6 MB
/// request passes and a larger one is refused.
const MAX_BODY: usize = 16 << 20;

/// A server over `models` with gRPC on a free port.
async fn start(models: &[&str]) -> (TestServer, SocketAddr) {
    start_with(models, |_| ()).await
}

/// [`start`] with settings changed by `configure`.
async fn start_with(
    models: &[&str],
    configure: impl FnOnce(&mut edgeserve::app::Settings),
) -> (TestServer, SocketAddr) {
    let repo = edgeserve_e2e::model_repository(models);
    let mut settings = common::settings(&repo);
    settings.grpc_port = Some(0);
    settings.max_body_bytes = MAX_BODY;
    configure(&mut settings);
    let running = edgeserve::app::start(settings)
        .await
        .expect("server starts");
    let grpc = running.grpc_addr().expect("gRPC is on");
    (TestServer::attach(running, repo), grpc)
}

async fn client(addr: SocketAddr) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
}

/// faulty's `action` as a gRPC request (raw contents).
fn faulty(action: i32) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "faulty".into(),
        inputs: vec![InferInputTensor {
            name: "action".into(),
            datatype: "INT32".into(),
            shape: vec![1],
            ..Default::default()
        }],
        raw_input_contents: vec![action.to_le_bytes().to_vec().into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tritonclient_grpc_speaks_to_edgeserve() {
    let weights = edgeserve_e2e::repo_root().join("examples/models/minilm/1/model.safetensors");
    assert!(
        weights.is_file(),
        "{} is missing: run scripts/fetch-minilm.sh (scripts/test.sh does)",
        weights.display()
    );
    let (server, grpc) = start(&["linear", "digits", "minilm", "faulty"]).await;
    let grpc = grpc.to_string();
    let reference = edgeserve_e2e::test_data("digits_reference.json");
    let max_body = MAX_BODY.to_string();
    common::run_python(
        "grpc_compat.py",
        &[
            grpc.as_ref(),
            server.authority().as_ref(),
            reference.as_os_str(),
            max_body.as_ref(),
        ],
        "tritonclient.grpc compatibility: OK",
    )
    .await;
    server.stop().await;
}

/// The server's own answer to `message` sent with `grpc-timeout: timeout`:
/// over plain HTTP/2, since gRPC clients (tonic's, grpcio) enforce the
/// deadline themselves and would answer before the server does.
async fn call_with_grpc_timeout(
    addr: SocketAddr,
    message: &ModelInferRequest,
    timeout: &str,
) -> tonic::Status {
    let encoded = prost::Message::encode_to_vec(message);
    // A gRPC frame: uncompressed, big-endian length, message.
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    frame.extend_from_slice(&encoded);
    raw_model_infer(addr, frame.into(), Some(timeout)).await
}

/// The status a `ModelInfer` call with `body` (gRPC frames, sent as raw
/// HTTP/2) and an optional `grpc-timeout` gets from the server within 60 s.
async fn raw_model_infer(
    addr: SocketAddr,
    body: reqwest::Body,
    grpc_timeout: Option<&str>,
) -> tonic::Status {
    let mut request = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .post(format!(
            "http://{addr}/inference.GRPCInferenceService/ModelInfer"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(timeout) = grpc_timeout {
        request = request.header("grpc-timeout", timeout);
    }
    let response = request
        .body(body)
        .send()
        .await
        .expect("an answer within 60 s");
    // An error is a trailers-only response: the status is in the headers.
    tonic::Status::from_header_map(response.headers()).expect("the answer carries a gRPC status")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_honours_grpc_timeout_and_reports_health() {
    let (server, addr) = start(&["faulty"]).await;
    // Action 2 spins until faulty's own 500 ms deadline; the client's
    // 100 ms runs out first, and the server says so.
    let status = call_with_grpc_timeout(addr, &faulty(2), "100m").await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("faulty") && status.message().contains("100 ms (grpc-timeout)"),
        "{status:?}"
    );
    // The handler spins on in the background until its own deadline,
    // while the server keeps serving: faulty's one instance is busy until
    // then (each refusal waits out faulty's queue timeout), and then the
    // model answers again.
    let mut inference = client(addr).await;
    let answer = loop {
        match inference.model_infer(faulty(0)).await {
            Ok(answer) => break answer.into_inner(),
            Err(busy) if busy.code() == Code::Unavailable && busy.message().contains("busy") => {}
            Err(other) => panic!("{other:?}"),
        }
    };
    assert_eq!(answer.raw_output_contents[0].as_slice(), 0i32.to_le_bytes());
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "inference.GRPCInferenceService"] {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }

    // A second abandoned call is still spinning when the server stops:
    // its handler must reach its own deadline all the same (the engine's
    // clock outlives the server), or this test never ends.
    let status = call_with_grpc_timeout(addr, &faulty(2), "10m").await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    server.stop().await;
}

/// A `ModelStreamInfer` call of one `message` with `grpc-timeout: timeout`.
async fn stream_with_grpc_timeout(
    inference: &mut GrpcInferenceServiceClient<Channel>,
    message: ModelInferRequest,
    timeout: &str,
) -> tonic::Streaming<edgeserve::server::grpc::proto::ModelStreamInferResponse> {
    let mut request = tonic::Request::new(futures::stream::iter([message]));
    request
        .metadata_mut()
        .insert("grpc-timeout", timeout.parse().unwrap());
    inference
        .model_stream_infer(request)
        .await
        .unwrap()
        .into_inner()
}

/// `grpc-timeout` bounds a whole `ModelStreamInfer` call: a request still
/// running at the deadline ends the call with DEADLINE_EXCEEDED, naming the
/// deadline, instead of the model's own answer after its longer one. A
/// tonic client times only the wait for the response headers, which a
/// stream sends at once, so the status seen is the server's.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_timeout_bounds_a_stream() {
    let (server, addr) = start(&["faulty"]).await;
    let mut inference = client(addr).await;
    // Action 2 spins until faulty's own 500 ms deadline.
    let mut responses = stream_with_grpc_timeout(&mut inference, faulty(2), "100m").await;
    let status = responses.message().await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("100 ms (grpc-timeout)"),
        "{status:?}"
    );
    // A stream within its deadline answers as before (once the abandoned
    // call no longer holds faulty's one instance).
    let answer = loop {
        let mut responses = stream_with_grpc_timeout(&mut inference, faulty(0), "20S").await;
        let response = responses.message().await.unwrap().expect("an answer");
        match response.error_message.as_str() {
            busy if busy.contains("busy") => {}
            "" => {
                assert!(responses.message().await.unwrap().is_none(), "one answer");
                break response.infer_response.unwrap();
            }
            other => panic!("{other}"),
        }
    };
    assert_eq!(answer.raw_output_contents[0].as_slice(), 0i32.to_le_bytes());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_in_flight_finishes_when_the_server_stops() {
    let (server, addr) = start(&["faulty"]).await;
    let mut inference = client(addr).await;
    // Takes faulty's whole 500 ms deadline.
    let slow = tokio::spawn(async move { inference.model_infer(faulty(2)).await });
    common::wait_inflight(&server.client, &server.base, 1).await;
    server.stop().await;
    // The call got the model's answer, not a broken connection.
    let status = slow.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("500 ms deadline"), "{status:?}");
    // And nothing new is accepted.
    assert!(
        GrpcInferenceServiceClient::connect(format!("http://{addr}"))
            .await
            .is_err(),
        "a new connection was accepted after shutdown"
    );
}

/// A call whose request stops arriving mid-message holds its connection,
/// since no new call starts on it: past the idle timeout without a byte it
/// ends with DEADLINE_EXCEEDED. A `ModelStreamInfer` stream, whose client
/// may send its next request whenever it likes, is not cut.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_request_ends_but_an_open_stream_may_pause() {
    use futures::StreamExt;

    let idle = Duration::from_millis(300);
    let (server, addr) = start_with(&["faulty"], |s| s.idle_timeout = idle).await;
    // A gRPC frame's header promising 100 bytes, ten of them, then nothing.
    let mut partial = vec![0u8];
    partial.extend_from_slice(&100u32.to_be_bytes());
    partial.extend_from_slice(&[0; 10]);
    let body =
        futures::stream::iter([Ok::<_, std::io::Error>(partial)]).chain(futures::stream::pending());
    let status = raw_model_infer(addr, reqwest::Body::wrap_stream(body), None).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("stopped arriving"), "{status:?}");

    // A stream quiet for several idle timeouts, then a request: answered.
    let (send, requests) = futures::channel::mpsc::unbounded();
    let mut responses = client(addr)
        .await
        .model_stream_infer(requests)
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(idle * 4).await;
    send.unbounded_send(faulty(0)).unwrap();
    let answer = responses.message().await.unwrap().expect("an answer");
    assert_eq!(answer.error_message, "");
    assert_eq!(
        answer.infer_response.unwrap().raw_output_contents[0].as_slice(),
        0i32.to_le_bytes()
    );
    drop(send);
    assert!(
        responses.message().await.unwrap().is_none(),
        "the stream ends"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_guard_grpc_as_they_guard_rest() {
    let (server, addr) = start_with(&["faulty"], |settings| {
        settings.access.api_keys = vec!["api-key-1".parse().unwrap()];
        settings.access.admin_key = Some("admin-key-1".parse().unwrap());
    })
    .await;
    let mut inference = client(addr).await;
    // Health stays open, for Kubernetes' probe.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no key");
    let status = inference.model_infer(faulty(0)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("Bearer"), "{status:?}");
    let status = inference
        .model_infer(with_key("wrong", faulty(0)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let answer = inference
        .model_infer(with_key("api-key-1", faulty(0)))
        .await
        .expect("an API key may infer")
        .into_inner();
    assert_eq!(answer.raw_output_contents[0].as_slice(), 0i32.to_le_bytes());
    // Unloading is management: the admin key's, not an API key's.
    let unload = || edgeserve::server::grpc::proto::RepositoryModelUnloadRequest {
        model_name: "faulty".into(),
        ..Default::default()
    };
    let status = inference
        .repository_model_unload(with_key("api-key-1", unload()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    inference
        .repository_model_unload(with_key("admin-key-1", unload()))
        .await
        .expect("the admin key may unload");
    server.stop().await;
}

/// `message` carrying `authorization: Bearer key`.
fn with_key<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// `linear` on 1, 2, 3 as raw or typed contents, with a request id.
fn linear(raw: bool) -> ModelInferRequest {
    let xs = [1.0f32, 2.0, 3.0];
    let mut input = InferInputTensor {
        name: "x".into(),
        datatype: "FP32".into(),
        shape: vec![3, 1],
        ..Default::default()
    };
    let mut message = ModelInferRequest {
        model_name: "linear".into(),
        id: "req-7".into(),
        ..Default::default()
    };
    if raw {
        let bytes: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
        message.raw_input_contents = vec![bytes.into()];
    } else {
        input.contents = Some(InferTensorContents {
            fp32_contents: xs.to_vec(),
            ..Default::default()
        });
    }
    message.inputs = vec![input];
    message
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_requests_for_models_missing_here_reach_the_upstream() {
    // The upstream serves linear; the front serves only faulty.
    let (back, back_grpc) = start(&["linear"]).await;
    let (front, front_grpc) = start_with(&["faulty"], |settings| {
        settings.upstream = Some(UpstreamSettings {
            url: back.base.clone(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            offload_on_queue_timeout: false,
            ca: None,
        });
    })
    .await;
    let mut front_client = client(front_grpc).await;
    let mut back_client = client(back_grpc).await;

    // Raw and typed contents: the upstream's own answer, in the encoding
    // the client used, with its request id.
    for raw in [true, false] {
        let expected = back_client.model_infer(linear(raw)).await.unwrap();
        let got = front_client.model_infer(linear(raw)).await.unwrap();
        assert_eq!(got.get_ref(), expected.get_ref(), "raw: {raw}");
        assert_eq!(got.get_ref().id, "req-7");
        assert_eq!(got.get_ref().raw_output_contents.is_empty(), !raw);
    }
    // The offload is counted.
    let (_, metrics) = front.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"offloaded_requests_total{model="linear",reason="missing"} 2"#),
        "{metrics}"
    );
    // The upstream counts each request under the protocol it came in on:
    // the direct calls over gRPC, the forwarded ones over REST.
    let (_, metrics) = back.get_text("/metrics").await;
    for protocol in ["grpc", "http"] {
        let line = format!(
            r#"edgeserve_requests_total{{model="linear",version="1",outcome="success",protocol="{protocol}"}} 2"#
        );
        assert!(metrics.contains(&line), "metrics lack {line}:\n{metrics}");
    }

    // The upstream's errors come back as gRPC statuses naming the problem.
    let mut bad = linear(true);
    bad.inputs[0].name = "y".into();
    let status = front_client.model_infer(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("no input 'y'"), "{status:?}");
    let mut unknown = linear(true);
    unknown.model_name = "nowhere".into();
    let status = front_client.model_infer(unknown).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("nowhere"), "{status:?}");

    // A request that was itself forwarded is never forwarded again.
    let mut forwarded = tonic::Request::new(linear(true));
    forwarded
        .metadata_mut()
        .insert(edgeserve::offload::FORWARDED, "1".parse().unwrap());
    let status = front_client.model_infer(forwarded).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // On a stream too: each request for a model missing here is answered
    // whole by the upstream, one response with its answer (with Triton's
    // end marker when asked for), an error in the stream naming the
    // problem, and the front's own model on the same stream as before.
    let expected = back_client.model_infer(linear(true)).await.unwrap();
    let mut marked = linear(true);
    marked.id = "marked".into();
    marked.parameters.insert(
        "triton_enable_empty_final_response".into(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::BoolParam(true)),
        },
    );
    let mut missing_everywhere = linear(true);
    missing_everywhere.model_name = "nowhere".into();
    missing_everywhere.id = "nowhere".into();
    let mut own = faulty(0);
    own.id = "own".into();
    let requests = [linear(true), marked, missing_everywhere, own];
    let mut responses = front_client
        .model_stream_infer(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut by_id = std::collections::HashMap::new();
    while let Some(response) = responses.message().await.unwrap() {
        let inner = response.infer_response.clone().unwrap();
        assert!(
            by_id.insert(inner.id.clone(), response).is_none(),
            "one each"
        );
    }
    assert_eq!(by_id.len(), 4, "{by_id:?}");
    assert_eq!(by_id["req-7"].error_message, "");
    assert_eq!(
        by_id["req-7"].infer_response.as_ref(),
        Some(expected.get_ref())
    );
    let answer = by_id["marked"].infer_response.clone().unwrap();
    assert_eq!(
        answer.raw_output_contents,
        expected.get_ref().raw_output_contents
    );
    assert_eq!(
        answer.parameters["triton_final_response"].parameter_choice,
        Some(ParameterChoice::BoolParam(true))
    );
    assert!(
        by_id["nowhere"].error_message.contains("nowhere"),
        "{by_id:?}"
    );
    assert_eq!(by_id["own"].error_message, "", "{by_id:?}");
    // The two unary calls, the one with a wrong input, and these two.
    let (_, metrics) = front.get_text("/metrics").await;
    assert!(
        metrics.contains(r#"offloaded_requests_total{model="linear",reason="missing"} 5"#),
        "{metrics}"
    );

    // No upstream to answer: UNAVAILABLE, naming it.
    let back_base = back.base.clone();
    back.stop().await;
    let status = front_client.model_infer(linear(true)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains(&back_base), "{status:?}");
    front.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tritonclient_grpc_streams_generated_tokens() {
    let (server, grpc) = start(&["gpt2", "linear"]).await;
    let grpc = grpc.to_string();
    common::run_python(
        "grpc_stream.py",
        &[grpc.as_ref()],
        "tritonclient.grpc streaming: OK",
    )
    .await;
    server.stop().await;
}

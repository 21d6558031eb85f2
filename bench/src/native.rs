//! The HTTP baseline: a plain axum handler doing the JSON work of an OIP
//! `linear` request natively — parse the request with serde_json, compute
//! y = 0.1·x + 0.3 in f32, encode the same OIP response — with no registry,
//! pool, metrics or wasm.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InputJson>,
}

#[derive(Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Json,
}

#[derive(Serialize)]
struct InferResponse {
    model_name: &'static str,
    model_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: [OutputJson; 1],
}

#[derive(Serialize)]
struct OutputJson {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<usize>,
    /// f32s print as the shortest decimal that round-trips, as edgeserve's do.
    data: Vec<f32>,
}

/// A running baseline server.
pub struct NativeServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl NativeServer {
    /// Listens on a free loopback port.
    pub async fn start() -> anyhow::Result<NativeServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = Router::new().route("/v2/models/linear/infer", post(infer));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(NativeServer { addr, stop, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        Ok(self.task.await??)
    }
}

async fn infer(body: Bytes) -> Response {
    match linear(&body) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(message) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&json!({ "error": message })).expect("JSON serializes"),
        )
            .into_response(),
    }
}

/// The request body in, the response body out.
fn linear(body: &[u8]) -> Result<Vec<u8>, String> {
    let request: InferRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let [x] = &request.inputs[..] else {
        return Err("expected one input".into());
    };
    if x.name != "x" || x.datatype != "FP32" {
        return Err(format!("unexpected input {} of {}", x.name, x.datatype));
    }
    let shape: Vec<usize> = x.shape.iter().map(|&d| d as usize).collect();
    let data = x.data.as_array().ok_or("data is not an array")?;
    if shape.iter().product::<usize>() != data.len() {
        return Err("data does not match the shape".into());
    }
    let y = data
        .iter()
        .map(|v| Some(v.as_f64()? as f32 * 0.1 + 0.3))
        .collect::<Option<Vec<f32>>>()
        .ok_or("data holds a non-number")?;
    let response = InferResponse {
        model_name: "linear",
        model_version: "1",
        id: request.id,
        outputs: [OutputJson {
            name: "y",
            datatype: "FP32",
            shape,
            data: y,
        }],
    };
    Ok(serde_json::to_vec(&response).expect("JSON serializes"))
}

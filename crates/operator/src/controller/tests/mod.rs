//! Reconcile scenarios against a scripted mock API server (`tower_test::mock`).
//!
//! Each scenario lists every call the reconciler must make, in order: method, path, query,
//! content type and the key fields of the body. A missing call, an extra call or a wrong body
//! fails the test (the mock panics and the failure is re-raised by [`finish`]).
//!
//! - this module: the mock API server and the calls it expects;
//! - `reconcile`: the scenarios;
//! - `rbac`: the operator's ClusterRole against the calls the scenarios make.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tower_test::mock;

use super::*;
use crate::crd::{DeployedTier, Tier};
use crate::resources::child_name;
use crate::test_support::{NS, autoscaling, model_deployment};

mod rbac;
mod reconcile;

const APPLY: &str = "application/apply-patch+yaml";
const JSON_PATCH: &str = "application/json-patch+json";

type Reply = Box<dyn FnOnce(Value) -> (u16, Value) + Send>;
type Check = Box<dyn FnOnce(&Value) + Send>;

/// A kind of child object: where the API serves it and how the builders make it.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Deployment,
    Service,
    Hpa,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
            Kind::Hpa => "HorizontalPodAutoscaler",
        }
    }

    /// The collection's path, or one object's when `name` is given.
    fn path(self, name: Option<&str>) -> String {
        let base = match self {
            Kind::Deployment => format!("/apis/apps/v1/namespaces/{NS}/deployments"),
            Kind::Service => format!("/api/v1/namespaces/{NS}/services"),
            Kind::Hpa => {
                format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers")
            }
        };
        match name {
            Some(name) => format!("{base}/{name}"),
            None => base,
        }
    }

    /// The path of the fixture's child of this kind on `tier`.
    fn of(self, tier: DeployedTier) -> String {
        self.path(Some(&child_name("digits", tier)))
    }

    /// A child as the API server would list it: built by the real builders, for the tier of
    /// another spec when needed.
    fn child(self, md: &ModelDeployment, tier: DeployedTier) -> Value {
        match self {
            Kind::Deployment => serde_json::to_value(resources::deployment(md, tier).unwrap()),
            Kind::Service => serde_json::to_value(resources::service(md, tier).unwrap()),
            Kind::Hpa => serde_json::to_value(resources::hpa(md, tier).unwrap().unwrap()),
        }
        .unwrap()
    }
}

/// One expected API call and the answer the mock gives.
struct Call {
    method: Method,
    path: String,
    query: Vec<String>,
    content_type: Option<&'static str>,
    check: Check,
    reply: Reply,
}

impl Call {
    fn new(method: Method, path: String) -> Self {
        Call {
            method,
            path,
            query: Vec::new(),
            content_type: None,
            check: Box::new(|_| {}),
            reply: Box::new(|body| (200, body)),
        }
    }

    /// A server-side apply by the operator's field manager; the server echoes the object.
    fn apply(path: String, check: impl FnOnce(&Value) + Send + 'static) -> Self {
        Call {
            query: vec![
                format!("fieldManager={FIELD_MANAGER}"),
                "force=true".to_owned(),
            ],
            content_type: Some(APPLY),
            check: Box::new(check),
            ..Call::new(Method::PATCH, path)
        }
    }

    /// A list of the model deployment's children of one kind by label; the server returns
    /// `items`.
    fn list(kind: Kind, items: Vec<Value>) -> Self {
        let list_kind = format!("{}List", kind.name());
        Call {
            query: vec![format!(
                "labelSelector=app.kubernetes.io/instance=digits,app.kubernetes.io/managed-by={MANAGER}"
            )],
            reply: Box::new(move |_| {
                (
                    200,
                    json!({"apiVersion": "v1", "kind": list_kind, "metadata": {}, "items": items}),
                )
            }),
            ..Call::new(Method::GET, kind.path(None))
        }
    }

    /// A list that finds `md`'s children of one kind on `tiers`.
    fn list_children(kind: Kind, md: &ModelDeployment, tiers: &[DeployedTier]) -> Self {
        Call::list(kind, tiers.iter().map(|&t| kind.child(md, t)).collect())
    }

    /// A background-propagation delete; the server answers `code` (200 or 404).
    fn delete(path: String, code: u16) -> Self {
        Call {
            check: Box::new(|body| {
                assert_eq!(
                    body["propagationPolicy"], "Background",
                    "delete body {body}"
                );
            }),
            reply: Box::new(move |_| {
                let status = if code == 200 { "Success" } else { "Failure" };
                let reason = if code == 404 { "NotFound" } else { "" };
                (code, api_status(code, status, reason, "mock"))
            }),
            ..Call::new(Method::DELETE, path)
        }
    }

    /// The JSON patch the finalizer helper sends; the server answers with `answer`.
    fn json_patch(expected: Value, answer: &ModelDeployment) -> Self {
        let answer = serde_json::to_value(answer).unwrap();
        Call {
            content_type: Some(JSON_PATCH),
            check: Box::new(move |body| assert_eq!(body, &expected)),
            reply: Box::new(move |_| (200, answer)),
            ..Call::new(Method::PATCH, md_path())
        }
    }

    /// The patch that adds the finalizer; the server answers with `md` carrying it.
    fn add_finalizer(md: &ModelDeployment) -> Self {
        Call::json_patch(
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ]),
            &finalized(md.clone()),
        )
    }

    /// The status apply; the server answers with `md` carrying the applied status.
    fn status(md: &ModelDeployment, check: impl FnOnce(&Value) + Send + 'static) -> Self {
        let md = md.clone();
        Call {
            reply: Box::new(move |body| {
                let mut md = serde_json::to_value(&md).unwrap();
                md["status"] = body["status"].clone();
                (200, md)
            }),
            ..Call::apply(format!("{}/status", md_path()), check)
        }
    }

    /// Answers `code` with an API error instead of the object.
    fn failing(mut self, code: u16) -> Self {
        self.reply = Box::new(move |_| {
            let status = api_status(code, "Failure", "InternalError", "etcd is on fire");
            (code, status)
        });
        self
    }
}

/// A `Status` object as the API server answers errors and deletes.
fn api_status(code: u16, status: &str, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": status,
           "code": code, "reason": reason, "message": message})
}

fn md_path() -> String {
    format!("/apis/edgeserve.dev/v1alpha1/namespaces/{NS}/modeldeployments/digits")
}

/// Percent-decodes a query string so expectations read like the selector itself.
fn decode(query: &str) -> String {
    let bytes = query.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A context whose client talks to a mock server that expects exactly `calls`.
fn mock_api(calls: Vec<Call>) -> (Arc<Context>, JoinHandle<()>) {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        for (i, call) in calls.into_iter().enumerate() {
            let what = format!("call #{i}: {} {}", call.method, call.path);
            let (request, send) = handle
                .next_request()
                .await
                .unwrap_or_else(|| panic!("the reconciler stopped before {what}"));
            assert_eq!(
                request.method(),
                call.method,
                "{what}: got {}",
                request.uri()
            );
            assert_eq!(request.uri().path(), call.path, "{what}");
            let query = decode(request.uri().query().unwrap_or_default());
            for part in &call.query {
                assert!(
                    query.split('&').any(|q| q == part),
                    "{what}: query {query:?} lacks {part:?}"
                );
            }
            if let Some(content_type) = call.content_type {
                assert_eq!(
                    request.headers()["content-type"],
                    content_type,
                    "{what}: content type"
                );
            }
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            (call.check)(&body);
            let (code, answer) = (call.reply)(body);
            send.send_response(
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
        // Once every client is dropped the channel closes; anything before that is a call
        // the scenario did not expect.
        if let Some((request, _)) = handle.next_request().await {
            panic!("unexpected call: {} {}", request.method(), request.uri());
        }
    });
    (
        Arc::new(Context::new(Client::new(service, "default"))),
        server,
    )
}

/// Drops the context (closing the mock's channel) and re-raises any assertion the mock made.
async fn finish(ctx: Arc<Context>, server: JoinHandle<()>) {
    drop(ctx);
    match timeout(Duration::from_secs(10), server).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        Err(_) => panic!("mock API server never finished"),
    }
}

/// Runs one reconciliation against `calls` and returns its result.
async fn scenario(md: ModelDeployment, calls: Vec<Call>) -> Result<Action, Error> {
    let (ctx, server) = mock_api(calls);
    let result = timeout(
        Duration::from_secs(10),
        reconcile(Arc::new(md), ctx.clone()),
    )
    .await
    .expect("reconcile hung");
    finish(ctx, server).await;
    result
}

/// The fixture at generation 2, autoscaled between 1 and 4 replicas on CPU and in-flight
/// requests, with 2 GPUs per datacenter replica.
fn test_md(tier: Tier) -> ModelDeployment {
    let mut md = model_deployment(tier);
    md.spec.autoscaling = Some(autoscaling(1, 4, Some(75), Some(16)));
    md.spec.gpu.count = 2;
    md.metadata.generation = Some(2);
    md
}

fn finalized(mut md: ModelDeployment) -> ModelDeployment {
    md.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    md
}

fn env_of(deployment: &Value, name: &str) -> Option<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["value"].as_str().unwrap().to_owned())
}

/// The value after `--device` in a Deployment's container arguments.
fn device_of(deployment: &Value) -> &Value {
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    let at = args.iter().position(|a| a == "--device").unwrap();
    &args[at + 1]
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

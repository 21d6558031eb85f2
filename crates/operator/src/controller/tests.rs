//! Reconcile scenarios against a scripted mock API server (`tower_test::mock`).
//!
//! Each scenario lists every call the reconciler must make, in order: method, path, query,
//! content type and the key fields of the body. A missing call, an extra call or a wrong body
//! fails the test (the mock panics and the failure is re-raised by [`finish`]).

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tower_test::mock;

use super::*;
use crate::crd::{Autoscaling, BundleSource, DeployedTier, GpuSpec, ModelDeploymentSpec, Tier};
use crate::resources::child_name;

const NS: &str = "ml";
const UID: &str = "5f0c2a4e-0000-4000-8000-000000000001";
const APPLY: &str = "application/apply-patch+yaml";
const JSON_PATCH: &str = "application/json-patch+json";

type Reply = Box<dyn FnOnce(Value) -> (u16, Value) + Send>;
type Check = Box<dyn FnOnce(&Value) + Send>;

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

    /// A list of the model deployment's children by label; the server returns `items`.
    fn list(path: String, kind: &str, items: Vec<Value>) -> Self {
        let kind = format!("{kind}List");
        Call {
            query: vec![format!(
                "labelSelector=app.kubernetes.io/instance=digits,app.kubernetes.io/managed-by={MANAGER}"
            )],
            reply: Box::new(move |_| {
                (
                    200,
                    json!({"apiVersion": "v1", "kind": kind, "metadata": {}, "items": items}),
                )
            }),
            ..Call::new(Method::GET, path)
        }
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
                (
                    code,
                    json!({"apiVersion": "v1", "kind": "Status", "metadata": {},
                           "status": status, "code": code, "reason": if code == 404 { "NotFound" } else { "" },
                           "message": "mock"}),
                )
            }),
            ..Call::new(Method::DELETE, path)
        }
    }

    /// The JSON patch the finalizer helper sends; the server answers with `answer`.
    fn json_patch(path: String, expected: Value, answer: Value) -> Self {
        Call {
            content_type: Some(JSON_PATCH),
            check: Box::new(move |body| assert_eq!(body, &expected)),
            reply: Box::new(move |_| (200, answer)),
            ..Call::new(Method::PATCH, path)
        }
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
            (
                code,
                json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                       "code": code, "reason": "InternalError", "message": "etcd is on fire"}),
            )
        });
        self
    }
}

fn md_path() -> String {
    format!("/apis/edgeserve.dev/v1alpha1/namespaces/{NS}/modeldeployments/digits")
}

fn path(group_version: &str, plural: &str, name: Option<&str>) -> String {
    let base = if group_version == "v1" {
        format!("/api/v1/namespaces/{NS}/{plural}")
    } else {
        format!("/apis/{group_version}/namespaces/{NS}/{plural}")
    };
    match name {
        Some(name) => format!("{base}/{name}"),
        None => base,
    }
}

fn deployment_path(name: Option<&str>) -> String {
    path("apps/v1", "deployments", name)
}

fn service_path(name: Option<&str>) -> String {
    path("v1", "services", name)
}

fn hpa_path(name: Option<&str>) -> String {
    path("autoscaling/v2", "horizontalpodautoscalers", name)
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

fn test_md(tier: Tier) -> ModelDeployment {
    let mut md = ModelDeployment::new(
        "digits",
        ModelDeploymentSpec {
            model: "digits".to_owned(),
            bundle: BundleSource {
                url: "https://models.example.com/digits.tar.gz".to_owned(),
                sha256: "ab".repeat(32),
            },
            tier,
            replicas: None,
            autoscaling: Some(Autoscaling {
                min_replicas: 1,
                max_replicas: 4,
                target_cpu_utilization: Some(75),
                target_inflight: Some(16),
            }),
            gpu: GpuSpec {
                count: 2,
                resource: "nvidia.com/gpu".to_owned(),
            },
            image: "ghcr.io/edgeserve/edgeserve:0.1.0".to_owned(),
            gpu_image: crate::crd::DEFAULT_GPU_IMAGE.to_owned(),
            upstream: None,
            resources: None,
        },
    );
    md.metadata.namespace = Some(NS.to_owned());
    md.metadata.uid = Some(UID.to_owned());
    md.metadata.generation = Some(2);
    md
}

fn finalized(mut md: ModelDeployment) -> ModelDeployment {
    md.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    md
}

/// A child object as the API server would list it: built by the real builders, for the
/// tier of another spec when needed.
fn child(kind: &str, md: &ModelDeployment, tier: DeployedTier) -> Value {
    match kind {
        "Deployment" => serde_json::to_value(resources::deployment(md, tier).unwrap()).unwrap(),
        "Service" => serde_json::to_value(resources::service(md, tier).unwrap()).unwrap(),
        "HorizontalPodAutoscaler" => {
            serde_json::to_value(resources::hpa(md, tier).unwrap().unwrap()).unwrap()
        }
        _ => unreachable!(),
    }
}

fn env_of(deployment: &Value, name: &str) -> Option<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["value"].as_str().unwrap().to_owned())
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn a_new_model_deployment_gets_the_finalizer_and_nothing_else() {
    let md = test_md(Tier::Both);
    let action = scenario(
        md.clone(),
        vec![Call::json_patch(
            md_path(),
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ]),
            serde_json::to_value(finalized(md)).unwrap(),
        )],
    )
    .await
    .expect("reconcile");
    // The finalizer patch itself triggers the next reconciliation.
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn both_tiers_apply_deployments_services_hpas_then_status() {
    let md = finalized(test_md(Tier::Both));
    let dc = child_name("digits", DeployedTier::Datacenter);
    let edge = child_name("digits", DeployedTier::Edge);
    let owned = |body: &Value| {
        let owner = &body["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], UID);
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["kind"], "ModelDeployment");
    };
    let calls = vec![
        Call::apply(deployment_path(Some(&dc)), move |d| {
            owned(d);
            assert_eq!(d["kind"], "Deployment");
            let c = &d["spec"]["template"]["spec"]["containers"][0];
            let args: Vec<_> = c["args"].as_array().unwrap().iter().collect();
            let device = args.iter().position(|a| *a == "--device").unwrap();
            assert_eq!(args[device + 1], "gpu");
            assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "2");
            assert_eq!(
                d["spec"]["template"]["spec"]["nodeSelector"]["edgeserve.dev/tier"],
                "datacenter"
            );
            assert!(d["spec"].get("replicas").is_none(), "the HPA owns replicas");
            assert_eq!(env_of(d, "EDGESERVE_UPSTREAM"), None);
        }),
        Call::apply(service_path(Some(&dc)), move |s| {
            owned(s);
            assert_eq!(s["spec"]["ports"][0]["port"], 8000);
            assert_eq!(s["spec"]["selector"]["edgeserve.dev/tier"], "datacenter");
        }),
        Call::apply(hpa_path(Some(&dc)), move |h| {
            owned(h);
            assert_eq!(h["apiVersion"], "autoscaling/v2");
            assert_eq!(h["spec"]["scaleTargetRef"]["name"], "digits-datacenter");
            assert_eq!(h["spec"]["maxReplicas"], 4);
            let metrics = h["spec"]["metrics"].as_array().unwrap();
            assert_eq!(metrics[0]["resource"]["target"]["averageUtilization"], 75);
            assert_eq!(
                metrics[1]["pods"]["metric"]["name"],
                "edgeserve_inflight_requests"
            );
        }),
        Call::apply(deployment_path(Some(&edge)), move |d| {
            owned(d);
            let c = &d["spec"]["template"]["spec"]["containers"][0];
            let args: Vec<_> = c["args"].as_array().unwrap().iter().collect();
            let device = args.iter().position(|a| *a == "--device").unwrap();
            assert_eq!(args[device + 1], "cpu");
            assert!(c["resources"].get("limits").is_none());
            assert_eq!(
                env_of(d, "EDGESERVE_UPSTREAM").as_deref(),
                Some("http://digits-datacenter.ml.svc:8000")
            );
            assert_eq!(
                env_of(d, "EDGESERVE_BUNDLES"),
                Some(format!(
                    "https://models.example.com/digits.tar.gz#sha256={}",
                    "ab".repeat(32)
                ))
            );
            assert_eq!(
                env_of(d, "EDGESERVE_OFFLOAD_ON_QUEUE_TIMEOUT").as_deref(),
                Some("true")
            );
        }),
        Call::apply(service_path(Some(&edge)), owned),
        Call::apply(hpa_path(Some(&edge)), move |h| {
            owned(h);
            assert_eq!(h["spec"]["scaleTargetRef"]["name"], "digits-edge");
        }),
        // Everything listed is wanted: no deletes.
        Call::list(
            deployment_path(None),
            "Deployment",
            vec![
                child("Deployment", &md, DeployedTier::Datacenter),
                child("Deployment", &md, DeployedTier::Edge),
            ],
        ),
        Call::list(
            service_path(None),
            "Service",
            vec![
                child("Service", &md, DeployedTier::Datacenter),
                child("Service", &md, DeployedTier::Edge),
            ],
        ),
        Call::list(
            hpa_path(None),
            "HorizontalPodAutoscaler",
            vec![
                child("HorizontalPodAutoscaler", &md, DeployedTier::Datacenter),
                child("HorizontalPodAutoscaler", &md, DeployedTier::Edge),
            ],
        ),
        Call::status(&md, |body| {
            assert_eq!(body["apiVersion"], "edgeserve.dev/v1alpha1");
            assert_eq!(body["kind"], "ModelDeployment");
            let status = &body["status"];
            assert_eq!(status["observedGeneration"], 2);
            // Fresh Deployments have no status yet: rolling out, not ready.
            assert_eq!(condition(status, "Ready")["status"], "False");
            assert_eq!(condition(status, "Progressing")["status"], "True");
            assert_eq!(condition(status, "Degraded")["status"], "False");
            assert_eq!(condition(status, "Ready")["observedGeneration"], 2);
            assert_eq!(status["edge"]["readyReplicas"], 0);
            assert_eq!(
                status["datacenter"]["url"],
                "http://digits-datacenter.ml.svc:8000"
            );
        }),
    ];
    let action = scenario(md, calls).await.expect("reconcile");
    assert_eq!(action, Action::requeue(RESYNC));
}

#[tokio::test]
async fn available_deployments_make_the_model_ready() {
    let mut md = finalized(test_md(Tier::Edge));
    md.spec.autoscaling = None;
    md.spec.replicas = Some(3);
    let edge = child_name("digits", DeployedTier::Edge);
    let mut deployment_call = Call::apply(deployment_path(Some(&edge)), |d| {
        assert_eq!(d["spec"]["replicas"], 3);
    });
    // The API server answers with a Deployment whose rollout is complete.
    deployment_call.reply = Box::new(|mut d| {
        d["metadata"]["generation"] = json!(1);
        d["status"] = json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3,
                             "availableReplicas": 3, "readyReplicas": 3});
        (200, d)
    });
    let calls = vec![
        deployment_call,
        Call::apply(service_path(Some(&edge)), |_| {}),
        Call::list(
            deployment_path(None),
            "Deployment",
            vec![child("Deployment", &md, DeployedTier::Edge)],
        ),
        Call::list(
            service_path(None),
            "Service",
            vec![child("Service", &md, DeployedTier::Edge)],
        ),
        Call::list(hpa_path(None), "HorizontalPodAutoscaler", vec![]),
        Call::status(&md, |body| {
            let status = &body["status"];
            assert_eq!(condition(status, "Ready")["status"], "True");
            assert_eq!(condition(status, "Progressing")["status"], "False");
            assert_eq!(status["edge"]["readyReplicas"], 3);
            assert!(status.get("datacenter").is_none());
        }),
    ];
    scenario(md, calls).await.expect("reconcile");
}

#[tokio::test]
async fn switching_to_edge_deletes_the_datacenter_children_only() {
    // The cluster still holds both tiers (and autoscalers) from the previous spec.
    let previous = finalized(test_md(Tier::Both));
    let mut md = previous.clone();
    md.spec.tier = Tier::Edge;
    md.spec.autoscaling = None;
    md.spec.replicas = Some(1);
    // A look-alike Deployment owned by someone else must survive.
    let mut foreign = child("Deployment", &previous, DeployedTier::Datacenter);
    foreign["metadata"]["name"] = json!("digits-canary");
    foreign["metadata"]["ownerReferences"][0]["uid"] = json!("someone-else");

    let edge = child_name("digits", DeployedTier::Edge);
    let dc = child_name("digits", DeployedTier::Datacenter);
    let calls = vec![
        Call::apply(deployment_path(Some(&edge)), |d| {
            assert_eq!(d["spec"]["replicas"], 1);
            // No datacenter tier any more: nothing to offload to.
            assert_eq!(env_of(d, "EDGESERVE_UPSTREAM"), None);
        }),
        Call::apply(service_path(Some(&edge)), |_| {}),
        Call::list(
            deployment_path(None),
            "Deployment",
            vec![
                child("Deployment", &previous, DeployedTier::Datacenter),
                child("Deployment", &previous, DeployedTier::Edge),
                foreign,
            ],
        ),
        Call::delete(deployment_path(Some(&dc)), 200),
        Call::list(
            service_path(None),
            "Service",
            vec![
                child("Service", &previous, DeployedTier::Datacenter),
                child("Service", &previous, DeployedTier::Edge),
            ],
        ),
        Call::delete(service_path(Some(&dc)), 200),
        Call::list(
            hpa_path(None),
            "HorizontalPodAutoscaler",
            vec![
                child(
                    "HorizontalPodAutoscaler",
                    &previous,
                    DeployedTier::Datacenter,
                ),
                child("HorizontalPodAutoscaler", &previous, DeployedTier::Edge),
            ],
        ),
        // Gone already (someone raced us): still fine.
        Call::delete(hpa_path(Some(&dc)), 404),
        // Autoscaling was switched off: the edge HPA goes too.
        Call::delete(hpa_path(Some(&edge)), 200),
        Call::status(&md, |body| {
            assert!(body["status"].get("datacenter").is_none());
            assert_eq!(body["status"]["edge"]["replicas"], 1);
        }),
    ];
    scenario(md, calls).await.expect("reconcile");
}

#[tokio::test]
async fn deletion_cleans_up_children_then_removes_the_finalizer() {
    let mut md = finalized(test_md(Tier::Both));
    md.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1_700_000_000).unwrap()));
    let dc = child_name("digits", DeployedTier::Datacenter);
    let edge = child_name("digits", DeployedTier::Edge);
    let mut gone = md.clone();
    gone.metadata.finalizers = Some(vec![]);
    let calls = vec![
        Call::list(
            deployment_path(None),
            "Deployment",
            vec![
                child("Deployment", &md, DeployedTier::Datacenter),
                child("Deployment", &md, DeployedTier::Edge),
            ],
        ),
        Call::delete(deployment_path(Some(&dc)), 200),
        Call::delete(deployment_path(Some(&edge)), 200),
        Call::list(
            service_path(None),
            "Service",
            vec![child("Service", &md, DeployedTier::Edge)],
        ),
        Call::delete(service_path(Some(&edge)), 200),
        Call::list(hpa_path(None), "HorizontalPodAutoscaler", vec![]),
        Call::json_patch(
            md_path(),
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ]),
            serde_json::to_value(gone).unwrap(),
        ),
    ];
    let action = scenario(md, calls).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn an_invalid_spec_only_reports_degraded() {
    let mut md = finalized(test_md(Tier::Edge));
    md.spec.replicas = Some(2); // and autoscaling: the CRD's CEL rule forbids both
    let calls = vec![Call::status(&md, |body| {
        let degraded = condition(&body["status"], "Degraded");
        assert_eq!(degraded["status"], "True");
        assert_eq!(degraded["reason"], "InvalidSpec");
        assert_eq!(condition(&body["status"], "Ready")["status"], "False");
    })];
    let action = scenario(md, calls).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_and_back_off_exponentially() {
    let md = finalized(test_md(Tier::Edge));
    let edge = child_name("digits", DeployedTier::Edge);
    let (ctx, server) = mock_api(vec![
        Call::apply(deployment_path(Some(&edge)), |_| {}).failing(500),
    ]);
    let md = Arc::new(md);
    let result = reconcile(md.clone(), ctx.clone()).await;
    let error = result.expect_err("a 500 fails the reconcile");
    assert!(error.to_string().contains("etcd is on fire"), "{error}");

    let delays: Vec<_> = (0..8)
        .map(|_| error_policy(md.clone(), &error, ctx.clone()))
        .collect();
    let secs = |s| Action::requeue(Duration::from_secs(s));
    assert_eq!(
        delays,
        [
            secs(5),
            secs(10),
            secs(20),
            secs(40),
            secs(80),
            secs(160),
            secs(300),
            secs(300)
        ]
    );
    finish(ctx, server).await;
}

#[tokio::test]
async fn a_successful_reconcile_resets_the_backoff() {
    let md = Arc::new(test_md(Tier::Edge));
    let (ctx, server) = mock_api(vec![Call::json_patch(
        md_path(),
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]),
        serde_json::to_value(finalized(test_md(Tier::Edge))).unwrap(),
    )]);
    let error = Error::MissingObjectKey("uid");
    error_policy(md.clone(), &error, ctx.clone());
    error_policy(md.clone(), &error, ctx.clone());
    reconcile(md.clone(), ctx.clone()).await.expect("reconcile");
    assert_eq!(
        error_policy(md.clone(), &error, ctx.clone()),
        Action::requeue(BACKOFF_BASE)
    );
    finish(ctx, server).await;
}

/// The ClusterRole in k8s/operator must grant every call the scenarios above make (and the
/// watches of `run`), so the manifests cannot fall behind the code.
#[test]
fn operator_rbac_grants_every_call_the_reconciler_makes() {
    use serde::Deserialize;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../k8s/operator/rbac.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .collect();
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let allowed = |group: &str, resource: &str, verb: &str| {
        role["rules"].as_array().unwrap().iter().any(|rule| {
            let has = |key: &str, value: &str| {
                rule[key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| v == value || v == "*")
            };
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    };
    let needs = [
        (
            "edgeserve.dev",
            "modeldeployments",
            &["get", "list", "watch", "patch"][..],
        ),
        ("edgeserve.dev", "modeldeployments/status", &["patch"]),
        ("apps", "deployments", &["list", "watch", "patch", "delete"]),
        ("", "services", &["list", "watch", "patch", "delete"]),
        (
            "autoscaling",
            "horizontalpodautoscalers",
            &["list", "watch", "patch", "delete"],
        ),
    ];
    for (group, resource, verbs) in needs {
        for verb in verbs {
            assert!(
                allowed(group, resource, verb),
                "{path}: no {verb} on {group}/{resource}"
            );
        }
    }
    let account = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .expect("a ServiceAccount");
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .expect("a ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
}

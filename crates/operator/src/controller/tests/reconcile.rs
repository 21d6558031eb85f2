//! Reconcile scenarios: finalizer, apply, prune, status, cleanup, errors and backoff.

use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::test_support::{BUNDLE_URL, SHA, UID};

const DC: DeployedTier = DeployedTier::Datacenter;
const EDGE: DeployedTier = DeployedTier::Edge;

#[tokio::test]
async fn a_new_model_deployment_gets_the_finalizer_and_nothing_else() {
    let md = test_md(Tier::Both);
    let action = scenario(md.clone(), vec![Call::add_finalizer(&md)])
        .await
        .expect("reconcile");
    // The finalizer patch itself triggers the next reconciliation.
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn both_tiers_apply_deployments_services_hpas_then_status() {
    let md = finalized(test_md(Tier::Both));
    let owned = |body: &Value| {
        let owner = &body["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], UID);
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["kind"], "ModelDeployment");
    };
    let mut calls = vec![
        Call::apply(Kind::Deployment.of(DC), move |d| {
            owned(d);
            assert_eq!(d["kind"], "Deployment");
            let c = &d["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(device_of(d), "gpu");
            assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "2");
            assert_eq!(
                d["spec"]["template"]["spec"]["nodeSelector"]["edgeserve.dev/tier"],
                "datacenter"
            );
            assert!(d["spec"].get("replicas").is_none(), "the HPA owns replicas");
            assert_eq!(env_of(d, "EDGESERVE_UPSTREAM"), None);
        }),
        Call::apply(Kind::Service.of(DC), move |s| {
            owned(s);
            assert_eq!(s["spec"]["ports"][0]["port"], 8000);
            assert_eq!(s["spec"]["selector"]["edgeserve.dev/tier"], "datacenter");
        }),
        Call::apply(Kind::Hpa.of(DC), move |h| {
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
        Call::apply(Kind::Deployment.of(EDGE), move |d| {
            owned(d);
            let c = &d["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(device_of(d), "cpu");
            let limits = c["resources"]["limits"].as_object();
            assert!(
                !limits.is_some_and(|l| l.contains_key("nvidia.com/gpu")),
                "no GPU limit on the edge"
            );
            assert_eq!(
                env_of(d, "EDGESERVE_UPSTREAM").as_deref(),
                Some("http://digits-datacenter.ml.svc:8000")
            );
            assert_eq!(
                env_of(d, "EDGESERVE_BUNDLES"),
                Some(format!("{BUNDLE_URL}#sha256={SHA}"))
            );
            assert_eq!(
                env_of(d, "EDGESERVE_OFFLOAD_ON_QUEUE_TIMEOUT").as_deref(),
                Some("true")
            );
        }),
        Call::apply(Kind::Service.of(EDGE), owned),
        Call::apply(Kind::Hpa.of(EDGE), move |h| {
            owned(h);
            assert_eq!(h["spec"]["scaleTargetRef"]["name"], "digits-edge");
        }),
    ];
    // Everything listed is wanted: no deletes.
    for kind in [Kind::Deployment, Kind::Service, Kind::Hpa] {
        calls.push(Call::list_children(kind, &md, &[DC, EDGE]));
    }
    calls.push(Call::status(&md, |body| {
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
    }));
    let action = scenario(md, calls).await.expect("reconcile");
    assert_eq!(action, Action::requeue(RESYNC));
}

#[tokio::test]
async fn available_deployments_make_the_model_ready() {
    let mut md = finalized(test_md(Tier::Edge));
    md.spec.autoscaling = None;
    md.spec.replicas = Some(3);
    let mut deployment_call = Call::apply(Kind::Deployment.of(EDGE), |d| {
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
        Call::apply(Kind::Service.of(EDGE), |_| {}),
        Call::list_children(Kind::Deployment, &md, &[EDGE]),
        Call::list_children(Kind::Service, &md, &[EDGE]),
        Call::list(Kind::Hpa, vec![]),
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
    let mut foreign = Kind::Deployment.child(&previous, DC);
    foreign["metadata"]["name"] = json!("digits-canary");
    foreign["metadata"]["ownerReferences"][0]["uid"] = json!("someone-else");
    let mut deployments: Vec<_> = [DC, EDGE]
        .map(|t| Kind::Deployment.child(&previous, t))
        .to_vec();
    deployments.push(foreign);

    let calls = vec![
        Call::apply(Kind::Deployment.of(EDGE), |d| {
            assert_eq!(d["spec"]["replicas"], 1);
            // No datacenter tier any more: nothing to offload to.
            assert_eq!(env_of(d, "EDGESERVE_UPSTREAM"), None);
        }),
        Call::apply(Kind::Service.of(EDGE), |_| {}),
        Call::list(Kind::Deployment, deployments),
        Call::delete(Kind::Deployment.of(DC), 200),
        Call::list_children(Kind::Service, &previous, &[DC, EDGE]),
        Call::delete(Kind::Service.of(DC), 200),
        Call::list_children(Kind::Hpa, &previous, &[DC, EDGE]),
        // Gone already (someone raced us): still fine.
        Call::delete(Kind::Hpa.of(DC), 404),
        // Autoscaling was switched off: the edge HPA goes too.
        Call::delete(Kind::Hpa.of(EDGE), 200),
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
    let mut gone = md.clone();
    gone.metadata.finalizers = Some(vec![]);
    let calls = vec![
        Call::list_children(Kind::Deployment, &md, &[DC, EDGE]),
        Call::delete(Kind::Deployment.of(DC), 200),
        Call::delete(Kind::Deployment.of(EDGE), 200),
        Call::list_children(Kind::Service, &md, &[EDGE]),
        Call::delete(Kind::Service.of(EDGE), 200),
        Call::list(Kind::Hpa, vec![]),
        Call::json_patch(
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ]),
            &gone,
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
    let (ctx, server) = mock_api(vec![
        Call::apply(Kind::Deployment.of(EDGE), |_| {}).failing(500),
    ]);
    let md = Arc::new(md);
    let result = reconcile(md.clone(), ctx.clone()).await;
    let error = result.expect_err("a 500 fails the reconcile");
    assert!(error.to_string().contains("etcd is on fire"), "{error}");

    let delays: Vec<_> = (0..8)
        .map(|_| error_policy(md.clone(), &error, ctx.clone()))
        .collect();
    let expected =
        [5, 10, 20, 40, 80, 160, 300, 300].map(|s| Action::requeue(Duration::from_secs(s)));
    assert_eq!(delays, expected);
    finish(ctx, server).await;
}

#[tokio::test]
async fn a_successful_reconcile_resets_the_backoff() {
    let md = Arc::new(test_md(Tier::Edge));
    let (ctx, server) = mock_api(vec![Call::add_finalizer(&md)]);
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

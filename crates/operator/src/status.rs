//! `ModelDeployment` status from the observed state of its Deployments: per-tier replica
//! counts and the `Ready`, `Progressing` and `Degraded` conditions.
//!
//! Pure functions of their inputs (the clock included), so every rule is unit-tested.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::crd::{DeployedTier, ModelDeployment, ModelDeploymentStatus, TierStatus};
use crate::resources::service_url;

/// Condition type: every deployed tier has all its replicas updated and available.
pub const READY: &str = "Ready";
/// Condition type: a rollout is under way.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: a rollout failed or the spec cannot be deployed.
pub const DEGRADED: &str = "Degraded";

/// Where one tier's Deployment stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Every desired replica is updated and available, and no old ones linger.
    Complete,
    /// Still rolling out; the text says what is awaited.
    InProgress(String),
    /// The Deployment controller gave up (progress deadline, replica failure).
    Failed(String),
}

/// Judges a Deployment as returned by the API server.
pub fn rollout(deployment: &Deployment) -> Rollout {
    let status = deployment.status.clone().unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    for c in &conditions {
        let reason = c.reason.clone().unwrap_or_default();
        let message = c.message.clone().unwrap_or_default();
        if c.type_ == "Progressing" && reason == "ProgressDeadlineExceeded" {
            return Rollout::Failed(message);
        }
        if c.type_ == "ReplicaFailure" && c.status == "True" {
            return Rollout::Failed(message);
        }
    }
    let generation = deployment.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::InProgress("waiting for the Deployment controller".to_owned());
    }
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let current = status.replicas.unwrap_or(0);
    if updated < desired {
        Rollout::InProgress(format!("{updated} of {desired} replicas updated"))
    } else if current > updated {
        Rollout::InProgress(format!(
            "{} old replicas pending termination",
            current - updated
        ))
    } else if available < desired {
        Rollout::InProgress(format!("{available} of {desired} replicas available"))
    } else {
        Rollout::Complete
    }
}

/// Makes the conditions of one new status: each carries over the previous `lastTransitionTime`
/// when its status is unchanged, so the time says when the status last flipped rather than
/// when it was last computed.
struct Conditions<'a> {
    previous: Option<&'a ModelDeploymentStatus>,
    generation: Option<i64>,
    now: &'a Time,
}

impl Conditions<'_> {
    fn of<'a>(md: &'a ModelDeployment, now: &'a Time) -> Conditions<'a> {
        Conditions {
            previous: md.status.as_ref(),
            generation: md.metadata.generation,
            now,
        }
    }

    fn make(&self, type_: &str, status: bool, reason: &str, message: String) -> Condition {
        let status = if status { "True" } else { "False" };
        let last_transition_time = self
            .previous
            .into_iter()
            .flat_map(|p| &p.conditions)
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| self.now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: self.generation,
            last_transition_time,
        }
    }
}

fn tier_status(md: &ModelDeployment, tier: DeployedTier, d: &Deployment) -> TierStatus {
    let status = d.status.clone().unwrap_or_default();
    TierStatus {
        replicas: d
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .or(status.replicas)
            .unwrap_or(0),
        ready_replicas: status.ready_replicas.unwrap_or(0),
        url: service_url(
            &md.name_any(),
            md.namespace().as_deref().unwrap_or("default"),
            tier,
        ),
    }
}

/// Status after applying the children: `deployments` holds each deployed tier's Deployment as
/// the API server returned it.
pub fn observed(
    md: &ModelDeployment,
    deployments: &[(DeployedTier, Deployment)],
    now: &Time,
) -> ModelDeploymentStatus {
    let conditions = Conditions::of(md, now);
    let mut status = ModelDeploymentStatus {
        observed_generation: md.metadata.generation,
        ..ModelDeploymentStatus::default()
    };
    let mut failed = Vec::new();
    let mut pending = Vec::new();
    for (tier, d) in deployments {
        let t = tier_status(md, *tier, d);
        match tier {
            DeployedTier::Edge => status.edge = Some(t),
            DeployedTier::Datacenter => status.datacenter = Some(t),
        }
        match rollout(d) {
            Rollout::Complete => {}
            Rollout::InProgress(why) => pending.push(format!("{}: {why}", tier.as_str())),
            Rollout::Failed(why) => failed.push(format!("{}: {why}", tier.as_str())),
        }
    }
    let ready = match (failed.is_empty(), pending.is_empty()) {
        (true, true) => conditions.make(
            READY,
            true,
            "AllTiersAvailable",
            "every tier has all replicas available".to_owned(),
        ),
        (true, false) => conditions.make(READY, false, "RollingOut", pending.join("; ")),
        (false, _) => conditions.make(READY, false, "RolloutFailed", failed.join("; ")),
    };
    let progressing = if pending.is_empty() {
        let message = "no rollout in progress".to_owned();
        conditions.make(PROGRESSING, false, "RolloutComplete", message)
    } else {
        conditions.make(PROGRESSING, true, "RollingOut", pending.join("; "))
    };
    let degraded = if failed.is_empty() {
        conditions.make(DEGRADED, false, "AsExpected", "no tier failed".to_owned())
    } else {
        conditions.make(DEGRADED, true, "RolloutFailed", failed.join("; "))
    };
    status.conditions = vec![ready, progressing, degraded];
    status
}

/// Status of a spec the operator refuses to deploy (the CRD's validation rules normally stop
/// such specs at the API server; this covers servers that skip CEL validation).
pub fn invalid(md: &ModelDeployment, message: &str, now: &Time) -> ModelDeploymentStatus {
    let conditions = Conditions::of(md, now);
    ModelDeploymentStatus {
        observed_generation: md.metadata.generation,
        conditions: [(READY, false), (PROGRESSING, false), (DEGRADED, true)]
            .map(|(type_, status)| {
                conditions.make(type_, status, "InvalidSpec", message.to_owned())
            })
            .to_vec(),
        edge: None,
        datacenter: None,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::crd::Tier;
    use crate::test_support::model_deployment;

    fn md() -> ModelDeployment {
        let mut md = model_deployment(Tier::Both);
        md.spec.replicas = Some(2);
        md.metadata.generation = Some(3);
        md
    }

    fn deployment(replicas: i32, updated: i32, available: i32, ready: i32) -> Deployment {
        Deployment {
            metadata: kube::api::ObjectMeta {
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(1),
                replicas: Some(updated),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                ready_replicas: Some(ready),
                ..Default::default()
            }),
        }
    }

    /// A Deployment of 2 replicas, 1 updated and available, with one condition.
    fn stuck(type_: &str, status: &str, reason: Option<&str>, message: &str) -> Deployment {
        let mut d = deployment(2, 1, 1, 1);
        d.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.map(str::to_owned),
            message: Some(message.to_owned()),
            ..Default::default()
        }]);
        d
    }

    fn time(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    /// Status of [`md`] with both tiers deployed, at t=100.
    fn both(datacenter: Deployment, edge: Deployment) -> ModelDeploymentStatus {
        let tiers = [
            (DeployedTier::Datacenter, datacenter),
            (DeployedTier::Edge, edge),
        ];
        observed(&md(), &tiers, &time(100))
    }

    fn find<'a>(status: &'a ModelDeploymentStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn rollout_judges_generation_updates_availability_and_failures() {
        assert_eq!(rollout(&deployment(2, 2, 2, 2)), Rollout::Complete);
        let mut stale = deployment(2, 2, 2, 2);
        stale.metadata.generation = Some(2);
        let mut old_pods = deployment(2, 2, 2, 2);
        old_pods.status.as_mut().unwrap().replicas = Some(3);
        // A fresh apply response carries no status at all yet.
        let mut fresh = deployment(1, 0, 0, 0);
        fresh.status = None;
        for in_progress in [
            deployment(2, 1, 1, 1),
            deployment(2, 2, 1, 1),
            stale,
            old_pods,
            fresh,
        ] {
            assert!(
                matches!(rollout(&in_progress), Rollout::InProgress(_)),
                "{in_progress:?}"
            );
        }
        let message = "ReplicaSet has timed out progressing";
        let deadline = stuck(
            "Progressing",
            "False",
            Some("ProgressDeadlineExceeded"),
            message,
        );
        assert_eq!(rollout(&deadline), Rollout::Failed(message.to_owned()));
    }

    #[test]
    fn all_tiers_available_is_ready() {
        let status = both(deployment(2, 2, 2, 2), deployment(2, 2, 2, 2));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(find(&status, READY).status, "True");
        assert_eq!(find(&status, PROGRESSING).status, "False");
        assert_eq!(find(&status, DEGRADED).status, "False");
        assert_eq!(find(&status, READY).observed_generation, Some(3));
        let edge = status.edge.unwrap();
        assert_eq!(edge.ready_replicas, 2);
        assert_eq!(edge.url, "http://digits-edge.ml.svc:8000");
        assert_eq!(status.datacenter.unwrap().replicas, 2);
    }

    #[test]
    fn one_tier_rolling_out_is_progressing_and_not_ready() {
        let status = both(deployment(2, 1, 1, 1), deployment(2, 2, 2, 2));
        assert_eq!(find(&status, READY).status, "False");
        assert_eq!(find(&status, PROGRESSING).status, "True");
        assert!(
            find(&status, PROGRESSING)
                .message
                .starts_with("datacenter:")
        );
        assert_eq!(find(&status, DEGRADED).status, "False");
        assert_eq!(status.datacenter.unwrap().ready_replicas, 1);
    }

    #[test]
    fn a_failed_tier_is_degraded() {
        let stuck = stuck("ReplicaFailure", "True", None, "exceeded quota");
        let status = observed(&md(), &[(DeployedTier::Edge, stuck)], &time(1));
        assert_eq!(find(&status, DEGRADED).status, "True");
        assert_eq!(find(&status, DEGRADED).message, "edge: exceeded quota");
        assert_eq!(find(&status, READY).reason, "RolloutFailed");
        assert!(status.datacenter.is_none());
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let mut md = md();
        // Rolling out at t=100, still at t=200 (Ready stays False since t=100), available
        // at t=300 (Ready flips; Degraded stays False since t=100).
        let mut statuses = Vec::new();
        for (t, d) in [
            (100, deployment(2, 1, 1, 1)),
            (200, deployment(2, 2, 1, 1)),
            (300, deployment(2, 2, 2, 2)),
        ] {
            let status = observed(&md, &[(DeployedTier::Edge, d)], &time(t));
            md.status = Some(status.clone());
            statuses.push(status);
        }
        assert_eq!(find(&statuses[1], READY).last_transition_time, time(100));
        assert_eq!(find(&statuses[2], READY).last_transition_time, time(300));
        assert_eq!(find(&statuses[2], DEGRADED).last_transition_time, time(100));
    }

    #[test]
    fn invalid_spec_is_degraded_and_not_ready() {
        let status = invalid(&md(), "set either replicas or autoscaling", &time(5));
        assert_eq!(find(&status, READY).status, "False");
        assert_eq!(find(&status, DEGRADED).status, "True");
        assert_eq!(find(&status, DEGRADED).reason, "InvalidSpec");
    }
}

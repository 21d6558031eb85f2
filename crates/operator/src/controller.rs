//! The reconciler: server-side applies each tier's children, prunes the ones no longer
//! wanted, reports status, and cleans up behind a finalizer.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::Error;
use crate::crd::{MAX_NAME_LEN, ModelDeployment, ModelDeploymentStatus};
use crate::resources::{self, INSTANCE_LABEL, MANAGER};
use crate::status;

/// Finalizer the operator puts on every `ModelDeployment` it reconciles.
pub const FINALIZER: &str = "edgeserve.dev/cleanup";
/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "edgeserve-operator";
/// Re-check a healthy resource this often even without events (drift, missed watches).
pub const RESYNC: Duration = Duration::from_secs(5 * 60);
/// First retry delay after a failed reconciliation; doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

/// What the reconciler and the error policy share.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Consecutive failures per resource, for the error policy's exponential backoff.
    failures: Mutex<HashMap<ObjectRef<ModelDeployment>, u32>>,
}

impl Context {
    /// A context around a client.
    pub fn new(client: Client) -> Self {
        Context {
            client,
            failures: Mutex::default(),
        }
    }

    /// Counts one more failure of `md` and returns the delay before its retry.
    fn next_backoff(&self, md: &ModelDeployment) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(ObjectRef::from_obj(md)).or_insert(0);
        *n = n.saturating_add(1);
        BACKOFF_BASE
            .saturating_mul(1u32.checked_shl(*n - 1).unwrap_or(u32::MAX))
            .min(BACKOFF_MAX)
    }

    fn reset_backoff(&self, md: &ModelDeployment) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&ObjectRef::from_obj(md));
    }
}

/// Reconciles one `ModelDeployment`: adds the finalizer first, then applies (or, once the
/// resource is being deleted, cleans up and removes the finalizer).
pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = md.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let mds: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&mds, FINALIZER, md.clone(), |event| async {
        match event {
            Event::Apply(md) => apply(&md, &ctx).await,
            Event::Cleanup(md) => cleanup(&md, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.reset_backoff(&md);
    }
    result
}

/// Retries a failed reconciliation after an exponential backoff (5 s, 10 s, … 5 min) that
/// resets on the resource's next success.
pub fn error_policy(md: Arc<ModelDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.next_backoff(&md);
    warn!(
        name = %md.name_any(),
        namespace = md.namespace().unwrap_or_default(),
        retry_in = ?delay,
        "reconcile failed: {error}"
    );
    Action::requeue(delay)
}

/// Label selector of a `ModelDeployment`'s children.
fn children_selector(md: &ModelDeployment) -> String {
    format!(
        "{INSTANCE_LABEL}={},app.kubernetes.io/managed-by={MANAGER}",
        md.name_any()
    )
}

async fn apply(md: &ModelDeployment, ctx: &Context) -> Result<Action, Error> {
    let namespace = md.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let name = md.name_any();
    let client = ctx.client.clone();
    let now = Time(Timestamp::now());

    let invalid = if name.len() > MAX_NAME_LEN {
        Some(format!(
            "name is {} characters, at most {MAX_NAME_LEN} fit child object names",
            name.len()
        ))
    } else {
        md.spec.validate().err()
    };
    if let Some(message) = invalid {
        warn!(%name, %namespace, "not deploying: {message}");
        patch_status(md, &client, status::invalid(md, &message, &now)).await?;
        // Retrying cannot help; the next spec edit triggers a new reconciliation.
        return Ok(Action::await_change());
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &namespace);
    // force: the operator owns these objects outright and takes fields over from whoever
    // edited them (kubectl edit, a previous operator version).
    let params = PatchParams::apply(FIELD_MANAGER).force();

    let mut applied = Vec::new();
    let mut keep_deployments = Vec::new();
    let mut keep_hpas = Vec::new();
    for objects in resources::desired(md)? {
        let child = resources::child_name(&name, objects.tier);
        let deployment = deployments
            .patch(&child, &params, &Patch::Apply(&objects.deployment))
            .await?;
        services
            .patch(&child, &params, &Patch::Apply(&objects.service))
            .await?;
        if let Some(hpa) = &objects.hpa {
            hpas.patch(&child, &params, &Patch::Apply(hpa)).await?;
            keep_hpas.push(child.clone());
        }
        keep_deployments.push(child);
        applied.push((objects.tier, deployment));
    }
    // Prune after applying, so a tier being added serves before one being dropped goes.
    // Services go with their Deployments; HPAs also go when autoscaling is switched off.
    prune(&deployments, md, &keep_deployments).await?;
    prune(&services, md, &keep_deployments).await?;
    prune(&hpas, md, &keep_hpas).await?;

    let status = status::observed(md, &applied, &now);
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == status::READY && c.status == "True");
    patch_status(md, &client, status).await?;
    info!(%name, %namespace, ready, "reconciled");
    Ok(Action::requeue(RESYNC))
}

/// Deletes every child of `md` the selector finds, except those named in `keep`.
async fn cleanup(md: &ModelDeployment, ctx: &Context) -> Result<Action, Error> {
    let namespace = md.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let client = ctx.client.clone();
    // Owner references would let the garbage collector do this eventually; deleting here
    // frees GPUs now and keeps the finalizer until the children are really asked to go.
    prune(
        &Api::<Deployment>::namespaced(client.clone(), &namespace),
        md,
        &[],
    )
    .await?;
    prune(
        &Api::<Service>::namespaced(client.clone(), &namespace),
        md,
        &[],
    )
    .await?;
    prune(
        &Api::<HorizontalPodAutoscaler>::namespaced(client, &namespace),
        md,
        &[],
    )
    .await?;
    info!(name = %md.name_any(), %namespace, "cleaned up");
    Ok(Action::await_change())
}

/// Deletes the children of `md` of one kind whose names are not in `keep`. Only objects whose
/// controlling owner is this very `ModelDeployment` (by uid) are touched, so a look-alike
/// object somebody else created with the same labels is left alone.
async fn prune<K>(api: &Api<K>, md: &ModelDeployment, keep: &[String]) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let uid = md.uid();
    let children = api
        .list(&ListParams::default().labels(&children_selector(md)))
        .await?;
    for child in children {
        let owned = child
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref());
        let name = child.name_any();
        if !owned || keep.contains(&name) {
            continue;
        }
        info!(%name, "deleting child no longer wanted");
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            // Already gone: exactly what was wanted.
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn patch_status(
    md: &ModelDeployment,
    client: &Client,
    status: ModelDeploymentStatus,
) -> Result<(), Error> {
    let namespace = md.namespace().ok_or(Error::MissingObjectKey("namespace"))?;
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), &namespace);
    let patch = Patch::Apply(serde_json::json!({
        "apiVersion": ModelDeployment::api_version(&()),
        "kind": ModelDeployment::kind(&()),
        "status": status,
    }));
    mds.patch_status(
        &md.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &patch,
    )
    .await?;
    Ok(())
}

/// Runs the controller until SIGINT/SIGTERM: watches `ModelDeployment`s (in `namespace`, or
/// in every namespace) and the Deployments, Services and HPAs they own.
///
/// Fails at once when the CRD is not installed (or not readable with the operator's RBAC).
pub async fn run(client: Client, namespace: Option<&str>) -> Result<(), Error> {
    let (mds, deployments, services, hpas) = match namespace {
        Some(ns) => (
            Api::<ModelDeployment>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
            Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    mds.list(&ListParams::default().limit(1)).await?;
    // Only children carry this label; watching just them keeps the caches small.
    let children =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let ctx = Arc::new(Context::new(client));
    info!(
        namespace = namespace.unwrap_or("<all>"),
        "edgeserve operator started"
    );
    Controller::new(mds, watcher::Config::default())
        .owns(deployments, children.clone())
        .owns(services, children.clone())
        .owns(hpas, children)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(e) => warn!("reconcile: {e}"),
            }
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests;

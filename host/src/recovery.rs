//! Surviving a lost GPU: a driver reset or a removed device ends every
//! buffer and pipeline on it, so the models that ran there are reloaded
//! onto a freshly opened device, or onto the CPU backend when `--device
//! auto` finds no GPU any more.
//!
//! A watcher thread notices the loss (wgpu's device-lost callback marks the
//! backend), counts it (`edgeserve_device_losses_total`), takes the GPU's
//! models out of service, so that their requests get a 503 with
//! `Retry-After` rather than a 500, reopens the device and reloads them.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::devices::{DeviceError, Devices};
use crate::metrics::{DeviceLabels, Metrics};
use crate::registry::ModelRegistry;

/// How often the watcher looks at the GPU: a loss costs requests at most
/// this long before they are told to retry.
const POLL: Duration = Duration::from_millis(50);

/// Wait between attempts to reopen a GPU that will not open yet.
const REOPEN_RETRY: Duration = Duration::from_secs(1);

/// Watches the GPU of `registry`'s devices, when it has one, until the
/// registry is dropped, recovering from each loss.
pub(crate) fn watch(
    registry: &Arc<ModelRegistry>,
    metrics: Arc<Metrics>,
) -> Result<(), DeviceError> {
    if registry.devices().gpu().is_none() {
        return Ok(());
    }
    let registry = Arc::downgrade(registry);
    std::thread::Builder::new()
        .name("edgeserve-gpu-watch".into())
        .spawn(move || watch_loop(&registry, &metrics))
        .map(drop)
        .map_err(DeviceError::Watch)
}

fn watch_loop(registry: &Weak<ModelRegistry>, metrics: &Metrics) {
    loop {
        std::thread::sleep(POLL);
        let Some(registry) = registry.upgrade() else {
            return;
        };
        if let Some(reason) = registry.devices().gpu_lost() {
            recover(&registry, metrics, &reason);
        }
        if registry.devices().gpu().is_none() {
            // Fell back to the CPU: nothing left to watch.
            return;
        }
    }
}

/// Replaces the lost GPU and reloads the models that ran on it.
fn recover(registry: &ModelRegistry, metrics: &Metrics, reason: &str) {
    let started = Instant::now();
    metrics.device_losses.inc();
    let models = registry.suspend_gpu_models(reason);
    tracing::error!(
        reason,
        ?models,
        "GPU lost: reopening it and reloading its models"
    );
    let device = loop {
        match registry.devices().reopen_gpu() {
            Ok(device) => break device,
            Err(e) => {
                tracing::error!("cannot reopen the GPU ({e}); retrying");
                std::thread::sleep(REOPEN_RETRY);
            }
        }
    };
    record_devices(metrics, registry.devices());
    for name in &models {
        if let Err(e) = registry.load(name) {
            tracing::error!(model = %name, "not serving after the GPU loss: {e}");
        }
    }
    tracing::warn!(
        kind = device.kind,
        device = %device.device,
        ?models,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered from the GPU loss"
    );
}

/// Sets `edgeserve_device_info` to the open devices: 1 for the default, 0
/// for the others; a device no longer open loses its series.
pub(crate) fn record_devices(metrics: &Metrics, devices: &Devices) {
    let default = devices.default_info();
    metrics.device.clear();
    for info in devices.all() {
        let is_default = info == default;
        metrics
            .device
            .get_or_create(&DeviceLabels {
                kind: info.kind.into(),
                device: info.device,
                api: info.api,
                driver: info.driver,
            })
            .set(i64::from(is_default));
    }
}

//! A model version's pool of warm instances.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::instance::{Fault, Instance};

/// Makes a fresh, initialized instance.
pub type Factory = Arc<dyn Fn() -> Result<Instance, Fault> + Send + Sync>;

/// Why the pool could not run a call.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PoolError {
    /// No instance became free within the queue deadline.
    #[error("model {model} is busy: no instance became free within {waited_ms} ms")]
    Busy {
        /// The model.
        model: Arc<str>,
        /// How long the request waited.
        waited_ms: u64,
    },
    /// The call itself failed.
    #[error(transparent)]
    Fault(#[from] Fault),
}

/// How long a call queued and ran.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Waiting for a free instance.
    pub queue: Duration,
    /// Running in the instance.
    pub compute: Duration,
}

/// Warm instances of one model version. Each call borrows one instance
/// exclusively; an instance that faults is discarded and replaced in the
/// background while the others keep serving.
pub struct InstancePool {
    label: Arc<str>,
    idle: Mutex<Vec<Instance>>,
    permits: Arc<Semaphore>,
    factory: Factory,
    queue_timeout: Duration,
    live: Gauge,
}

impl InstancePool {
    /// Starts `size` instances with `factory`; fails on the first that
    /// cannot start, so a broken model never goes live.
    pub fn start(
        label: Arc<str>,
        size: usize,
        factory: Factory,
        queue_timeout: Duration,
        live: Gauge,
    ) -> Result<InstancePool, Fault> {
        let idle = (0..size)
            .map(|_| factory())
            .collect::<Result<Vec<_>, _>>()?;
        live.set(size as i64);
        Ok(InstancePool {
            label,
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(size)),
            factory,
            queue_timeout,
            live,
        })
    }

    /// Runs `call` on an idle instance right now, on this thread; for use
    /// while the model is being loaded and no request can hold one.
    pub fn with_idle<R>(
        &self,
        call: impl FnOnce(&mut Instance) -> Result<R, Fault>,
    ) -> Result<R, Fault> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let instance = idle.last_mut().expect("a started pool has an instance");
        call(instance)
    }

    /// Instances currently alive (idle or busy).
    pub fn live(&self) -> i64 {
        self.live.get()
    }

    /// Instances free right now (not lent to a call).
    pub fn idle(&self) -> usize {
        self.permits.available_permits()
    }

    /// Runs `call` on a free instance, waiting at most the queue deadline.
    pub async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        call: impl FnOnce(&mut Instance) -> Result<R, Fault> + Send + 'static,
    ) -> Result<(R, Timing), PoolError> {
        let queued = Instant::now();
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::Busy {
                model: self.label.clone(),
                waited_ms: queued.elapsed().as_millis() as u64,
            })?
            .expect("the pool never closes its semaphore");
        let queue = queued.elapsed();
        let pool = self.clone();
        // Everything after this point runs to completion even if the client
        // goes away, so the instance always returns to the pool.
        let task = tokio::task::spawn_blocking(move || {
            let mut instance = pool.take();
            let started = Instant::now();
            let result = call(&mut instance);
            let compute = started.elapsed();
            match &result {
                Err(fault) if fault.poisons_instance() => {
                    tracing::warn!(model = %pool.label, "{fault}; replacing the instance");
                    drop(instance);
                    pool.clone().replace(permit);
                }
                _ => pool.give_back(instance, permit),
            }
            result.map(|r| (r, Timing { queue, compute }))
        });
        Ok(task.await.expect("instance calls do not panic")?)
    }

    fn take(&self) -> Instance {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .expect("a permit always has an idle instance behind it")
    }

    fn give_back(&self, instance: Instance, permit: OwnedSemaphorePermit) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(instance);
        drop(permit);
    }

    /// Starts a replacement in the background; its permit is released only
    /// once it is ready, so no request waits on a half-built instance.
    fn replace(self: Arc<Self>, permit: OwnedSemaphorePermit) {
        self.live.dec();
        tokio::task::spawn_blocking(move || match (self.factory)() {
            Ok(instance) => {
                self.live.inc();
                self.give_back(instance, permit);
            }
            Err(fault) => {
                tracing::error!(model = %self.label, "cannot replace a failed instance: {fault}");
                permit.forget();
            }
        });
    }
}

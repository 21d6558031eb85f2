//! A model version's pool of warm instances.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::instance::{Fault, Instance};

/// Makes a fresh, initialized instance; it blocks the calling thread, so it
/// never runs on an async worker.
pub type Factory = Arc<dyn Fn() -> Result<Instance, Fault> + Send + Sync>;

/// Calls that recently took at most this long on average start on the async
/// worker that took the request (no thread hop). Longer ones run on a
/// blocking thread: a worker held for milliseconds stalls every connection
/// it serves. A call started on the worker that runs on for a whole epoch
/// tick (the guest yields then) finishes on a blocking thread too; only a
/// single host kernel it is inside can hold the worker longer.
const INLINE_CALLS: Duration = Duration::from_micros(200);

/// The running average of a pool's calls before any has finished: unknown,
/// so the first calls run on a blocking thread.
const UNMEASURED: u64 = u64::MAX;

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
    /// Whether a call may resume on another thread than it started on
    /// (false where the backend keeps per-thread state, e.g. a GPU's
    /// command recording), which running on an async worker allows.
    movable: bool,
    /// Running average of recent calls, in microseconds.
    recent_us: AtomicU64,
}

impl InstancePool {
    /// Starts `size` instances with `factory`; fails on the first that
    /// cannot start, so a broken model never goes live. `movable`: whether
    /// a call may move between threads while it runs.
    pub fn start(
        label: Arc<str>,
        size: usize,
        factory: Factory,
        queue_timeout: Duration,
        live: Gauge,
        movable: bool,
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
            movable,
            recent_us: AtomicU64::new(UNMEASURED),
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

    /// Runs `call` on every idle instance, one after another, on this
    /// thread, stopping at the first failure; for use while the model is
    /// being loaded and no request can hold one.
    pub fn with_each_idle(
        &self,
        call: impl FnMut(&mut Instance) -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.iter_mut().try_for_each(call)
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
        call: impl for<'a> FnOnce(&'a mut Instance) -> BoxFuture<'a, Result<R, Fault>> + Send + 'static,
    ) -> Result<(R, Timing), PoolError> {
        let queued = Instant::now();
        // A free instance is taken at once, without arming the queue
        // deadline's timer.
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
                    .await
                    .map_err(|_| PoolError::Busy {
                        model: self.label.clone(),
                        waited_ms: queued.elapsed().as_millis() as u64,
                    })?
                    .expect("the pool never closes its semaphore")
            }
        };
        let queue = queued.elapsed();
        let pool = self.clone();
        // Everything after this point runs to completion in its own task even
        // if the client goes away, so the instance always returns to the pool.
        let work = Box::pin(async move {
            let mut instance = pool.take();
            let started = Instant::now();
            // A panic is a bug in the host (a kernel, the runtime), not the
            // guest's doing. It fails this call alone: the instance it left
            // mid-call is replaced like a trapped one, and the pool keeps
            // its size.
            let result = match AssertUnwindSafe(call(&mut instance)).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => Err(Fault::HostPanic {
                    model: pool.label.clone(),
                    message: panic_message(panic.as_ref()),
                }),
            };
            let compute = started.elapsed();
            pool.record(compute);
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
        let task = if self.inline() {
            tokio::spawn(async move {
                let mut work = work;
                match (&mut work).now_or_never() {
                    Some(done) => done,
                    None => on_blocking_thread(work)
                        .await
                        .expect("instance calls do not panic"),
                }
            })
        } else {
            on_blocking_thread(work)
        };
        Ok(task.await.expect("instance calls do not panic")?)
    }

    /// Whether the next call runs on the async worker: its calls are short
    /// and may move between threads.
    fn inline(&self) -> bool {
        self.movable && self.recent_us.load(Ordering::Relaxed) <= INLINE_CALLS.as_micros() as u64
    }

    /// Folds a call's duration into the running average (weight 1/8).
    fn record(&self, compute: Duration) {
        let took = compute.as_micros().min(UNMEASURED as u128 - 1) as u64;
        let _ = self
            .recent_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |recent| {
                Some(match recent {
                    UNMEASURED => took,
                    recent => recent - recent / 8 + took / 8,
                })
            });
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

/// Finishes `work` on a blocking thread, where it may hold the thread.
fn on_blocking_thread<T: Send + 'static>(work: BoxFuture<'static, T>) -> JoinHandle<T> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || runtime.block_on(work))
}

/// What a panic said, when it said it in text.
fn panic_message(panic: &(dyn Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_owned(),
        (_, Some(text)) => text.clone(),
        _ => "a panic with no message".to_owned(),
    }
}

//! Dynamic batching: requests queued for a model that agree on their
//! inputs' layouts, their parameters and their requested outputs run as one
//! handler call on their inputs stacked along axis 0, and each gets its own
//! rows of every output back.
//!
//! A batch forms around its first request: it waits up to the model's
//! `max_queue_delay_us` for others (less when it reaches `max_batch_size` or
//! a preferred size), then queues for a free instance, taking in whoever
//! arrives meanwhile until it is full. A request that finds the model idle
//! (no batch forming or running) does not wait unless `wait_when_idle`:
//! with no one else in flight the window would only add its length to a
//! lone client's latency, and whoever arrives while it queues for an
//! instance still joins it. For the same reason a batch still forming when
//! the model's last running batch ends goes at once. The batch is driven by a task of its
//! own, so a client that hangs up never strands the others; its rows are
//! left out of the call.

mod rows;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Notify, oneshot};

use super::{Fault, Instance, InstancePool, Parameter, PoolError, Timing, Value};
use crate::repository::BatchingConfig;
use rows::Layout;

/// A request's outputs and how long it queued and ran.
pub type Answer = Result<(Vec<(String, Value)>, Timing), PoolError>;

/// The batching series of one model version.
#[derive(Clone, Debug)]
pub struct BatchMetrics {
    /// Rows of each batched handler call.
    pub size: Histogram,
    /// Time from a batch's first request to the batch's start.
    pub wait: Histogram,
}

/// Runs a model's requests on its instance pool, batching those that can be.
pub struct Batcher {
    label: Arc<str>,
    pool: Arc<InstancePool>,
    config: Option<BatchingConfig>,
    metrics: BatchMetrics,
    queue: Mutex<Queue>,
}

/// What requests of one batch agree on.
#[derive(Debug, PartialEq)]
struct Key {
    inputs: Vec<(String, Layout)>,
    parameters: Vec<Parameter>,
    outputs: Option<Vec<String>>,
}

/// A queued request.
struct Member {
    inputs: Vec<Value>,
    rows: usize,
    queued: Instant,
    reply: oneshot::Sender<Answer>,
}

/// A batch being formed.
struct Group {
    id: u64,
    key: Key,
    rows: usize,
    opened: Instant,
    members: Vec<Member>,
    ready: Arc<Notify>,
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    groups: Vec<Group>,
    /// Batches opened and not yet finished: forming, queued or running.
    open: usize,
}

/// Counts one batch as open for as long as its task lives.
struct Open<'a> {
    queue: &'a Mutex<Queue>,
    /// Whether batches still forming go as soon as the model is idle
    /// (not `wait_when_idle`).
    go_when_idle: bool,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.open -= 1;
        // The last batch running is done: one that formed meanwhile (its
        // request came as this one finished) has no one left to wait for.
        if self.go_when_idle && queue.open == queue.groups.len() {
            for group in &queue.groups {
                group.ready.notify_one();
            }
        }
    }
}

impl Batcher {
    /// Runs requests on `pool`, batched as `config` says (`None`: each
    /// alone).
    pub fn new(
        label: Arc<str>,
        pool: Arc<InstancePool>,
        config: Option<BatchingConfig>,
        metrics: BatchMetrics,
    ) -> Batcher {
        Batcher {
            label,
            pool,
            config: config.filter(BatchingConfig::enabled),
            metrics,
            queue: Mutex::default(),
        }
    }

    /// Runs one request, in a batch with others when it can be; its
    /// answer is the one it would have had alone.
    pub async fn run(
        self: &Arc<Self>,
        inputs: Vec<(String, Value)>,
        parameters: Vec<Parameter>,
        outputs: Option<Vec<String>>,
    ) -> Answer {
        let (key, inputs, rows) = match self.route(inputs, parameters, outputs) {
            Route::Alone(inputs, parameters, outputs) => {
                return self
                    .pool
                    .run(move |instance| Box::pin(instance.infer(inputs, parameters, outputs)))
                    .await;
            }
            Route::Batched { key, inputs, rows } => (key, inputs, rows),
        };
        let (reply, answer) = oneshot::channel();
        let member = Member {
            inputs,
            rows,
            queued: Instant::now(),
            reply,
        };
        self.enqueue(key, member);
        answer.await.unwrap_or_else(|_| {
            Err(PoolError::Fault(Fault::Failed {
                model: self.label.clone(),
                message: "its batch was dropped before it ran (the server is stopping)".into(),
            }))
        })
    }

    /// Whether a request can join a batch, and what it must agree on.
    fn route(
        &self,
        inputs: Vec<(String, Value)>,
        parameters: Vec<Parameter>,
        outputs: Option<Vec<String>>,
    ) -> Route {
        let Some(config) = &self.config else {
            return Route::Alone(inputs, parameters, outputs);
        };
        let mut layouts = Vec::with_capacity(inputs.len());
        let mut rows = None;
        for (_, value) in &inputs {
            match rows::layout(value) {
                // Every input has the same rows, or axis 0 is not the batch.
                Some((layout, n)) if n > 0 && rows.is_none_or(|r| r == n) => {
                    rows = Some(n);
                    layouts.push(layout);
                }
                _ => return Route::Alone(inputs, parameters, outputs),
            }
        }
        // A request as large as a batch has no one to share it with.
        match rows {
            Some(rows) if rows < config.max_batch_size => {
                let (names, inputs): (Vec<String>, Vec<Value>) = inputs.into_iter().unzip();
                let key = Key {
                    inputs: names.into_iter().zip(layouts).collect(),
                    parameters,
                    outputs,
                };
                Route::Batched { key, inputs, rows }
            }
            _ => Route::Alone(inputs, parameters, outputs),
        }
    }

    /// Puts `member` into the first forming batch it fits, or opens one
    /// and starts the task that runs it.
    fn enqueue(self: &Arc<Self>, key: Key, member: Member) {
        let config = self.config.as_ref().expect("only a batching model queues");
        let full = |rows: usize| {
            rows == config.max_batch_size || config.preferred_batch_sizes.contains(&rows)
        };
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(group) = queue
            .groups
            .iter_mut()
            .find(|g| g.rows + member.rows <= config.max_batch_size && g.key == key)
        {
            group.rows += member.rows;
            group.members.push(member);
            if full(group.rows) {
                group.ready.notify_one();
            }
            return;
        }
        let id = queue.next_id;
        queue.next_id += 1;
        let ready = Arc::new(Notify::new());
        if full(member.rows) || (queue.open == 0 && !config.wait_when_idle) {
            ready.notify_one();
        }
        queue.open += 1;
        queue.groups.push(Group {
            id,
            key,
            rows: member.rows,
            opened: Instant::now(),
            members: vec![member],
            ready: ready.clone(),
        });
        drop(queue);
        let delay = config.max_queue_delay();
        let go_when_idle = !config.wait_when_idle;
        let batcher = self.clone();
        tokio::spawn(async move {
            let _open = Open {
                queue: &batcher.queue,
                go_when_idle,
            };
            tokio::select! {
                _ = ready.notified() => {}
                _ = tokio::time::sleep(delay) => {}
            }
            let runner = batcher.clone();
            let ran = batcher
                .pool
                .run(move |instance| Box::pin(async move { runner.dispatch(id, instance).await }))
                .await;
            // A fault was answered by `dispatch`; a busy pool never ran it.
            if let Err(PoolError::Busy { .. }) = ran
                && let Some(group) = batcher.take(id)
            {
                for member in group.members {
                    let _ = member.reply.send(Err(PoolError::Busy {
                        model: batcher.label.clone(),
                        waited_ms: member.queued.elapsed().as_millis() as u64,
                    }));
                }
            }
        });
    }

    /// Takes batch `id` out of the queue: no one joins it after this.
    fn take(&self, id: u64) -> Option<Group> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let at = queue.groups.iter().position(|g| g.id == id)?;
        Some(queue.groups.remove(at))
    }

    /// Runs batch `id` on `instance` and answers each member; returns the
    /// fault that must retire the instance, if any.
    async fn dispatch(&self, id: u64, instance: &mut Instance) -> Result<(), Fault> {
        let Some(group) = self.take(id) else {
            return Ok(());
        };
        let started = Instant::now();
        self.metrics
            .wait
            .observe(started.duration_since(group.opened).as_secs_f64());
        // Whoever hung up while queued is left out.
        let mut members: Vec<Member> = group
            .members
            .into_iter()
            .filter(|m| !m.reply.is_closed())
            .collect();
        let rows: Vec<usize> = members.iter().map(|m| m.rows).collect();
        if members.is_empty() {
            return Ok(());
        }
        self.metrics.size.observe(rows.iter().sum::<usize>() as f64);
        let key = group.key;
        let names = key.inputs.iter().map(|(name, _)| name.clone());
        let inputs = match members.as_mut_slice() {
            // A batch of one runs on its own inputs, uncopied.
            [only] => names.zip(std::mem::take(&mut only.inputs)).collect(),
            _ => names
                .enumerate()
                .map(|(i, name)| {
                    let parts: Vec<&Value> = members.iter().map(|m| &m.inputs[i]).collect();
                    (name, rows::concat(&parts))
                })
                .collect(),
        };
        let ran = instance
            .infer(inputs, key.parameters.clone(), key.outputs.clone())
            .await;
        let compute = started.elapsed();
        match ran {
            Ok(outputs) => match self.cut(outputs, &rows) {
                Ok(pieces) => {
                    for (member, outputs) in members.into_iter().zip(pieces) {
                        let queue = started.duration_since(member.queued);
                        let _ = member.reply.send(Ok((outputs, Timing { queue, compute })));
                    }
                }
                Err(fault) => answer_all(members, &fault),
            },
            // One member's bad input must not fail the others: each runs
            // alone, so only the requests it concerns fail.
            Err(fault) if fault.is_client_error() && members.len() > 1 => {
                let mut members = members.into_iter();
                for member in members.by_ref() {
                    let inputs = key.inputs.iter().map(|(n, _)| n.clone()).zip(member.inputs);
                    let started = Instant::now();
                    let ran = instance
                        .infer(
                            inputs.collect(),
                            key.parameters.clone(),
                            key.outputs.clone(),
                        )
                        .await;
                    let timing = Timing {
                        queue: started.duration_since(member.queued),
                        compute: started.elapsed(),
                    };
                    match ran {
                        Err(fault) if fault.poisons_instance() => {
                            let _ = member.reply.send(Err(fault.clone().into()));
                            answer_all(members.collect(), &fault);
                            return Err(fault);
                        }
                        ran => {
                            let _ = member
                                .reply
                                .send(ran.map(|o| (o, timing)).map_err(Into::into));
                        }
                    }
                }
            }
            Err(fault) => {
                answer_all(members, &fault);
                if fault.poisons_instance() {
                    return Err(fault);
                }
            }
        }
        Ok(())
    }

    /// Each output of a batch cut into its members' rows, per member.
    fn cut(
        &self,
        outputs: Vec<(String, Value)>,
        rows: &[usize],
    ) -> Result<Vec<Vec<(String, Value)>>, Fault> {
        let mut per_member: Vec<Vec<(String, Value)>> = rows
            .iter()
            .map(|_| Vec::with_capacity(outputs.len()))
            .collect();
        for (name, value) in outputs {
            let pieces = rows::split(&name, value, rows).map_err(|e| Fault::BadOutput {
                model: self.label.clone(),
                message: e.to_string(),
            })?;
            // Zero padding to the batch's longest member is cut back to
            // each member's own.
            let padded = self
                .config
                .as_ref()
                .is_some_and(|c| c.padded_outputs.contains(&name));
            for (member, piece) in per_member.iter_mut().zip(pieces) {
                let piece = if padded {
                    rows::trim_zero_columns(piece)
                } else {
                    piece
                };
                member.push((name.clone(), piece));
            }
        }
        Ok(per_member)
    }
}

/// Where a request runs.
enum Route {
    /// On its own.
    Alone(Vec<(String, Value)>, Vec<Parameter>, Option<Vec<String>>),
    /// In a batch of requests that agree on `key`.
    Batched {
        key: Key,
        inputs: Vec<Value>,
        rows: usize,
    },
}

/// Sends `fault` to every member.
fn answer_all(members: Vec<Member>, fault: &Fault) {
    for member in members {
        let _ = member.reply.send(Err(fault.clone().into()));
    }
}

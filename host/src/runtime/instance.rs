//! One sandboxed handler instance and the calls into it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeserve_tensor::{Tensor, TensorError, deadline};
use wasmtime::{Store, UpdateDeadline};

use super::EpochTicks;
use super::bindings::{
    self, BytesTensor, InferError, InferRequest, ModelHandler, ModelHandlerPre, ModelMetadata,
    NamedTensor, TensorData,
};
use super::context::ModelContext;
use super::state::InstanceState;
use crate::capability::OutputSink;

/// One input or output of a request, on the host side.
#[derive(Clone, Debug)]
pub enum Value {
    /// A numeric tensor in host memory.
    Numeric(Tensor),
    /// A BYTES tensor.
    Bytes {
        /// Dimensions.
        shape: Vec<usize>,
        /// Elements in row-major order.
        elements: Vec<Vec<u8>>,
    },
}

/// An output taken from the handler, numeric ones still where the backend
/// keeps them.
enum Collected {
    Ready(Value),
    Numeric(Tensor),
}

impl Value {
    /// Dimensions.
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::Numeric(tensor) => tensor.shape(),
            Value::Bytes { shape, .. } => shape,
        }
    }
}

/// A request parameter's value.
#[derive(Clone, Debug, PartialEq)]
pub enum ParameterValue {
    /// A boolean.
    Boolean(bool),
    /// An integer.
    Integer(i64),
    /// A floating-point number.
    Double(f64),
    /// A string.
    Text(String),
}

impl From<ParameterValue> for bindings::ParameterValue {
    fn from(value: ParameterValue) -> bindings::ParameterValue {
        match value {
            ParameterValue::Boolean(b) => bindings::ParameterValue::Boolean(b),
            ParameterValue::Integer(i) => bindings::ParameterValue::Integer(i),
            ParameterValue::Double(x) => bindings::ParameterValue::Double(x),
            ParameterValue::Text(s) => bindings::ParameterValue::Text(s),
        }
    }
}

/// A request parameter (the OIP `parameters` object, flattened).
pub type Parameter = (String, ParameterValue);

/// A request every instance of a model answers at load, before it serves
/// (the model config's `warmup`), so that the one-time work of a first
/// request happens then.
#[derive(Clone, Debug)]
pub struct WarmUp {
    /// Where it came from, for messages.
    pub source: String,
    /// Inputs by name.
    pub inputs: Vec<(String, Value)>,
    /// Request parameters.
    pub parameters: Vec<Parameter>,
    /// Outputs asked for; `None`: all of them.
    pub outputs: Option<Vec<String>>,
}

/// The shortest deadline a warm-up request runs under, whatever the
/// model's: it pays for one-time work that a request's deadline does not
/// allow for (a software Vulkan driver compiles each kernel at its first
/// dispatch, which took digits' first request past 1 s on a fresh machine).
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call into a handler failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Fault {
    /// The handler refused the request as invalid.
    #[error("model {model} rejected the request: {message}")]
    Rejected {
        /// The model.
        model: Arc<str>,
        /// The handler's words.
        message: String,
    },
    /// The handler reported an internal failure.
    #[error("model {model} failed: {message}")]
    Failed {
        /// The model.
        model: Arc<str>,
        /// The handler's words.
        message: String,
    },
    /// The guest trapped (panic, unreachable, bad memory access…).
    #[error("model {model} trapped: {message}")]
    Trap {
        /// The model.
        model: Arc<str>,
        /// The trap and its wasm backtrace.
        message: String,
    },
    /// The host panicked while serving the call: a bug in edgeserve, not
    /// in the model. The instance is replaced.
    #[error("model {model} hit a bug in the server, which panicked: {message}")]
    HostPanic {
        /// The model.
        model: Arc<str>,
        /// The panic's message.
        message: String,
    },
    /// The call ran past its deadline and was interrupted.
    #[error("model {model} exceeded its {timeout_ms} ms deadline and was stopped")]
    Deadline {
        /// The model.
        model: Arc<str>,
        /// The deadline.
        timeout_ms: u64,
    },
    /// The device the model runs on was lost mid-request; the model is
    /// being reloaded onto a replacement, so the client may retry.
    #[error("model {model} lost its device ({message}); it is being reloaded, retry shortly")]
    DeviceLost {
        /// The model.
        model: Arc<str>,
        /// What happened to the device.
        message: String,
    },
    /// The guest tried to grow its linear memory past the cap.
    #[error("model {model} exceeded its memory limit of {limit_mib} MiB and was stopped")]
    MemoryLimit {
        /// The model.
        model: Arc<str>,
        /// The cap.
        limit_mib: u64,
    },
    /// An input could not be handed to the guest (e.g. over the tensor cap).
    #[error("model {model} cannot take input '{input}': {message}")]
    Input {
        /// The model.
        model: Arc<str>,
        /// The input's name.
        input: String,
        /// Why.
        message: String,
    },
    /// The handler returned something the host cannot use.
    #[error("model {model} returned an unusable output: {message}")]
    BadOutput {
        /// The model.
        model: Arc<str>,
        /// What is wrong.
        message: String,
    },
}

impl Fault {
    /// Whether the instance must be discarded: its state may be corrupt, or
    /// it is still mid-call.
    pub fn poisons_instance(&self) -> bool {
        matches!(
            self,
            Fault::Trap { .. }
                | Fault::HostPanic { .. }
                | Fault::Deadline { .. }
                | Fault::MemoryLimit { .. }
                | Fault::DeviceLost { .. }
        )
    }

    /// Whether the fault is the client's doing (an HTTP 4xx).
    pub fn is_client_error(&self) -> bool {
        matches!(self, Fault::Rejected { .. } | Fault::Input { .. })
    }
}

/// A warm, initialized handler instance with its own store.
pub struct Instance {
    store: Store<InstanceState>,
    bindings: ModelHandler,
    timeout: Duration,
    /// When the current call must end: the epoch deadline's twin, which
    /// host operations honour ([`deadline`]).
    deadline: Instant,
    memory_limit_mib: u64,
    _ticks: Arc<EpochTicks>,
}

impl Instance {
    /// Instantiates `component` and runs its `init`.
    pub(super) async fn start(
        pre: &ModelHandlerPre<InstanceState>,
        context: Arc<ModelContext>,
        timeout: Duration,
        memory_limit: usize,
        ticks: Arc<EpochTicks>,
    ) -> Result<Instance, Fault> {
        let label = context.label.clone();
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stdout(super::stdio::LogStream::new(label.clone(), "stdout"))
            .stderr(super::stdio::LogStream::new(label.clone(), "stderr"))
            .build();
        let mut store = Store::new(
            pre.engine(),
            InstanceState::new(wasi, context, memory_limit),
        );
        store.limiter(|state| &mut state.limiter);
        // Every epoch tick a running call checks its deadline (stated
        // around each poll, `deadline::within_polls`): past it, the call
        // traps; before it, the call yields, which moves a call that started
        // on an async worker off it (see `pool`).
        store.epoch_deadline_callback(|_| {
            Ok(match deadline::current() {
                Some(end) if Instant::now() >= end => UpdateDeadline::Interrupt,
                _ => UpdateDeadline::Yield(1),
            })
        });
        store.set_epoch_deadline(1);
        // Instantiation runs guest start code: it gets the same deadline.
        let mut until = Instant::now() + timeout;
        let bindings = deadline::within_polls(&mut until, pre.instantiate_async(&mut store)).await;
        let mut instance = Instance {
            bindings: bindings.map_err(|e| Fault::Trap {
                model: label.clone(),
                message: format!("instantiation failed: {}", chain(&e)),
            })?,
            store,
            timeout,
            deadline: until,
            memory_limit_mib: (memory_limit >> 20) as u64,
            _ticks: ticks,
        };
        instance.arm();
        let init = deadline::within_polls(
            &mut instance.deadline,
            instance
                .bindings
                .edgeserve_handler_handler()
                .call_init(&mut instance.store),
        )
        .await;
        match instance.settle(init)? {
            Ok(()) => Ok(instance),
            Err(message) => Err(Fault::Failed {
                model: label,
                message: format!("init failed: {message}"),
            }),
        }
    }

    fn label(&self) -> Arc<str> {
        self.store.data().model().label.clone()
    }

    /// Sets the deadline for the next call, and has the backend settle what
    /// an earlier call on this thread left behind
    /// ([`Backend::begin_call`](edgeserve_tensor::Backend::begin_call)).
    fn arm(&mut self) {
        self.store.data().model().backend.begin_call();
        self.store.set_epoch_deadline(1);
        self.deadline = Instant::now() + self.timeout;
    }

    /// The fault of a call stopped at its deadline.
    fn deadline_fault(&self) -> Fault {
        Fault::Deadline {
            model: self.label(),
            timeout_ms: self.timeout.as_millis() as u64,
        }
    }

    /// Turns a wasmtime error into the fault it stands for.
    fn settle<T>(&mut self, result: wasmtime::Result<T>) -> Result<T, Fault> {
        result.map_err(|e| {
            let model = self.label();
            if self.store.data().limiter.memory_exceeded {
                Fault::MemoryLimit {
                    model,
                    limit_mib: self.memory_limit_mib,
                }
            } else if matches!(
                e.downcast_ref::<wasmtime::Trap>(),
                Some(wasmtime::Trap::Interrupt)
            ) || matches!(
                // A host operation stopped at the deadline (see `bindings`).
                e.downcast_ref::<TensorError>(),
                Some(TensorError::DeadlineExceeded(_))
            ) {
                self.deadline_fault()
            } else {
                Fault::Trap {
                    model,
                    message: chain(&e),
                }
            }
        })
    }

    /// The handler's declared inputs and outputs.
    pub async fn metadata(&mut self) -> Result<ModelMetadata, Fault> {
        self.arm();
        let result = deadline::within_polls(
            &mut self.deadline,
            self.bindings
                .edgeserve_handler_handler()
                .call_metadata(&mut self.store),
        )
        .await;
        self.settle(result)
    }

    /// Runs one request; `outputs` names the outputs the client wants
    /// (`None`: all of them).
    pub async fn infer(
        &mut self,
        inputs: Vec<(String, Value)>,
        parameters: Vec<Parameter>,
        outputs: Option<Vec<String>>,
    ) -> Result<Vec<(String, Value)>, Fault> {
        let result = self.infer_on_device(inputs, parameters, outputs).await;
        // However the handler reported it, a failure on a lost device is
        // the device's.
        result.map_err(|fault| match self.store.data().model().backend.lost() {
            Some(message) if !fault.is_client_error() => Fault::DeviceLost {
                model: self.label(),
                message,
            },
            _ => fault,
        })
    }

    async fn infer_on_device(
        &mut self,
        inputs: Vec<(String, Value)>,
        parameters: Vec<Parameter>,
        outputs: Option<Vec<String>>,
    ) -> Result<Vec<(String, Value)>, Fault> {
        let model = self.label();
        // Before the inputs go to the backend: they are this call's work.
        self.arm();
        let mut named = Vec::with_capacity(inputs.len());
        for (name, value) in inputs {
            let data = match value {
                Value::Numeric(tensor) => {
                    let state = self.store.data_mut();
                    let pushed = state
                        .model()
                        .backend
                        .from_host(&tensor)
                        .and_then(|t| state.push_tensor(t));
                    match pushed {
                        Ok(handle) => TensorData::Numeric(handle),
                        Err(e) => {
                            self.drop_inputs(named);
                            // A lost device is the server's fault, not the input's.
                            return Err(match e {
                                TensorError::DeviceLost(_) => Fault::Failed {
                                    model,
                                    message: format!("cannot take input '{name}': {e}"),
                                },
                                e => Fault::Input {
                                    model,
                                    input: name,
                                    message: e.to_string(),
                                },
                            });
                        }
                    }
                }
                Value::Bytes { shape, elements } => TensorData::Bytes(BytesTensor {
                    shape: shape.iter().map(|&d| d as u32).collect(),
                    elements,
                }),
            };
            named.push(NamedTensor { name, data });
        }
        let request = InferRequest {
            inputs: named,
            parameters: parameters
                .into_iter()
                .map(|(key, value)| (key, value.into()))
                .collect(),
            outputs,
        };
        let result = deadline::within_polls(
            &mut self.deadline,
            self.bindings
                .edgeserve_handler_handler()
                .call_infer(&mut self.store, &request),
        )
        .await;
        match self.settle(result)? {
            // Reading outputs back completes a device's pending work: it
            // runs under the same deadline.
            Ok(produced) => deadline::within(self.deadline, || {
                self.collect_outputs(produced, request.outputs.as_deref())
            }),
            Err(InferError::InvalidInput(message)) => Err(Fault::Rejected { model, message }),
            Err(InferError::Internal(message)) => Err(Fault::Failed { model, message }),
        }
    }

    /// Answers the model's warm-up request ([`WarmUp`]) under a deadline of
    /// at least `WARM_UP_TIMEOUT`, dropping the answer.
    pub async fn warm_up(&mut self, request: &WarmUp) -> Result<(), Fault> {
        let timeout = self.timeout;
        self.timeout = timeout.max(WARM_UP_TIMEOUT);
        let result = self
            .infer(
                request.inputs.clone(),
                request.parameters.clone(),
                request.outputs.clone(),
            )
            .await;
        self.timeout = timeout;
        result.map(drop).map_err(|fault| Fault::Failed {
            model: self.label(),
            message: format!("warm-up request {}: {fault}", request.source),
        })
    }

    /// [`Instance::infer`] with the chunks the handler sends going to
    /// `sink`; the sink is dropped when the call returns, which ends the
    /// stream.
    pub async fn infer_streaming(
        &mut self,
        inputs: Vec<(String, Value)>,
        parameters: Vec<Parameter>,
        outputs: Option<Vec<String>>,
        sink: OutputSink,
    ) -> Result<Vec<(String, Value)>, Fault> {
        self.store.data_mut().output = Some(sink);
        let result = self.infer(inputs, parameters, outputs).await;
        self.store.data_mut().output = None;
        result
    }

    /// Frees inputs already handed over when a later one cannot be.
    fn drop_inputs(&mut self, named: Vec<NamedTensor>) {
        for input in named {
            if let TensorData::Numeric(handle) = input.data {
                let _ = self.store.data_mut().take_tensor(handle);
            }
        }
    }

    fn collect_outputs(
        &mut self,
        outputs: Vec<NamedTensor>,
        wanted: Option<&[String]>,
    ) -> Result<Vec<(String, Value)>, Fault> {
        let mut collected = Vec::with_capacity(outputs.len());
        let mut failure = None;
        for output in outputs {
            // An output the client did not ask for is freed, not read back
            // (a device readback is the costly part).
            if wanted.is_some_and(|names| !names.contains(&output.name)) {
                if let TensorData::Numeric(handle) = output.data {
                    let _ = self.store.data_mut().take_tensor(handle);
                }
                continue;
            }
            let value = match output.data {
                TensorData::Numeric(handle) => match self.store.data_mut().take_tensor(handle) {
                    Ok(tensor) => Collected::Numeric(tensor),
                    Err(e) => {
                        failure.get_or_insert(format!("output '{}': {e}", output.name));
                        continue;
                    }
                },
                TensorData::Bytes(BytesTensor { shape, elements }) => {
                    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
                    if edgeserve_tensor::shape::numel(&shape) != elements.len() {
                        failure.get_or_insert(format!(
                            "BYTES output '{}' has shape {shape:?} but {} elements",
                            output.name,
                            elements.len()
                        ));
                        continue;
                    }
                    Collected::Ready(Value::Bytes { shape, elements })
                }
            };
            collected.push((output.name, value));
        }
        if let Some(message) = failure {
            return Err(Fault::BadOutput {
                model: self.label(),
                message,
            });
        }
        // Every numeric output in one read-back: a device waits once.
        let numeric: Vec<&Tensor> = collected
            .iter()
            .filter_map(|(_, value)| match value {
                Collected::Numeric(tensor) => Some(tensor),
                Collected::Ready(_) => None,
            })
            .collect();
        let read = match self.store.data().model().backend.to_host_all(&numeric) {
            Ok(read) => read,
            Err(TensorError::DeadlineExceeded(_)) => return Err(self.deadline_fault()),
            Err(e) => {
                let names: Vec<String> = collected
                    .iter()
                    .filter(|(_, value)| matches!(value, Collected::Numeric(_)))
                    .map(|(name, _)| format!("'{name}'"))
                    .collect();
                let noun = if names.len() == 1 {
                    "output"
                } else {
                    "outputs"
                };
                return Err(Fault::BadOutput {
                    model: self.label(),
                    message: format!("{noun} {}: {e}", names.join(", ")),
                });
            }
        };
        let mut read = read.into_iter();
        Ok(collected
            .into_iter()
            .map(|(name, value)| {
                let value = match value {
                    Collected::Ready(value) => value,
                    Collected::Numeric(_) => {
                        Value::Numeric(read.next().expect("one host tensor per numeric output"))
                    }
                };
                (name, value)
            })
            .collect())
    }
}

/// An error with its causes, one line, for a client to read.
fn chain(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.dedup();
    parts.join(": ")
}

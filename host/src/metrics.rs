//! Prometheus metrics, served at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-model series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
}

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// "success", "failure", or "offloaded" (answered by the upstream).
    pub outcome: &'static str,
    /// The wire protocol the request came in on: "http" or "grpc".
    pub protocol: &'static str,
}

/// Labels of the offload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OffloadLabels {
    /// Model name.
    pub model: String,
    /// "missing" (not served here) or "queue_timeout" (no free instance).
    pub reason: &'static str,
}

/// Labels describing the compute device.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    /// "cpu" or "gpu".
    pub kind: String,
    /// Device name.
    pub device: String,
    /// API in use.
    pub api: String,
    /// Driver description.
    pub driver: String,
}

/// Labels of the device memory gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceMemoryLabels {
    /// Device name.
    pub device: String,
    /// "allocated", "pooled" or "device".
    pub state: &'static str,
}

/// Labels of the TLS handshake counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsHandshakeLabels {
    /// The protocol version agreed ("TLSv1_3", "TLSv1_2").
    pub version: &'static str,
    /// The key exchange group agreed: "X25519MLKEM768" (post-quantum
    /// hybrid), "X25519", "secp256r1"…
    pub group: &'static str,
}

/// Labels of the failed TLS handshake counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsFailureLabels {
    /// "refused" (no common parameters, a bad or missing client
    /// certificate, not TLS at all) or "timed_out".
    pub reason: &'static str,
}

/// Labels naming a device alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceNameLabels {
    /// Device name.
    pub device: String,
}

fn batch_size_histogram() -> Histogram {
    // 1 .. 1024 rows
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// What became of a request, as [`RequestLabels::outcome`] labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// This server answered it.
    Success,
    /// It failed here.
    Failure,
    /// The upstream answered it.
    Offloaded,
}

impl RequestOutcome {
    const ALL: [RequestOutcome; 3] = [Self::Success, Self::Failure, Self::Offloaded];

    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Offloaded => "offloaded",
        }
    }
}

/// The wire protocol a request came in on, as [`RequestLabels::protocol`]
/// labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// REST (OIP JSON and binary, `/generate`, …).
    Http,
    /// OIP over gRPC.
    Grpc,
}

impl Protocol {
    const ALL: [Protocol; 2] = [Self::Http, Self::Grpc];

    fn label(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

/// One model version's per-request series, resolved when it loads so that
/// a request updates them without hashing and cloning its labels.
#[derive(Clone, Debug)]
pub struct ModelSeries {
    /// Its `queue_seconds` histogram.
    pub queue_seconds: Histogram,
    /// Its `compute_seconds` histogram.
    pub compute_seconds: Histogram,
    /// Its `inferences` counter.
    pub inferences: Counter,
    /// Its `requests` counters, indexed by outcome then protocol.
    requests: [[Counter; 2]; 3],
}

impl ModelSeries {
    /// The `requests` counter of `outcome` over `protocol`.
    pub fn requests(&self, outcome: RequestOutcome, protocol: Protocol) -> &Counter {
        &self.requests[outcome as usize][protocol as usize]
    }
}

/// Every series edgeserve exports.
pub struct Metrics {
    registry: Registry,
    /// Requests that reached a model, by outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Inferences run (batch elements: the first dimension of the first input).
    pub inferences: Family<ModelLabels, Counter>,
    /// Time spent waiting for a free instance.
    pub queue_seconds: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// Time spent running in the instance.
    pub compute_seconds: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// Live instances per model version.
    pub instances: Family<ModelLabels, Gauge>,
    /// Bytes of weights each model version holds on its device.
    pub weight_bytes: Family<ModelLabels, Gauge>,
    /// Inference requests being handled right now (the autoscaling signal).
    pub inflight: Gauge,
    /// Host memory of weights packed for the CPU product kernel, besides
    /// the weights themselves (set when scraped).
    pub packed_weight_bytes: Gauge,
    /// GPU memory by state ("allocated" by live tensors, "pooled" for reuse,
    /// "device": all the device allocator handed out).
    pub device_memory: Family<DeviceMemoryLabels, Gauge>,
    /// Times results were read back from the GPU, each a wait for the
    /// device (brought up to date when scraped).
    pub device_read_backs: Family<DeviceNameLabels, Counter>,
    /// One series per open compute device: 1 for the default, 0 otherwise.
    pub device: Family<DeviceLabels, Gauge>,
    /// GPUs lost (driver reset, device removed) and replaced while serving.
    pub device_losses: Counter,
    /// Requests forwarded to the upstream server, by model and reason.
    pub offloaded: Family<OffloadLabels, Counter>,
    /// Text generation: time from the request to its first token.
    pub time_to_first_token_seconds: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// Text generation: time between consecutive tokens of one request.
    pub time_per_output_token_seconds: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// Text generation: tokens generated.
    pub generated_tokens: Family<ModelLabels, Counter>,
    /// Text generation: requests the client hung up on before the end.
    pub cancelled_streams: Family<ModelLabels, Counter>,
    /// Dynamic batching: rows (axis 0) of each batched handler call.
    pub batch_size: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// Dynamic batching: time from a batch's first request to its start.
    pub batch_wait_seconds: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// TLS handshakes completed, by version and key exchange: how many
    /// clients get the post-quantum hybrid.
    pub tls_handshakes: Family<TlsHandshakeLabels, Counter>,
    /// TLS handshakes that failed, by reason.
    pub tls_handshake_failures: Family<TlsFailureLabels, Counter>,
    /// Client connections open now, over every listener.
    pub open_connections: Gauge,
    /// The most client connections open at once (`--max-connections`).
    pub max_connections: Gauge,
    /// Bytes of request bodies held now, over every request.
    pub body_memory_bytes: Gauge,
    /// The most bytes of request bodies held at once
    /// (`--max-body-memory-bytes`).
    pub body_memory_limit_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The per-request series of the model version `labels` names, every
    /// request counter starting at zero.
    pub fn model_series(&self, labels: &ModelLabels) -> ModelSeries {
        let requests = RequestOutcome::ALL.map(|outcome| {
            Protocol::ALL.map(|protocol| {
                let labels = RequestLabels {
                    model: labels.model.clone(),
                    version: labels.version.clone(),
                    outcome: outcome.label(),
                    protocol: protocol.label(),
                };
                self.requests.get_or_create(&labels).clone()
            })
        });
        ModelSeries {
            queue_seconds: self.queue_seconds.get_or_create(labels).clone(),
            compute_seconds: self.compute_seconds.get_or_create(labels).clone(),
            inferences: self.inferences.get_or_create(labels).clone(),
            requests,
        }
    }

    /// Registers every series under the `edgeserve_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("edgeserve");
        let requests = Family::default();
        let inferences = Family::default();
        let queue_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let compute_seconds = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let instances = Family::default();
        let weight_bytes = Family::default();
        let inflight = Gauge::default();
        let packed_weight_bytes = Gauge::default();
        let device = Family::default();
        let device_losses = Counter::default();
        let device_memory = Family::default();
        let device_read_backs = Family::default();
        let offloaded = Family::default();
        let time_to_first_token_seconds =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let time_per_output_token_seconds =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let generated_tokens = Family::default();
        let cancelled_streams = Family::default();
        let batch_size = Family::new_with_constructor(batch_size_histogram as fn() -> Histogram);
        let batch_wait_seconds =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let tls_handshakes = Family::default();
        let tls_handshake_failures = Family::default();
        let open_connections = Gauge::default();
        let max_connections = Gauge::default();
        let body_memory_bytes = Gauge::default();
        let body_memory_limit_bytes = Gauge::default();
        registry.register(
            "requests",
            "Inference requests that reached a model, by outcome",
            requests.clone(),
        );
        registry.register(
            "inferences",
            "Inferences run (batch elements)",
            inferences.clone(),
        );
        registry.register(
            "queue_duration_seconds",
            "Time waiting for a free instance",
            queue_seconds.clone(),
        );
        registry.register(
            "compute_duration_seconds",
            "Time running in the instance",
            compute_seconds.clone(),
        );
        registry.register(
            "instances",
            "Live instances per model version",
            instances.clone(),
        );
        registry.register(
            "model_weight_bytes",
            "Bytes of weights per model version on its device",
            weight_bytes.clone(),
        );
        registry.register(
            "cpu_packed_weight_bytes",
            "Host memory of weights packed for the CPU product kernel (a model weight under more than 32 activation rows, 16 on AVX-512), besides the weights themselves",
            packed_weight_bytes.clone(),
        );
        registry.register(
            "inflight_requests",
            "Inference requests in progress",
            inflight.clone(),
        );
        registry.register(
            "device_memory_bytes",
            "GPU memory held by live tensors (allocated), kept for reuse (pooled), and handed out by the device's allocator in all (device)",
            device_memory.clone(),
        );
        registry.register(
            "device_read_backs",
            "Times results were read back from the GPU: each waits for the device to finish the work recorded before it",
            device_read_backs.clone(),
        );
        registry.register(
            "device_info",
            "Open compute devices (1 = default)",
            device.clone(),
        );
        registry.register(
            "device_losses",
            "GPUs lost (reset or removed) while serving; their models were reloaded",
            device_losses.clone(),
        );
        registry.register(
            "offloaded_requests",
            "Requests forwarded to the upstream server, by model and reason",
            offloaded.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Text generation: time from the request to its first token",
            time_to_first_token_seconds.clone(),
        );
        registry.register(
            "time_per_output_token_seconds",
            "Text generation: time between consecutive tokens of a request",
            time_per_output_token_seconds.clone(),
        );
        registry.register(
            "generated_tokens",
            "Text generation: tokens generated",
            generated_tokens.clone(),
        );
        registry.register(
            "cancelled_streams",
            "Text generation: requests whose client hung up before the end",
            cancelled_streams.clone(),
        );
        registry.register(
            "batch_size",
            "Dynamic batching: rows (axis 0) of each batched handler call",
            batch_size.clone(),
        );
        registry.register(
            "batch_wait_duration_seconds",
            "Dynamic batching: time from a batch's first request to its start",
            batch_wait_seconds.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes completed, by protocol version and key exchange group",
            tls_handshakes.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by reason",
            tls_handshake_failures.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open now, over every listener",
            open_connections.clone(),
        );
        registry.register(
            "max_connections",
            "The most client connections open at once; past it, new ones wait (--max-connections)",
            max_connections.clone(),
        );
        registry.register(
            "body_memory_bytes",
            "Bytes of request bodies held now, over every request",
            body_memory_bytes.clone(),
        );
        registry.register(
            "body_memory_limit_bytes",
            "The most bytes of request bodies held at once; past it, a request is refused (--max-body-memory-bytes)",
            body_memory_limit_bytes.clone(),
        );
        Metrics {
            registry,
            requests,
            inferences,
            queue_seconds,
            compute_seconds,
            instances,
            weight_bytes,
            inflight,
            packed_weight_bytes,
            device_memory,
            device_read_backs,
            device,
            device_losses,
            offloaded,
            time_to_first_token_seconds,
            time_per_output_token_seconds,
            generated_tokens,
            cancelled_streams,
            batch_size,
            batch_wait_seconds,
            tls_handshakes,
            tls_handshake_failures,
            open_connections,
            max_connections,
            body_memory_bytes,
            body_memory_limit_bytes,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

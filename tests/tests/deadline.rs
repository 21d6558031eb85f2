//! A model's `timeout_ms` bounds the host work its handler asks for, not
//! only the handler's own code: a loop of large matmuls (the faulty
//! plugin's action 8) is stopped in the middle of a product, which epoch
//! interruption alone could not do, and the model keeps serving. Each call
//! is armed afresh: its deadline set and its backend told that a call
//! begins, before the call's inputs reach the backend.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, error_text};
use edgeserve::repository::{COMPONENT_FILE, CONFIG_FILE, ModelConfig};
use edgeserve::runtime::{Fault, Instance, ModelContext, ParameterValue, Runtime, block_on};
use edgeserve_tensor::cpu::CpuBackend;
use edgeserve_tensor::shape::MatmulPlan;
use edgeserve_tensor::{Backend, BackendInfo, DType, HostBuffer, Result, Tensor, WeightedInputs};
use serde_json::{Value, json};

/// Side of the square matrices the handler multiplies.
const SIZE: usize = 2048;

/// How long one `SIZE`³ product takes here, uncut, on the CPU kernels the
/// server uses.
fn one_product() -> Duration {
    let cpu = CpuBackend::new();
    let ops = cpu.ops();
    let a = ops.full(DType::F32, &[SIZE, SIZE], 0.5).unwrap();
    let started = Instant::now();
    ops.matmul(&a, &a, false).unwrap();
    started.elapsed()
}

/// Adds `crunch` to the repository at `repo`: the faulty plugin (whose
/// action 8 multiplies matrices on the host) on one instance with a
/// deadline of `timeout_ms`. Returns the model's folder.
fn add_crunch(repo: &Path, timeout_ms: u64) -> PathBuf {
    let model = repo.join("crunch");
    std::fs::create_dir_all(model.join("1")).unwrap();
    std::fs::copy(
        edgeserve_e2e::plugin("faulty"),
        model.join("1").join(COMPONENT_FILE),
    )
    .unwrap();
    std::fs::write(
        model.join(CONFIG_FILE),
        format!("instances = 1\ntimeout_ms = {timeout_ms}\n"),
    )
    .unwrap();
    model
}

/// Faulty action 8: `repeat` products of `size`² matrices.
fn products(size: usize, repeat: u32) -> Value {
    json!({
        "inputs": [{"name": "action", "shape": [1], "datatype": "INT32", "data": [8]}],
        "parameters": {"size": size, "repeat": repeat},
    })
}

/// Over HTTP: the request past its deadline gets a 500 naming it, and the
/// server and the model keep serving. (That the cut falls inside a product
/// is proven without a clock below.)
#[tokio::test(flavor = "multi_thread")]
async fn a_deadline_stops_a_long_host_matmul_midway_and_the_model_keeps_serving() {
    let natural = one_product();
    // A tenth of one product: only a cut inside the product can end the
    // request before the product would.
    let timeout_ms = (natural.as_millis() as u64 / 10).max(20);
    let repo = edgeserve_e2e::model_repository(&["linear"]);
    add_crunch(repo.path(), timeout_ms);
    let running = edgeserve::app::start(common::settings(&repo))
        .await
        .expect("server starts");
    let server = TestServer::attach(running, repo);
    let path = "/v2/models/crunch/infer";

    // Fifty products: uncut, the loop would run 500 times the deadline.
    let started = Instant::now();
    let (status, body) = server.post(path, &products(SIZE, 50)).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 500, "{body}");
    let expected = format!("model crunch:1 exceeded its {timeout_ms} ms deadline");
    assert!(error_text(&body).contains(&expected), "{body}");
    eprintln!(
        "deadline {timeout_ms} ms: the request ended after {:.1} ms (one {SIZE}³ product: {:.1} ms uncut)",
        elapsed.as_secs_f64() * 1e3,
        natural.as_secs_f64() * 1e3
    );

    // The others keep serving, and so does the model, on a fresh instance.
    assert_eq!(server.linear(&[1.0, 2.0]).await, [0.4, 0.5]);
    let (status, body) = server.post(path, &products(8, 3)).await;
    assert_eq!(
        (status, body["outputs"][0]["data"][0].as_i64()),
        (200, Some(8)),
        "{body}"
    );
    server.stop().await;
}

/// The CPU kernels, logging when a call begins and when tensors cross
/// between the host and the backend, and counting the products that start
/// and those that finish.
#[derive(Default)]
struct Watched {
    cpu: CpuBackend,
    log: Mutex<Vec<&'static str>>,
    products_started: AtomicUsize,
    products_finished: AtomicUsize,
}

impl Watched {
    fn note(&self, event: &'static str) {
        self.log.lock().unwrap().push(event);
    }

    /// (started, finished) products.
    fn products(&self) -> (usize, usize) {
        (
            self.products_started.load(Ordering::SeqCst),
            self.products_finished.load(Ordering::SeqCst),
        )
    }
}

/// Implements each listed `Backend` method as the CPU backend's, but those
/// [`Watched`] writes itself (`from_host`, `to_host`, `matmul`).
macro_rules! on_cpu {
    (@one from_host $($signature:tt)*) => {};
    (@one to_host $($signature:tt)*) => {};
    (@one matmul $($signature:tt)*) => {};
    (@one $kernel:ident($($arg:ident: $ty:ty),*) -> $made:ty) => {
        fn $kernel(&self, $($arg: $ty),*) -> Result<$made> {
            self.cpu.$kernel($($arg),*)
        }
    };
    ($($kernel:ident($($arg:ident: $ty:ty),*) -> $made:ty;)*) => {
        $(on_cpu!(@one $kernel($($arg: $ty),*) -> $made);)*
    };
}

impl Backend for Watched {
    fn info(&self) -> BackendInfo {
        self.cpu.info()
    }

    fn begin_call(&self) {
        self.note("begin_call");
    }

    fn from_host(&self, tensor: &Tensor) -> Result<Tensor> {
        self.note("from_host");
        self.cpu.from_host(tensor)
    }

    fn to_host(&self, tensor: &Tensor) -> Result<Tensor> {
        self.note("to_host");
        self.cpu.to_host(tensor)
    }

    /// A product cut at the deadline unwinds out of here (the host catches
    /// it above the backend), so it is counted as started, never finished.
    fn matmul(&self, inputs: WeightedInputs<'_>, plan: &MatmulPlan) -> Result<Tensor> {
        self.products_started.fetch_add(1, Ordering::SeqCst);
        let product = self.cpu.matmul(inputs, plan)?;
        self.products_finished.fetch_add(1, Ordering::SeqCst);
        Ok(product)
    }

    edgeserve_tensor::backend_kernels!(on_cpu);
}

/// An initialized instance of version 1 of the model at `model` (its
/// `config.toml` and `1/model.wasm`), on a [`Watched`] CPU backend.
fn watched_instance(name: &str, model: &Path) -> (Arc<Watched>, Instance) {
    let config = ModelConfig::load(&model.join(CONFIG_FILE)).unwrap();
    let watched = Arc::new(Watched::default());
    let version = model.join("1");
    let context = ModelContext::open(
        format!("{name}:1").as_str(),
        &version,
        &config,
        watched.clone(),
    )
    .unwrap();
    let runtime = Runtime::new(&edgeserve_e2e::runtime_config(None)).unwrap();
    let wasm = std::fs::read(version.join(COMPONENT_FILE)).unwrap();
    let (component, _) = runtime.compile(name, &wasm).unwrap();
    let factory = runtime.factory(
        &component,
        Arc::new(context),
        config.timeout(),
        config.memory_limit_bytes(),
    );
    (watched, factory.unwrap()().unwrap())
}

/// The deadline cuts the host product it falls in: of the handler's fifty
/// products the first starts and never finishes, and the call fails as
/// past its deadline. Between-op checks alone would have let it finish.
/// The deadline is a quarter of one product's time measured here just
/// before, so the proof holds on a machine of any speed (it needs only that
/// the product does not run four times faster the second time), and no
/// elapsed time is compared with a threshold.
#[test]
fn a_deadline_cuts_the_host_product_it_falls_in() {
    let timeout_ms = (one_product().as_millis() as u64 / 4).max(1);
    let repo = edgeserve_e2e::model_repository(&[]);
    let (watched, mut instance) = watched_instance("crunch", &add_crunch(repo.path(), timeout_ms));

    let action = Tensor::from_host(DType::I32, &[1], HostBuffer::from_vec(vec![8i32])).unwrap();
    let fault = block_on(instance.infer(
        vec![("action".into(), edgeserve::runtime::Value::Numeric(action))],
        vec![
            ("size".into(), ParameterValue::Integer(SIZE as i64)),
            ("repeat".into(), ParameterValue::Integer(50)),
        ],
        None,
    ))
    .expect_err("fifty products cannot finish within a quarter of one");
    assert!(matches!(fault, Fault::Deadline { .. }), "{fault}");
    assert_eq!(
        watched.products(),
        (1, 0),
        "the first product started and was stopped inside; no product finished"
    );
}

/// A backend keeps per-thread state across calls (a GPU's recording), so
/// the host tells it each time a call begins, before that call's inputs
/// arrive: what an abandoned call left is then settled before any of the
/// next call's work, never mixed into it.
#[test]
fn every_call_tells_the_backend_it_begins_before_its_inputs_arrive() {
    let repo = edgeserve_e2e::model_repository(&["linear"]);
    let (watched, mut instance) = watched_instance("linear", &repo.path().join("linear"));
    watched.log.lock().unwrap().clear();

    for x in [2.0f32, 5.0] {
        let input = Tensor::from_f32(&[1, 1], vec![x]).unwrap();
        let outputs = block_on(instance.infer(
            vec![("x".into(), edgeserve::runtime::Value::Numeric(input))],
            Vec::new(),
            None,
        ))
        .unwrap();
        let [(name, edgeserve::runtime::Value::Numeric(y))] = &outputs[..] else {
            panic!("unexpected outputs {outputs:?}");
        };
        let y = y.host().unwrap().as_slice::<f32>();
        assert_eq!((name.as_str(), y.len()), ("y", 1));
        assert!(
            (y[0] - (0.1 * x + 0.3)).abs() < 1e-6,
            "y = {y:?} for x = {x}"
        );
    }
    assert_eq!(
        *watched.log.lock().unwrap(),
        ["begin_call", "from_host", "to_host"].repeat(2),
        "each call begins, then its input goes to the backend, then its output comes back"
    );
}

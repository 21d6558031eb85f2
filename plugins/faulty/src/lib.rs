//! A handler that misbehaves on request, to prove the host isolates failures.
//!
//! Input `action`: INT32 [1]; output `echo`: INT32 [1].
//!
//! | action | behaviour                                                        |
//! |--------|------------------------------------------------------------------|
//! | 0      | succeeds, returning the input as `echo`                          |
//! | 1      | panics (the instance traps)                                      |
//! | 2      | spins forever (the request deadline must interrupt it)           |
//! | 3      | allocates guest memory without bound (the memory cap must trap)  |
//! | 4      | creates host tensors without bound (the host's tensor cap must   |
//! |        | refuse with out-of-memory, which comes back as an internal error)|
//! | 5      | refuses the request as invalid input                             |
//! | 6      | probes for ambient authority and returns a bit set as `echo`:    |
//! |        | 1 = environment variables, 2 = a readable filesystem root,       |
//! |        | 4 = a bindable socket (0 means fully sandboxed)                  |
//! | 7      | works for one second of wall-clock time, then succeeds like 0    |
//! |        | (a slow but healthy request; needs `timeout_ms` above 1000)      |
//! | 8      | multiplies two `size`² F32 matrices `repeat` times on the host   |
//! |        | (request parameters, default 1024 and 1000), then succeeds like  |
//! |        | 0: long host work the request deadline must cut, even mid-op;    |
//! |        | needs `max_tensor_mib` of at least 3·4·size² bytes               |
//!
//! `init` writes one line to stdout and one to stderr, which the host routes
//! to its log.

use std::hint::black_box;

use edgeserve_sdk::{
    Dtype, InferError, Model, ModelMetadata, Output, Request, Tensor, TensorSpec, export_model,
};

struct Faulty;

impl Model for Faulty {
    fn metadata() -> ModelMetadata {
        ModelMetadata {
            inputs: vec![TensorSpec::new("action", "INT32", &[1])],
            outputs: vec![TensorSpec::new("echo", "INT32", &[1])],
        }
    }

    fn init() -> Result<Self, String> {
        println!("faulty: init on stdout");
        eprintln!("faulty: init on stderr");
        Ok(Faulty)
    }

    fn infer(&self, mut request: Request) -> Result<Vec<Output>, InferError> {
        let action = request.numeric("action")?.to_i32_vec()?;
        match action.as_slice() {
            [0] => {
                let echo = request.take_numeric("action")?;
                Ok(vec![Output::numeric("echo", echo)])
            }
            [7] => {
                busy_for(std::time::Duration::from_secs(1));
                let echo = request.take_numeric("action")?;
                Ok(vec![Output::numeric("echo", echo)])
            }
            [8] => {
                let size = request.parameter_in_range::<u32>("size", 1..=16384)?;
                let repeat = request.parameter_in_range::<u32>("repeat", 1..)?;
                multiply(size.unwrap_or(1024), repeat.unwrap_or(1000))?;
                let echo = request.take_numeric("action")?;
                Ok(vec![Output::numeric("echo", echo)])
            }
            [1] => panic!("faulty: panicking on purpose (action 1)"),
            [2] => spin(),
            [3] => exhaust_guest_memory(),
            [4] => exhaust_host_tensors(),
            [6] => {
                let found = probe_authority();
                Ok(vec![Output::numeric(
                    "echo",
                    Tensor::from_i32(&[1], &[found])?,
                )])
            }
            [5] => Err(InferError::InvalidInput(
                "action 5 is a bad request on purpose".into(),
            )),
            other => Err(InferError::InvalidInput(format!(
                "unknown action {other:?}; expected 0..=8"
            ))),
        }
    }
}

/// What the sandbox lets through, as bits (see the table above).
fn probe_authority() -> i32 {
    let env = std::env::vars_os().next().is_some();
    let fs = std::fs::read_dir("/").is_ok() || std::fs::read_dir(".").is_ok();
    let net = std::net::TcpListener::bind("127.0.0.1:0").is_ok();
    i32::from(env) | (i32::from(fs) << 1) | (i32::from(net) << 2)
}

/// Never returns: only the host's deadline can stop it.
fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Spins until `duration` of wall-clock time has passed: slow, yet it
/// finishes (unlike `spin`) without sleeping, which the sandbox may not offer.
fn busy_for(duration: std::time::Duration) {
    let started = std::time::Instant::now();
    let mut counter = 0u64;
    while started.elapsed() < duration {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Multiplies two `size × size` matrices `repeat` times: host work, which
/// the guest waits on inside one call per product.
fn multiply(size: u32, repeat: u32) -> Result<(), InferError> {
    let a = Tensor::full(Dtype::F32, &[size, size], 0.5)?;
    for _ in 0..repeat {
        black_box(a.matmul(&a)?);
    }
    Ok(())
}

/// Grows guest memory 1 MiB at a time until the allocator fails (a trap).
fn exhaust_guest_memory() -> ! {
    const CHUNK: usize = 1 << 20;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        // Touch every page so the memory is really used.
        for byte in chunk.iter_mut().step_by(4096) {
            *byte = 0xA5;
        }
        chunks.push(black_box(chunk));
    }
}

/// Creates 4 MiB host tensors until the host refuses; the refusal (an
/// out-of-memory error) propagates with `?`.
fn exhaust_host_tensors() -> Result<Vec<Output>, InferError> {
    let mut tensors = Vec::new();
    loop {
        tensors.push(Tensor::full(Dtype::F32, &[1024, 1024], 1.0)?);
        black_box(&tensors);
    }
}

export_model!(Faulty);

//! The plugin contract as Rust: the generated bindings, the error host
//! functions return, and the conversions between the contract's enums and
//! the tensor crate's. The rest of the crate takes bindgen types from here.

use edgeserve_tensor::{self as et, TensorError};

use super::state::InstanceState;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "model-handler",
    imports: { default: trappable },
    // Calls into the guest are futures: a short call runs on the async
    // worker that took the request, a long one on a blocking thread (see
    // `pool`). The contract's own host functions stay synchronous.
    exports: { default: async },
    // Host functions returning `result<_, error>` fail with `HostError`;
    // bindgen turns it into the guest's error value or a trap through
    // `tensor::Host::convert_error`.
    trappable_error_type: { "edgeserve:handler/tensor.error" => HostError },
    with: { "edgeserve:handler/tensor.tensor": crate::runtime::state::TensorHandle },
});

pub use self::edgeserve::handler::model::Host as ModelHost;
pub use self::edgeserve::handler::output::{Host as OutputHost, TextChunk};
/// The contract's `tensor` interface: its enums, its error and its host traits.
pub use self::edgeserve::handler::tensor as wit;
pub use self::edgeserve::handler::types::{
    BytesTensor, InferRequest, ModelMetadata, NamedTensor, ParameterValue, TensorData,
    TensorMetadata,
};
pub use self::exports::edgeserve::handler::handler::InferError;

/// Why a host function of the contract failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The operation was refused; the guest receives it as a `tensor.error`
    /// value it can inspect, except a passed deadline, which traps.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// The guest broke the contract (e.g. passed a dropped tensor handle):
    /// the call traps.
    #[error(transparent)]
    Trap(#[from] wasmtime::Error),
}

impl HostError {
    /// The error value handed to the guest, or the trap that ends its call.
    pub(crate) fn into_wit(self) -> wasmtime::Result<wit::Error> {
        match self {
            HostError::Tensor(e) => guest_error(e),
            HostError::Trap(trap) => Err(trap),
        }
    }
}

/// `From` between a contract enum and its tensor-crate twin, written as one
/// table of variant pairs; `<=>` converts both ways. A variant added on one
/// side only fails to compile here.
macro_rules! convert {
    ($a:ident::$x:ident <=> $b:ident::$y:ident { $($l:ident => $r:ident),* $(,)? }) => {
        convert!($a::$x => $b::$y { $($l => $r),* });
        convert!($b::$y => $a::$x { $($r => $l),* });
    };
    ($a:ident::$x:ident => $b:ident::$y:ident {
        $($l:ident $(($p:ident))? => $r:ident $(($q:ident))?),* $(,)?
    }) => {
        impl From<$a::$x> for $b::$y {
            fn from(value: $a::$x) -> $b::$y {
                match value {
                    $($a::$x::$l $(($p))? => $b::$y::$r $(($q))?,)*
                }
            }
        }
    };
}

convert!(wit::Dtype <=> et::DType {
    F32 => F32,
    F16 => F16,
    I32 => I32,
    I64 => I64,
    U8 => U8,
});

convert!(wit::UnaryOp => et::UnaryOp {
    Neg => Neg,
    Abs => Abs,
    Exp => Exp,
    Log => Log,
    Sqrt => Sqrt,
    Rsqrt => Rsqrt,
    Relu => Relu,
    Gelu => Gelu,
    GeluTanh => GeluTanh,
    Tanh => Tanh,
    Sigmoid => Sigmoid,
    Silu => Silu,
    Erf => Erf,
});

convert!(wit::BinaryOp => et::BinaryOp {
    Add => Add,
    Sub => Sub,
    Mul => Mul,
    Div => Div,
    Maximum => Maximum,
    Minimum => Minimum,
    Pow => Pow,
});

convert!(wit::ReduceOp => et::ReduceOp {
    Sum => Sum,
    Mean => Mean,
    Max => Max,
    Min => Min,
    Argmax => ArgMax,
    Argmin => ArgMin,
});

convert!(wit::PoolKind => et::PoolKind {
    Max => Max,
    Avg => Avg,
});

convert!(wit::CompareOp => et::CompareOp {
    Equal => Equal,
    NotEqual => NotEqual,
    Less => Less,
    LessEqual => LessEqual,
    Greater => Greater,
    GreaterEqual => GreaterEqual,
});

/// The error value a refused operation hands the guest, or the trap that
/// ends its call: a passed deadline is no error a guest could handle, and
/// stops it as an epoch interrupt does ([`super::Fault::Deadline`]).
fn guest_error(e: TensorError) -> wasmtime::Result<wit::Error> {
    Ok(match e {
        TensorError::Shape(m) => wit::Error::Shape(m),
        TensorError::DType(m) => wit::Error::Dtype(m),
        TensorError::InvalidArgument(m) => wit::Error::InvalidArgument(m),
        TensorError::Unsupported(m) => wit::Error::Unsupported(m),
        TensorError::OutOfMemory(m) => wit::Error::OutOfMemory(m),
        TensorError::DeviceLost(m) => wit::Error::DeviceLost(m),
        e @ TensorError::DeadlineExceeded(_) => return Err(wasmtime::Error::new(e)),
    })
}

// `types` declares no functions, but the linker still wants its host trait.
impl self::edgeserve::handler::types::Host for InstanceState {}

//! The host capabilities a handler imports, one module each: what the
//! contract's interfaces mean on this host. Each is a thin binding over the
//! part of the host that does the work (the tensor crate's `Ops`, the
//! repository's model files), so the runtime itself never changes when a
//! capability grows.

mod model;
mod output;
mod tensor;

pub use output::OutputSink;

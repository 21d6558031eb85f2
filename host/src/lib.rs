//! edgeserve: serve WebAssembly model handlers over the Open Inference
//! Protocol, running their tensor math on host kernels.
//!
//! The pieces, each in its own module: [`repository`] reads models from disk,
//! [`runtime`] compiles and sandboxes their components, [`registry`] keeps
//! the live ones, [`server`] speaks HTTP, [`metrics`] counts, [`bundle`]
//! fetches packaged models, [`offload`] forwards to an upstream server,
//! [`protocol`] names the OIP datatypes and headers they share, and [`app`]
//! wires them together.

pub mod accept;
pub mod app;
pub mod author;
pub mod body_memory;
pub mod bundle;
mod capability;
pub mod cli;
pub mod devices;
mod disk_cache;
pub mod fuzz;
pub mod import;
pub mod listen;
pub mod logging;
pub mod malloc;
pub mod metrics;
pub mod offload;
pub mod protocol;
mod recovery;
pub mod registry;
pub mod repository;
pub mod runtime;
pub mod server;
pub mod tls;

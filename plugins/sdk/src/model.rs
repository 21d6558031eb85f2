//! What the host knows about the model this instance serves: its weights,
//! the `[parameters]` of its `config.toml`, and the files shipped next to it.
//!
//! ```no_run
//! use edgeserve_sdk::model;
//!
//! # fn init() -> Result<(), String> {
//! let embeddings = model::weight("embeddings.weight")?;
//! let max_len: usize = model::parameter("max_len")
//!     .map(|v| v.parse().map_err(|e| format!("max_len: {e}")))
//!     .transpose()?
//!     .unwrap_or(128);
//! let vocab = model::asset("vocab.txt").ok_or("vocab.txt is missing")?;
//! # Ok(()) }
//! ```

use crate::bindings::edgeserve::handler::model as raw;
use crate::{Error, Tensor};

/// A weight from the model's `model.safetensors`, by tensor name.
///
/// Weights are loaded once per model and shared read-only by every instance:
/// this returns a handle, not a copy, so look weights up once in
/// [`Model::init`](crate::Model::init) and keep them.
pub fn weight(name: &str) -> Result<Tensor, Error> {
    raw::weight(name)
}

/// Names of every weight the model ships.
pub fn weight_names() -> Vec<String> {
    raw::weight_names()
}

/// A value from the `[parameters]` table of the model's `config.toml`.
pub fn parameter(key: &str) -> Option<String> {
    raw::parameter(key)
}

/// The contents of a file in the model's version folder (a tokenizer
/// vocabulary and the like), by file name; `None` if there is no such file.
pub fn asset(name: &str) -> Option<Vec<u8>> {
    raw::asset(name)
}

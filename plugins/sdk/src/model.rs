//! What the host knows about the model this instance serves: its weights,
//! the `[parameters]` of its `config.toml`, and the files shipped next to it.
//!
//! ```no_run
//! use edgeserve_sdk::model;
//!
//! # fn init() -> Result<(), String> {
//! let prefix = model::weight_prefix("embeddings.weight").ok_or("no embeddings")?;
//! let (embeddings, [vocab, dim]) = model::weight_2d(&format!("{prefix}embeddings.weight"))?;
//! let max_len: usize = model::parameter_in_range("max_len", 128, 1..)?;
//! let vocab_txt = model::asset_required("vocab.txt")?;
//! # Ok(()) }
//! ```

use std::ops::RangeBounds;

use crate::bindings::edgeserve::handler::model as raw;
use crate::parameter::{self, FromParameter};
use crate::{Error, Tensor};

/// A weight from the model's `model.safetensors`, by tensor name.
///
/// Weights are loaded once per model and shared read-only by every instance:
/// this returns a handle, not a copy, so look weights up once in
/// [`Model::init`](crate::Model::init) and keep them.
pub fn weight(name: &str) -> Result<Tensor, Error> {
    raw::weight(name)
}

/// A 2-D weight (a matrix or an embedding table) and its shape `[rows,
/// cols]`; a weight of any other rank is an [`Error::Shape`] naming it.
pub fn weight_2d(name: &str) -> Result<(Tensor, [u32; 2]), Error> {
    let tensor = weight(name)?;
    match tensor.shape()[..] {
        [rows, cols] => Ok((tensor, [rows, cols])),
        ref shape => Err(Error::Shape(format!("weight {name} is {shape:?}, not 2-D"))),
    }
}

/// Names of every weight the model ships.
pub fn weight_names() -> Vec<String> {
    raw::weight_names()
}

/// Where the model keeps the weight called `name`: the text before `name` in
/// the first weight name that ends in it, empty or ending in `.`.
///
/// Exports of one architecture differ in the prefix alone (`wte.weight` in
/// one GPT-2 checkpoint, `transformer.wte.weight` in another), so a handler
/// finds the prefix from one weight it knows and puts it before every name
/// it looks up. `None` when no weight is named `name` under any prefix.
pub fn weight_prefix(name: &str) -> Option<String> {
    weight_names().into_iter().find_map(|full| {
        let prefix = full.strip_suffix(name)?;
        (prefix.is_empty() || prefix.ends_with('.')).then(|| prefix.to_string())
    })
}

/// A value from the `[parameters]` table of the model's `config.toml`, as
/// the host stores it: text.
pub fn parameter(key: &str) -> Option<String> {
    raw::parameter(key)
}

/// The `config.toml` parameter `key` read as `T`, or `default` when the
/// config does not set it. A value that does not parse is refused with
/// `config parameter {key} must be an integer, got "ten"` (or the like).
pub fn parameter_or<T: FromParameter>(key: &str, default: T) -> Result<T, String> {
    parameter_in_range(key, default, ..)
}

/// [`parameter_or`], and the value must lie in `range`: a positive count is
/// `parameter_in_range(key, 12, 1..)`, refused as `config parameter {key}
/// must be an integer ≥ 1, got "0"`. `default` is not checked.
pub fn parameter_in_range<T: FromParameter>(
    key: &str,
    default: T,
    range: impl RangeBounds<T>,
) -> Result<T, String> {
    match parameter(key) {
        None => Ok(default),
        Some(text) => parameter::check("config parameter", key, &text, T::from_text(&text), &range),
    }
}

/// The contents of a file in the model's version folder (a tokenizer
/// vocabulary and the like), by file name; `None` if there is no such file.
pub fn asset(name: &str) -> Option<Vec<u8>> {
    raw::asset(name)
}

/// [`asset`] for a file the model cannot do without: a missing one is the
/// error `{name} is missing from the model's version folder`.
pub fn asset_required(name: &str) -> Result<Vec<u8>, String> {
    asset(name).ok_or_else(|| format!("{name} is missing from the model's version folder"))
}

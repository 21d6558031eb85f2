//! The Open Inference Protocol v2 wire format: JSON bodies and Triton's
//! binary tensor data extension. `decode` turns a body into the typed
//! request, `encode` outputs into a body.

mod data;
mod decode;
mod encode;
mod lift;
mod numbers;

pub use decode::{decode, decode_as_values, json_len};
pub use encode::encode;

/// What the response needs from the request beyond the typed request: the
/// id it echoes and how it encodes each output.
#[derive(Debug)]
pub struct Envelope {
    /// Client's request id, echoed back.
    pub id: Option<String>,
    /// Outputs the client asked for; `None` means all.
    pub outputs: Option<Vec<OutputRequest>>,
    /// `binary_data_output`: default encoding of outputs.
    pub binary_output: bool,
}

/// An output the client asked for.
#[derive(Debug)]
pub struct OutputRequest {
    /// Output name.
    pub name: String,
    /// Per-output `binary_data`, overriding `binary_data_output`.
    pub binary: Option<bool>,
}

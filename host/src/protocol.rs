//! Open Inference Protocol names that more than one layer speaks: the
//! datatypes edgeserve carries (the registry checks handler metadata
//! against them, the wire decoder parses requests with them) and the binary
//! extension's header (the server frames bodies with it, offload carries it).

use std::fmt;

use edgeserve_tensor::DType;

use crate::runtime::Value;

/// Header giving the length of the JSON part of a binary-extension body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// An OIP tensor datatype edgeserve carries: a numeric tensor dtype, or
/// BYTES (strings and blobs, which live on the host only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datatype {
    /// A numeric tensor.
    Numeric(DType),
    /// Variable-length byte strings.
    Bytes,
}

/// The BYTES datatype's name (the numeric ones are [`DType::oip_name`]).
const BYTES: &str = "BYTES";

impl Datatype {
    /// Every datatype edgeserve carries, in the order messages list them.
    /// (`DType` cannot list its variants, so they are named here; a test
    /// checks that each parses back.)
    pub const ALL: [Datatype; 6] = [
        Datatype::Numeric(DType::F32),
        Datatype::Numeric(DType::F16),
        Datatype::Numeric(DType::I32),
        Datatype::Numeric(DType::I64),
        Datatype::Numeric(DType::U8),
        Datatype::Bytes,
    ];

    /// Parses a datatype name; `None` for one edgeserve does not carry.
    pub fn from_name(name: &str) -> Option<Datatype> {
        if name == BYTES {
            Some(Datatype::Bytes)
        } else {
            DType::from_oip_name(name).map(Datatype::Numeric)
        }
    }

    /// The OIP name ("FP32", "BYTES", …).
    pub fn name(self) -> &'static str {
        match self {
            Datatype::Numeric(dtype) => dtype.oip_name(),
            Datatype::Bytes => BYTES,
        }
    }

    /// Parses a datatype name, or says which ones edgeserve carries.
    pub fn parse(name: &str) -> Result<Datatype, String> {
        Datatype::from_name(name).ok_or_else(|| {
            let [listed @ .., last] = Datatype::names();
            format!(
                "datatype {name} is not supported (edgeserve carries {} and {last})",
                listed.join(", ")
            )
        })
    }

    /// The names of [`Datatype::ALL`].
    pub fn names() -> [&'static str; 6] {
        Datatype::ALL.map(Datatype::name)
    }

    /// The datatype of a request or response value.
    pub fn of(value: &Value) -> Datatype {
        match value {
            Value::Numeric(tensor) => Datatype::Numeric(tensor.dtype()),
            Value::Bytes { .. } => Datatype::Bytes,
        }
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Splits Triton's BYTES encoding (the binary extension's and gRPC's raw
/// contents): each element is a 4-byte little-endian length followed by
/// that many bytes.
pub fn split_bytes(mut chunk: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut elements = Vec::new();
    while !chunk.is_empty() {
        let Some((len, rest)) = chunk.split_first_chunk::<4>() else {
            return Err("BYTES binary data ends inside a 4-byte length prefix".into());
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(format!(
                "BYTES element {} claims {len} bytes but only {} remain",
                elements.len(),
                rest.len()
            ));
        }
        elements.push(rest[..len].to_vec());
        chunk = &rest[len..];
    }
    Ok(elements)
}

/// Appends `elements` to `out` in the encoding [`split_bytes`] reads.
pub fn join_bytes(elements: &[Vec<u8>], out: &mut Vec<u8>) {
    for e in elements {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_datatype_parses_back_and_nothing_else_does() {
        for datatype in Datatype::ALL {
            assert_eq!(Datatype::from_name(datatype.name()), Some(datatype));
        }
        for name in ["BOOL", "FP64", "INT8", "UINT16", "BF16", "fp32", ""] {
            assert_eq!(Datatype::from_name(name), None, "{name}");
        }
        assert_eq!(
            Datatype::names(),
            ["FP32", "FP16", "INT32", "INT64", "UINT8", "BYTES"]
        );
    }
}

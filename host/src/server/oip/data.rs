//! An input's JSON `data` parsed straight into tensor elements: no
//! `serde_json::Value` tree, no list of leaves, one typed vector.
//!
//! This is the fast path only. It refuses anything unusual (a leaf of the
//! wrong kind, a count that does not match, an unknown datatype) without
//! saying why; the decoder then decodes the body again through `Value`s,
//! whose messages clients see (`decode::from_json`).

use std::fmt;

use edgeserve_tensor::{DType, HostBuffer, Tensor, cpu};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::numbers::{self, Number};
use crate::protocol::Datatype;
use crate::runtime::Value;

/// What an input's `data` must hold: `count` elements of `datatype`
/// (its OIP name), in row-major order, for a tensor of `shape`.
pub struct Expected<'a> {
    /// The input's `datatype`, as the request names it.
    pub datatype: &'a str,
    /// Its dims.
    pub shape: &'a [usize],
    /// Elements in all: the product of the dims.
    pub count: usize,
}

/// `data` given as raw JSON text, parsed by serde_json, nested or flat:
/// exactly what is `expected`, or `None`.
pub fn typed(expected: &Expected<'_>, data: &RawValue) -> Option<Value> {
    build(expected, data)
}

/// A numeric `data` array's text, lifted out of the body before serde_json
/// parsed the rest (`super::lift`), read by [`numbers::each`]: exactly what
/// is `expected`, or `None`.
pub fn lifted(expected: &Expected<'_>, array: &[u8]) -> Option<Value> {
    build(expected, Numbers(array))
}

/// The value `expected` read from `source`.
fn build(expected: &Expected<'_>, source: impl Source) -> Option<Value> {
    let &Expected {
        datatype,
        shape,
        count,
    } = expected;
    let Datatype::Numeric(dtype) = Datatype::from_name(datatype)? else {
        return Some(Value::Bytes {
            shape: shape.to_vec(),
            elements: source.collect::<Vec<u8>>(count)?,
        });
    };
    let buffer = match dtype {
        DType::F32 => HostBuffer::from_vec(source.collect::<f32>(count)?),
        DType::F16 => HostBuffer::from_vec(source.collect::<half::f16>(count)?),
        DType::I32 => HostBuffer::from_vec(source.collect::<i32>(count)?),
        DType::I64 => HostBuffer::from_vec(source.collect::<i64>(count)?),
        DType::U8 => HostBuffer::from_vec(source.collect::<u8>(count)?),
    };
    Tensor::from_host(dtype, shape, buffer)
        .map(Value::Numeric)
        .ok()
}

/// Text that holds an input's elements.
trait Source {
    /// Exactly `count` leaves, each converted as [`Leaf`] says, or `None`.
    fn collect<T: Leaf>(self, count: usize) -> Option<Vec<T>>;
}

impl Source for &RawValue {
    fn collect<T: Leaf>(self, count: usize) -> Option<Vec<T>> {
        let mut parser = serde_json::Deserializer::from_str(self.get());
        let mut out = Vec::with_capacity(capacity(count));
        Leaves {
            out: &mut out,
            limit: count,
        }
        .deserialize(&mut parser)
        .ok()?;
        parser.end().ok()?;
        (out.len() == count).then_some(out)
    }
}

/// A lifted array's text: numbers only, read by [`numbers`].
struct Numbers<'a>(&'a [u8]);

/// Bytes of a flat array from which its numbers are read in parts on
/// the compute threads: 14 000 numbers of 18 digits to 50 000 of three, a few
/// hundred microseconds on one thread, well above what waking the others
/// costs.
const PARALLEL_TEXT: usize = 1 << 18;

impl Source for Numbers<'_> {
    fn collect<T: Leaf>(self, count: usize) -> Option<Vec<T>> {
        let threads = cpu::threads();
        let Some(lists) = numbers::split_flat(self.0, threads, PARALLEL_TEXT) else {
            let mut out = Vec::with_capacity(capacity(count));
            numbers::each(self.0, push_within(&mut out, count))?;
            return (out.len() == count).then_some(out);
        };
        // The request's thread reads its share beside the pool's workers:
        // an image's numbers are most of what its request costs before the
        // model runs.
        let parts: Vec<Vec<T>> = cpu::map_tasks(lists.len(), |i| {
            let list = &lists[i];
            let mut part = Vec::with_capacity(capacity(count).min(list.len() / 2 + 1));
            numbers::each_listed(list, push_within(&mut part, count)).map(|()| part)
        })
        .into_iter()
        .collect::<Option<_>>()?;
        (parts.iter().map(Vec::len).sum::<usize>() == count).then_some(())?;
        let mut parts = parts.into_iter();
        let mut out = parts.next().unwrap_or_default();
        out.reserve_exact(count - out.len());
        parts.for_each(|mut part| out.append(&mut part));
        Some(out)
    }
}

/// A `leaf` callback that converts each number as [`Leaf`] says and appends
/// it to `out`, refusing past `count` elements.
fn push_within<T: Leaf>(out: &mut Vec<T>, count: usize) -> impl FnMut(Number) -> bool + '_ {
    move |number| match T::from_number(number) {
        Some(x) if out.len() < count => {
            out.push(x);
            true
        }
        _ => false,
    }
}

/// Room reserved for `count` elements: capped like the `Value` path's,
/// since a shape may claim more than the body holds.
fn capacity(count: usize) -> usize {
    count.min(1 << 24)
}

/// One element type as a JSON leaf converts to it, exactly as the `Value`
/// path converts (`as_f64`, `as_i64`, `as_u64` and the same narrowing).
trait Leaf: Sized + Send {
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_number(number: Number) -> Option<Self> {
        match number {
            Number::U64(x) => Self::from_u64(x),
            Number::I64(x) => Self::from_i64(x),
            Number::F64(x) => Self::from_f64(x),
        }
    }
}

impl Leaf for f32 {
    fn from_u64(x: u64) -> Option<f32> {
        Some(x as f64 as f32)
    }
    fn from_i64(x: i64) -> Option<f32> {
        Some(x as f64 as f32)
    }
    fn from_f64(x: f64) -> Option<f32> {
        Some(x as f32)
    }
}

impl Leaf for half::f16 {
    fn from_u64(x: u64) -> Option<half::f16> {
        Some(half::f16::from_f64(x as f64))
    }
    fn from_i64(x: i64) -> Option<half::f16> {
        Some(half::f16::from_f64(x as f64))
    }
    fn from_f64(x: f64) -> Option<half::f16> {
        Some(half::f16::from_f64(x))
    }
}

impl Leaf for i32 {
    fn from_u64(x: u64) -> Option<i32> {
        i32::try_from(x).ok()
    }
    fn from_i64(x: i64) -> Option<i32> {
        i32::try_from(x).ok()
    }
}

impl Leaf for i64 {
    fn from_u64(x: u64) -> Option<i64> {
        i64::try_from(x).ok()
    }
    fn from_i64(x: i64) -> Option<i64> {
        Some(x)
    }
}

impl Leaf for u8 {
    fn from_u64(x: u64) -> Option<u8> {
        u8::try_from(x).ok()
    }
}

/// BYTES: a string's UTF-8 bytes.
impl Leaf for Vec<u8> {
    fn from_str(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }
}

/// Appends every leaf under one JSON value to `out`, refusing more than
/// `limit` in all (so a long `data` stops early).
struct Leaves<'v, T> {
    out: &'v mut Vec<T>,
    limit: usize,
}

impl<T: Leaf> Leaves<'_, T> {
    fn push<E: de::Error>(&mut self, leaf: Option<T>) -> Result<(), E> {
        match leaf {
            Some(x) if self.out.len() < self.limit => {
                self.out.push(x);
                Ok(())
            }
            // No message: the `Value` path writes the one clients see.
            _ => Err(E::custom("")),
        }
    }
}

impl<'de, T: Leaf> DeserializeSeed<'de> for Leaves<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Leaf> Visitor<'de> for Leaves<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("tensor elements")
    }

    fn visit_u64<E: de::Error>(mut self, x: u64) -> Result<(), E> {
        self.push(T::from_u64(x))
    }

    fn visit_i64<E: de::Error>(mut self, x: i64) -> Result<(), E> {
        self.push(T::from_i64(x))
    }

    fn visit_f64<E: de::Error>(mut self, x: f64) -> Result<(), E> {
        self.push(T::from_f64(x))
    }

    fn visit_str<E: de::Error>(mut self, s: &str) -> Result<(), E> {
        self.push(T::from_str(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let limit = self.limit;
        while items
            .next_element_seed(Leaves {
                out: &mut *self.out,
                limit,
            })?
            .is_some()
        {}
        Ok(())
    }
}

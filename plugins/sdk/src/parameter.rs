//! Typed, range-checked parameters. A request's OIP `parameters`
//! ([`Request::parameter_in_range`](crate::Request::parameter_in_range)) and
//! the `[parameters]` of the model's `config.toml`
//! ([`model::parameter_in_range`](crate::model::parameter_in_range)) are both
//! read through [`FromParameter`] and refused with one message shape, so a
//! client and an operator see the same wording for the same mistake.

use std::fmt::{Debug, Display};
use std::ops::{Bound, RangeBounds};

use crate::ParameterValue;

/// A Rust type a parameter can be read as: `bool`, `i32`, `i64`, `u32`,
/// `u64`, `usize`, `f32` or `f64`.
pub trait FromParameter: Sized + PartialOrd + Display {
    /// How an error message names the type: `"an integer"`, `"a number"`…
    const KIND: &'static str;

    /// A request parameter as this type; `None` when it is of another kind
    /// or does not fit (a negative integer for a `u32`, say).
    fn from_value(value: &ParameterValue) -> Option<Self>;

    /// A `config.toml` parameter (always text) as this type; `None` when it
    /// does not parse.
    fn from_text(text: &str) -> Option<Self>;
}

impl FromParameter for bool {
    const KIND: &'static str = "a boolean";

    fn from_value(value: &ParameterValue) -> Option<Self> {
        value.as_bool()
    }

    fn from_text(text: &str) -> Option<Self> {
        text.trim().parse().ok()
    }
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl FromParameter for $t {
            const KIND: &'static str = "an integer";

            fn from_value(value: &ParameterValue) -> Option<Self> {
                value.as_i64().and_then(|n| n.try_into().ok())
            }

            fn from_text(text: &str) -> Option<Self> {
                text.trim().parse().ok()
            }
        }
    )*};
}

integer!(i32, i64, u32, u64, usize);

macro_rules! number {
    ($($t:ty),*) => {$(
        // Infinity and NaN are nobody's setting, and they would slip past
        // (or vacuously fail) any range check: only finite numbers count.
        impl FromParameter for $t {
            const KIND: &'static str = "a number";

            fn from_value(value: &ParameterValue) -> Option<Self> {
                value.as_f64().map(|x| x as $t).filter(|x| x.is_finite())
            }

            fn from_text(text: &str) -> Option<Self> {
                text.trim().parse::<$t>().ok().filter(|x| x.is_finite())
            }
        }
    )*};
}

number!(f32, f64);

/// A request parameter as the client wrote it (`0`, `1.5`, `true`,
/// `"five"`), for messages: the binding's `Debug` would name its own types.
pub(crate) struct Shown<'a>(pub &'a ParameterValue);

impl Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            ParameterValue::Boolean(b) => write!(f, "{b}"),
            ParameterValue::Integer(i) => write!(f, "{i}"),
            ParameterValue::Double(d) => write!(f, "{d}"),
            ParameterValue::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// `parsed` when it lies in `range`; otherwise the message
/// `"{what} {key} must be {expected}, got {raw:?}"`.
pub(crate) fn check<T: FromParameter>(
    what: &str,
    key: &str,
    raw: &dyn Debug,
    parsed: Option<T>,
    range: &impl RangeBounds<T>,
) -> Result<T, String> {
    parsed
        .filter(|value| range.contains(value))
        .ok_or_else(|| format!("{what} {key} must be {}, got {raw:?}", expected(range)))
}

/// The type and range a message asks for: `"an integer in 1..=50"`,
/// `"a number in (0, 1]"`, `"an integer ≥ 0"`, `"a boolean"`. A range Rust
/// can write is written as a Rust range; one that excludes its start (which
/// Rust cannot write) in interval notation.
fn expected<T: FromParameter>(range: &impl RangeBounds<T>) -> String {
    let kind = T::KIND;
    match (range.start_bound(), range.end_bound()) {
        (Bound::Unbounded, Bound::Unbounded) => kind.to_string(),
        (Bound::Included(start), Bound::Unbounded) => format!("{kind} ≥ {start}"),
        (Bound::Excluded(start), Bound::Unbounded) => format!("{kind} > {start}"),
        (Bound::Unbounded, Bound::Included(end)) => format!("{kind} ≤ {end}"),
        (Bound::Unbounded, Bound::Excluded(end)) => format!("{kind} < {end}"),
        (Bound::Included(start), Bound::Included(end)) => format!("{kind} in {start}..={end}"),
        (Bound::Included(start), Bound::Excluded(end)) => format!("{kind} in {start}..{end}"),
        (Bound::Excluded(start), Bound::Included(end)) => format!("{kind} in ({start}, {end}]"),
        (Bound::Excluded(start), Bound::Excluded(end)) => format!("{kind} in ({start}, {end})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<T: FromParameter + Debug>(
        value: ParameterValue,
        range: impl RangeBounds<T>,
    ) -> String {
        check(
            "parameter",
            "p",
            &Shown(&value),
            T::from_value(&value),
            &range,
        )
        .unwrap_err()
    }

    #[test]
    fn messages_name_the_type_and_range() {
        assert_eq!(
            message::<u32>(ParameterValue::Integer(-1), 0..),
            "parameter p must be an integer ≥ 0, got -1"
        );
        assert_eq!(
            message::<f64>(
                ParameterValue::Double(1.5),
                (Bound::Excluded(0.0), Bound::Included(1.0))
            ),
            "parameter p must be a number in (0, 1], got 1.5"
        );
        assert_eq!(
            message::<u32>(ParameterValue::Text("five".into()), 1..=50),
            "parameter p must be an integer in 1..=50, got \"five\""
        );
        assert_eq!(
            message::<bool>(ParameterValue::Integer(1), ..),
            "parameter p must be a boolean, got 1"
        );
    }

    #[test]
    fn values_in_range_pass() {
        let value = ParameterValue::Double(3.0);
        assert_eq!(
            check("parameter", "p", &value, u32::from_value(&value), &(1..=3)),
            Ok(3)
        );
        assert_eq!(
            check("config parameter", "p", &"7", u32::from_text(" 7 "), &(..)),
            Ok(7)
        );
    }
}

//! Reading a JSON request object field by field, with a precise 400 for
//! each field that is missing, of the wrong type, out of range or unknown.
//!
//! The OpenAI and generate codecs read their bodies with it: every field a
//! codec reads is taken out of the object, so what is left at the end is
//! what the codec does not know, and [`Fields::finish`] refuses it.

use std::fmt::Display;

use serde_json::{Map, Value};

use super::error::ApiError;

/// A field that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    /// The field, when the error is about one (OpenAI's `param`).
    pub param: Option<String>,
    /// What is wrong, for the client.
    pub message: String,
}

impl FieldError {
    /// An error about field `param`.
    pub fn new(param: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            param: Some(param.to_owned()),
            message: message.into(),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> ApiError {
        ApiError::bad_request(e.message)
    }
}

/// The fields of one JSON object not read yet. `what` names the object in
/// messages (e.g. "the request body", "parameters").
pub struct Fields {
    map: Map<String, Value>,
    what: &'static str,
}

/// Short JSON for a message.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

impl Fields {
    /// The fields of the JSON object in `body`.
    pub fn parse(body: &[u8], what: &'static str) -> Result<Fields, FieldError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| FieldError {
            param: None,
            message: format!("{what} is not valid JSON: {e}"),
        })?;
        Fields::of(value, what, None)
    }

    /// The fields of `value`, which must be an object (or null: no fields);
    /// `param` names it when it is itself a field.
    pub fn of(value: Value, what: &'static str, param: Option<&str>) -> Result<Fields, FieldError> {
        match value {
            Value::Object(map) => Ok(Fields { map, what }),
            Value::Null if param.is_some() => Ok(Fields {
                map: Map::new(),
                what,
            }),
            other => Err(FieldError {
                param: param.map(str::to_owned),
                message: format!("{what} must be a JSON object, got {}", shown(&other)),
            }),
        }
    }

    /// Takes field `key`; `null` counts as absent.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    /// A field that must be there.
    pub fn required(&mut self, key: &str) -> Result<Value, FieldError> {
        self.take(key)
            .ok_or_else(|| FieldError::new(key, format!("{} needs a `{key}` field", self.what)))
    }

    /// A string field.
    pub fn string(&mut self, key: &str) -> Result<Option<String>, FieldError> {
        self.take(key)
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(wrong(key, "a string", &other)),
            })
            .transpose()
    }

    /// A boolean field.
    pub fn boolean(&mut self, key: &str) -> Result<Option<bool>, FieldError> {
        self.take(key)
            .map(|v| v.as_bool().ok_or_else(|| wrong(key, "true or false", &v)))
            .transpose()
    }

    /// An integer field within `min..=max`.
    pub fn integer(&mut self, key: &str, min: i64, max: i64) -> Result<Option<i64>, FieldError> {
        self.take(key)
            .map(|v| match v.as_i64() {
                Some(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(wrong(key, &format!("an integer in {min}..={max}"), &v)),
            })
            .transpose()
    }

    /// A number field accepted by `valid`, which `range` describes.
    pub fn number(
        &mut self,
        key: &str,
        range: impl Display,
        valid: impl Fn(f64) -> bool,
    ) -> Result<Option<f64>, FieldError> {
        self.take(key)
            .map(|v| match v.as_f64() {
                Some(x) if valid(x) => Ok(x),
                _ => Err(wrong(key, &format!("a number in {range}"), &v)),
            })
            .transpose()
    }

    /// An option this server does not support, accepted only at the value
    /// that turns it off (`off` holds for it), which `wanted` describes.
    pub fn off(
        &mut self,
        key: &str,
        wanted: &str,
        off: impl Fn(&Value) -> bool,
    ) -> Result<(), FieldError> {
        match self.take(key) {
            Some(value) if !off(&value) => Err(wrong(key, wanted, &value)),
            _ => Ok(()),
        }
    }

    /// A field that is a string or a list of strings (at most `max`).
    pub fn strings(&mut self, key: &str, max: usize) -> Result<Vec<String>, FieldError> {
        let list = match self.take(key) {
            None => return Ok(Vec::new()),
            Some(Value::String(s)) => return Ok(vec![s]),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(wrong(key, "a string or a list of strings", &other)),
        };
        if list.len() > max {
            return Err(FieldError::new(
                key,
                format!("`{key}` takes at most {max} strings, got {}", list.len()),
            ));
        }
        list.into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                other => Err(wrong(key, "a string or a list of strings", &other)),
            })
            .collect()
    }

    /// Takes and drops fields a codec accepts but has no use for.
    pub fn ignore(&mut self, keys: &[&str]) {
        for key in keys {
            self.map.remove(*key);
        }
    }

    /// Refuses whatever was not read.
    pub fn finish(self) -> Result<(), FieldError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(key) => Err(FieldError::new(
                key,
                format!("{} has an unknown field `{key}`", self.what),
            )),
        }
    }
}

/// "`key` must be WANTED, got VALUE".
pub fn wrong(key: &str, wanted: &str, got: &Value) -> FieldError {
    FieldError::new(key, format!("`{key}` must be {wanted}, got {}", shown(got)))
}

/// "`key` is empty: WHAT", where `what` says what to give instead.
pub fn empty_field(key: &str, what: &str) -> FieldError {
    FieldError::new(key, format!("`{key}` is empty: {what}"))
}

/// OpenAI's text input (`prompt`, `input`): a non-empty string or a
/// non-empty list of them. Token-id lists are refused by name; `empty` says
/// what the text is for when one is missing.
pub fn texts(key: &str, value: Value, empty: &str) -> Result<Vec<String>, FieldError> {
    let texts = match value {
        Value::String(s) => vec![s],
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Value::Array(items) if items.iter().all(|v| v.is_number() || v.is_array()) => {
            return Err(FieldError::new(
                key,
                format!("token-id `{key}` is not supported: send the text"),
            ));
        }
        other => return Err(wrong(key, "a string or a list of strings", &other)),
    };
    if texts.is_empty() || texts.iter().any(String::is_empty) {
        return Err(empty_field(key, empty));
    }
    Ok(texts)
}

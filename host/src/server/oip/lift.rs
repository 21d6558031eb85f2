//! Numeric `data` arrays lifted out of a request's JSON text before
//! serde_json reads it.
//!
//! An image sent as JSON is megabytes of numbers, and serde_json reads
//! every byte of the text it is given: even skipping an array as raw text
//! cost it two thirds of reading its numbers. So each array that follows a
//! `"data":` key and starts with a number is cut out of a copy of the text
//! and replaced by a marker string. serde_json parses the small envelope
//! that is left, and an input whose `data` is a marker reads its numbers
//! from the array's text ([`super::numbers`]).
//!
//! A `"data"` key that is not an input's (a parameter's, say) would find a
//! marker where its array was. So the decoder takes each array once, as an
//! input's `data`, and when any is left untaken ([`Lifted::all_taken`]) it
//! decodes the body again as it came. A marker carries a key drawn at random
//! for the process, so no client can write one.

use std::borrow::Cow;
use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::io::Write as _;
use std::ops::Range;
use std::sync::LazyLock;

use super::numbers::{is_whitespace, whitespace};

/// The key whose array is lifted.
const KEY: &[u8] = b"\"data\"";

/// What every marker starts with: a quote and the process's random key.
/// The array's index and a closing quote follow.
static MARKER: LazyLock<String> =
    LazyLock::new(|| format!("\"#lifted-{:016x}-", RandomState::new().hash_one(KEY)));

/// A request's JSON text with its numeric `data` arrays lifted out.
pub struct Lifted<'a> {
    /// What serde_json parses: the text as it came when nothing was
    /// lifted, else a copy with markers in place of the arrays.
    text: Cow<'a, [u8]>,
    /// Each lifted array's text, and whether an input has taken it.
    arrays: Vec<(&'a [u8], Cell<bool>)>,
}

/// What an input's `data` turned out to be.
pub enum Data<'a> {
    /// The text of the array its marker names.
    Array(&'a [u8]),
    /// A marker of an array an input took before: not a request this
    /// decoder can read.
    Again,
    /// No marker: `data` as the client wrote it.
    Written,
}

impl<'a> Lifted<'a> {
    /// `head` with every numeric `data` array lifted out.
    pub fn new(head: &'a [u8]) -> Lifted<'a> {
        let mut arrays = Vec::new();
        let mut text = Vec::new();
        let mut copied = 0;
        // The search resumes past each array lifted, not inside it.
        let mut from = 0;
        while let Some(found) = memchr::memmem::find(&head[from..], KEY) {
            let after = from + found + KEY.len();
            from = after;
            let Some(array) = numeric_array(head, after) else {
                continue;
            };
            text.extend_from_slice(&head[copied..array.start]);
            let _ = write!(text, "{}{}\"", *MARKER, arrays.len());
            (copied, from) = (array.end, array.end);
            arrays.push((&head[array], Cell::new(false)));
        }
        if arrays.is_empty() {
            return Lifted::none(head);
        }
        text.extend_from_slice(&head[copied..]);
        Lifted {
            text: Cow::Owned(text),
            arrays,
        }
    }

    /// `head` with nothing lifted.
    pub fn none(head: &'a [u8]) -> Lifted<'a> {
        Lifted {
            text: Cow::Borrowed(head),
            arrays: Vec::new(),
        }
    }

    /// The text for serde_json.
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// What `data`, given as the raw JSON text `raw`, is; an array it
    /// names counts as taken from now on.
    pub fn take(&self, raw: &str) -> Data<'a> {
        let index = raw
            .strip_prefix(MARKER.as_str())
            .and_then(|rest| rest.strip_suffix('"'))
            .and_then(|index| index.parse::<usize>().ok());
        let Some((array, taken)) = index.and_then(|i| self.arrays.get(i)) else {
            return Data::Written;
        };
        if taken.replace(true) {
            Data::Again
        } else {
            Data::Array(array)
        }
    }

    /// Whether every lifted array was taken as an input's `data`.
    pub fn all_taken(&self) -> bool {
        self.arrays.iter().all(|(_, taken)| taken.get())
    }
}

/// The span of the array that follows `"data"` (ending at `after`) when
/// it is the key's value and its first element is a number. Its end is the
/// bracket that closes it; a quote before that (a string, so not an array
/// of numbers) leaves it where it is.
fn numeric_array(head: &[u8], after: usize) -> Option<Range<usize>> {
    let colon = whitespace(head, after);
    (head.get(colon) == Some(&b':')).then_some(())?;
    let start = whitespace(head, colon + 1);
    (head.get(start) == Some(&b'[')).then_some(())?;
    let first = head[start..]
        .iter()
        .position(|&c| c != b'[' && !is_whitespace(c))?;
    matches!(head[start + first], b'-' | b'0'..=b'9').then_some(())?;
    let mut depth = 0usize;
    for at in memchr::memchr3_iter(b'[', b']', b'"', &head[start..]) {
        match head[start + at] {
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(start..start + at + 1);
                }
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifted(text: &str) -> (String, Vec<String>) {
        let lifted = Lifted::new(text.as_bytes());
        let arrays = lifted
            .arrays
            .iter()
            .map(|(a, _)| String::from_utf8(a.to_vec()).unwrap())
            .collect();
        let envelope = String::from_utf8(lifted.text().to_vec())
            .unwrap()
            .replace(MARKER.as_str(), "\"#");
        (envelope, arrays)
    }

    #[test]
    fn numeric_data_arrays_are_lifted_and_nothing_else() {
        let (envelope, arrays) = lifted(
            r#"{"inputs":[{"name":"x","data" : [[1, -2.5],[3e0,4]]},{"data":["a]",1]},{"data":[]},{"data":[[]]},{"data":7},{"name":"data","data":[-0]}],"parameters":{"data":[5]}}"#,
        );
        assert_eq!(
            arrays,
            ["[[1, -2.5],[3e0,4]]", "[-0]", "[5]"],
            "the arrays of numbers"
        );
        assert_eq!(
            envelope,
            r##"{"inputs":[{"name":"x","data" : "#0"},{"data":["a]",1]},{"data":[]},{"data":[[]]},{"data":7},{"name":"data","data":"#1"}],"parameters":{"data":"#2"}}"##
        );
    }

    #[test]
    fn an_unclosed_array_stays() {
        let (envelope, arrays) = lifted(r#"{"data":[1,2"#);
        assert!(arrays.is_empty());
        assert_eq!(envelope, r#"{"data":[1,2"#);
    }

    #[test]
    fn each_array_is_taken_once_and_only_by_its_marker() {
        let lifted = Lifted::new(br#"{"a":{"data":[1]},"b":{"data":[2]}}"#);
        let marker = |i: usize| format!("{}{i}\"", *MARKER);
        assert!(!lifted.all_taken());
        assert!(matches!(lifted.take(&marker(1)), Data::Array(b"[2]")));
        assert!(matches!(lifted.take(&marker(1)), Data::Again));
        assert!(!lifted.all_taken());
        // A marker of another process, or past the arrays, names nothing.
        assert!(matches!(
            lifted.take("\"#lifted-0000000000000000-0\""),
            Data::Written
        ));
        assert!(matches!(lifted.take(&marker(2)), Data::Written));
        assert!(matches!(lifted.take("[1]"), Data::Written));
        assert!(matches!(lifted.take(&marker(0)), Data::Array(b"[1]")));
        assert!(lifted.all_taken());
    }
}

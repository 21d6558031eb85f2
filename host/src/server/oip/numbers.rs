//! The numbers of a JSON array read straight from its text, each as
//! serde_json reads it.
//!
//! An image or a feature matrix sent as JSON is almost all one `data`
//! array: 150 528 numbers such as `0.8506242036819458` for one 224×224
//! image. serde_json reads them a byte at a time through its deserializer
//! (about 28 ns a number). [`each`] reads the forms clients write, an
//! optional minus, at most 19 digits and an optional fraction, eight digits
//! at a time, and hands every other form to serde_json itself. Either way a
//! number comes out as the `u64`, `i64` or `f64` serde_json makes of it,
//! to the bit.

/// A JSON number as serde_json classifies it: a non-negative integer, a
/// negative one, or anything else (a fraction, an exponent, `-0`, an
/// integer too large for 64 bits).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// A non-negative integer that fits a `u64`.
    U64(u64),
    /// A negative integer that fits an `i64`.
    I64(i64),
    /// Any other number.
    F64(f64),
}

/// How deep arrays may nest here. serde_json refuses past 128 levels
/// counting the envelope's; deeper `data` goes to it, which decides.
const MAX_DEPTH: usize = 64;

/// Calls `leaf` on every number of the JSON array `text`, nested arrays
/// flattened in row-major order. `None` when `text` is not exactly one
/// well-formed array of numbers (whitespace around it allowed), or as soon
/// as `leaf` returns false.
pub fn each(text: &[u8], mut leaf: impl FnMut(Number) -> bool) -> Option<()> {
    let mut depth = 0usize;
    let mut i = 0;
    loop {
        // A value starts here.
        i = whitespace(text, i);
        if text.get(i) == Some(&b'[') {
            depth += 1;
            if depth > MAX_DEPTH {
                return None;
            }
            i = whitespace(text, i + 1);
            if text.get(i) != Some(&b']') {
                continue;
            }
            // An empty array: its `]` closes it below.
        } else {
            if depth == 0 {
                return None;
            }
            let (number, next) = number(text, i)?;
            if !leaf(number) {
                return None;
            }
            i = next;
        }
        // A value ended: a comma starts the next, brackets close arrays.
        loop {
            i = whitespace(text, i);
            match text.get(i)? {
                b',' => {
                    i += 1;
                    break;
                }
                b']' => {
                    depth -= 1;
                    i += 1;
                    if depth == 0 {
                        return (whitespace(text, i) == text.len()).then_some(());
                    }
                }
                _ => return None,
            }
        }
    }
}

/// The elements of the flat JSON array `text` (one `[`, numbers, one
/// `]`), when it is at least `min_len` bytes long, as `parts` comma-separated lists
/// of about equal length for [`each_listed`] to read apart; `None` for a
/// shorter or nested array. What the split leaves out is commas only.
pub fn split_flat(text: &[u8], parts: usize, min_len: usize) -> Option<Vec<&[u8]>> {
    if text.len() < min_len || parts < 2 {
        return None;
    }
    let open = whitespace(text, 0);
    (text.get(open) == Some(&b'[')).then_some(())?;
    let body = &text[open + 1..];
    let close = body.iter().rposition(|&c| c == b']')?;
    let body = &body[..close];
    memchr::memchr2(b'[', b']', body).is_none().then_some(())?;
    (whitespace(text, open + 1 + close + 1) == text.len()).then_some(())?;
    let mut lists = Vec::with_capacity(parts);
    let mut from = 0;
    for part in 1..parts {
        let aim = (body.len() * part / parts).max(from);
        let Some(comma) = memchr::memchr(b',', &body[aim..]) else {
            break;
        };
        lists.push(&body[from..aim + comma]);
        from = aim + comma + 1;
    }
    lists.push(&body[from..]);
    Some(lists)
}

/// Calls `leaf` on every number of `list`, numbers separated by commas
/// with no brackets (a part of [`split_flat`]); `None` when it is not
/// exactly that, or as soon as `leaf` returns false.
pub fn each_listed(list: &[u8], mut leaf: impl FnMut(Number) -> bool) -> Option<()> {
    let mut i = 0;
    loop {
        let (number, next) = number(list, whitespace(list, i))?;
        if !leaf(number) {
            return None;
        }
        i = whitespace(list, next);
        match list.get(i) {
            None => return Some(()),
            Some(b',') => i += 1,
            Some(_) => return None,
        }
    }
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
#[inline(always)]
pub fn whitespace(text: &[u8], mut i: usize) -> usize {
    while text.get(i).is_some_and(|&c| is_whitespace(c)) {
        i += 1;
    }
    i
}

/// Whether `c` is JSON whitespace.
#[inline(always)]
pub fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\n' | b'\r' | b'\t')
}

/// The number that starts at `text[start]` and the index just past it.
#[inline(always)]
fn number(text: &[u8], start: usize) -> Option<(Number, usize)> {
    match common(text, start) {
        Some(read) => Some(read),
        None => by_serde_json(text, start),
    }
}

/// Powers of ten exactly as serde_json's table holds them (every one up to
/// 10²² is an exact `f64`).
const POW10: [f64; 20] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19,
];

/// A number of at most 19 digits with no exponent, computed as serde_json
/// computes it without its `float_roundtrip` feature: the digits as one
/// `u64` (which 19 digits cannot overflow), a fraction's converted to
/// `f64` and divided by 10 to the number of fraction digits. `None` for
/// every other form, valid or not.
#[inline(always)]
fn common(text: &[u8], start: usize) -> Option<(Number, usize)> {
    let negative = text.get(start) == Some(&b'-');
    let first = start + usize::from(negative);
    let (mut significand, mut i) = match *text.get(first)? {
        b'0' => (0, first + 1),
        b'1'..=b'9' => digits(text, first, 0),
        _ => return None,
    };
    let whole = i - first;
    let mut fraction = 0;
    if text.get(i) == Some(&b'.') {
        (significand, i) = digits(text, i + 1, significand);
        fraction = i - (first + whole + 1);
        if fraction == 0 {
            return None;
        }
    }
    // A digit here follows a leading zero ("01", which is invalid); an
    // exponent, or more digits than certainly fit, are serde_json's to read.
    if whole + fraction > 19 || matches!(text.get(i), Some(b'0'..=b'9' | b'e' | b'E')) {
        return None;
    }
    let number = if fraction > 0 {
        let magnitude = significand as f64 / POW10[fraction];
        Number::F64(if negative { -magnitude } else { magnitude })
    } else if !negative {
        Number::U64(significand)
    } else {
        // serde_json's reading of a negative integer: one below i64::MIN,
        // and -0, become floats.
        match (significand as i64).wrapping_neg() {
            n if n >= 0 => Number::F64(-(significand as f64)),
            n => Number::I64(n),
        }
    };
    Some((number, i))
}

/// Appends the decimal digits from `text[i]` on to `significand`, eight at
/// a time while eight are there; returns it and the index past the last
/// digit. Past 19 digits the value wraps; [`common`] refuses those.
#[inline(always)]
fn digits(text: &[u8], mut i: usize, mut significand: u64) -> (u64, usize) {
    while let Some(eight) = text.get(i..i + 8) {
        let word = u64::from_le_bytes(eight.try_into().expect("eight bytes"));
        let Some(value) = eight_digits(word) else {
            break;
        };
        significand = significand.wrapping_mul(100_000_000).wrapping_add(value);
        i += 8;
    }
    while let Some(&c @ b'0'..=b'9') = text.get(i) {
        significand = significand
            .wrapping_mul(10)
            .wrapping_add(u64::from(c - b'0'));
        i += 1;
    }
    (significand, i)
}

/// The value of eight ASCII digits loaded little-endian (the first digit in
/// the lowest byte), `None` unless all eight are digits. The SWAR test and
/// reduction are simdjson's.
#[inline(always)]
fn eight_digits(word: u64) -> Option<u64> {
    let high = word & 0xF0F0_F0F0_F0F0_F0F0;
    let carried = (word.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4;
    if high | carried != 0x3333_3333_3333_3333 {
        return None;
    }
    let pairs = ((word & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(2561)) >> 8;
    let quads = ((pairs & 0x00FF_00FF_00FF_00FF).wrapping_mul(6_553_601)) >> 16;
    Some(((quads & 0x0000_FFFF_0000_FFFF).wrapping_mul(42_949_672_960_001)) >> 32)
}

/// Any other number, read by serde_json from the run of number characters
/// at `text[start]` (a JSON number is always followed by something else).
#[cold]
fn by_serde_json(text: &[u8], start: usize) -> Option<(Number, usize)> {
    let run = text[start..]
        .iter()
        .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .unwrap_or(text.len() - start);
    let number: serde_json::Number = serde_json::from_slice(&text[start..start + run]).ok()?;
    let number = match (number.as_u64(), number.as_i64(), number.as_f64()) {
        (Some(u), _, _) => Number::U64(u),
        (None, Some(i), _) => Number::I64(i),
        (None, None, Some(f)) => Number::F64(f),
        (None, None, None) => return None,
    };
    Some((number, start + run))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde_json's reading of each number of a JSON array.
    fn serde(text: &str) -> Option<Vec<Number>> {
        fn leaves(value: &serde_json::Value, out: &mut Vec<Number>) -> Option<()> {
            match value {
                serde_json::Value::Array(items) => {
                    items.iter().try_for_each(|item| leaves(item, out))
                }
                serde_json::Value::Number(n) => {
                    out.push(match (n.as_u64(), n.as_i64(), n.as_f64()) {
                        (Some(u), _, _) => Number::U64(u),
                        (None, Some(i), _) => Number::I64(i),
                        (None, None, f) => Number::F64(f?),
                    });
                    Some(())
                }
                _ => None,
            }
        }
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        value.is_array().then_some(())?;
        let mut out = Vec::new();
        leaves(&value, &mut out)?;
        Some(out)
    }

    fn ours(text: &str) -> Option<Vec<Number>> {
        let mut out = Vec::new();
        each(text.as_bytes(), |n| {
            out.push(n);
            true
        })?;
        Some(out)
    }

    /// Compares bit for bit: `-0.0` and `0.0` differ, as they do to a model.
    fn same(a: &[Number], b: &[Number]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|pair| match pair {
                (Number::F64(x), Number::F64(y)) => x.to_bits() == y.to_bits(),
                (x, y) => x == y,
            })
    }

    fn agree(text: &str) {
        let (want, got) = (serde(text), ours(text));
        let agreed = match (&want, &got) {
            (Some(want), Some(got)) => same(want, got),
            (None, None) => true,
            _ => false,
        };
        assert!(agreed, "{text:?}: serde_json {want:?}, ours {got:?}");
    }

    #[test]
    fn forms_and_edges_read_as_serde_json_reads_them() {
        for number in [
            "0",
            "-0",
            "7",
            "-7",
            "0.5",
            "-0.5",
            "-0.0",
            "13.0",
            "1.25",
            "10",
            "100000000",
            "12345678",
            "123456789",
            "1234567812345678",
            "0.8506242036819458",
            "0.26978665590286255",
            "-0.931378",
            "9999999999999999999",
            "10000000000000000000",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "-9223372036854775807",
            "-9223372036854775808",
            "-9223372036854775809",
            "0.0000000000000000001",
            "0.00000000000000000001",
            "1.0000000000000000001",
            "123456789012345678.9",
            "1e5",
            "1E5",
            "1e-5",
            "-2.5e+3",
            "5.960464477539063e-08",
            "1e308",
            "1e309",
            "1.7976931348623157e308",
            "4.9e-324",
            "1e-400",
            "3.4028234663852886e38",
            "16777217",
            "0.1",
            "0.2",
            "0.3",
        ] {
            agree(&format!("[{number}]"));
            agree(&format!("[ {number} , -{number} ]"));
            agree(&format!("[[{number}],[{number}, 1]]"));
        }
    }

    #[test]
    fn what_json_forbids_is_refused() {
        for text in [
            "[01]",
            "[-]",
            "[1.]",
            "[.5]",
            "[+1]",
            "[1e]",
            "[1e+]",
            "[--1]",
            "[1.2.3]",
            "[0x10]",
            "[1,]",
            "[,1]",
            "[1 2]",
            "[[1]",
            "[1]]",
            "[]]",
            "1",
            "[1] 2",
            "[NaN]",
            "[Infinity]",
            "[\"1\"]",
            "[true]",
            "[null]",
            "[{}]",
            "[1\u{a0}]",
            "[1\u{b}]",
            "",
            "[",
        ] {
            assert!(ours(text).is_none(), "{text:?} was read");
            agree(text);
        }
        // Empty arrays, nested or not, are fine.
        for text in ["[]", "[[]]", "[[], [1], []]", " [ [ 1 ] ] \n"] {
            agree(text);
        }
    }

    /// A flat array read in parts holds the numbers it holds whole, split
    /// at commas only; nested or short arrays, and malformed parts, are
    /// not read that way.
    #[test]
    fn flat_arrays_read_in_parts_as_whole() {
        let numbers: Vec<String> = (0..1000)
            .map(|i| format!("{}", i as f64 / 7.0 - 50.0))
            .collect();
        let text = format!(" [ {} ]\n", numbers.join(" , "));
        let whole = ours(&text).unwrap();
        for parts in 2..6 {
            let lists = split_flat(text.as_bytes(), parts, 0).unwrap();
            assert_eq!(lists.len(), parts);
            let mut read = Vec::new();
            for list in lists {
                each_listed(list, |n| {
                    read.push(n);
                    true
                })
                .unwrap();
            }
            assert!(same(&read, &whole), "{parts} parts");
        }
        assert!(split_flat(text.as_bytes(), 2, text.len() + 1).is_none());
        assert!(split_flat(b"[[1,2],[3,4]]", 2, 0).is_none());
        assert!(split_flat(b"[1,2]]", 2, 0).is_none());
        assert!(split_flat(b"[1,2] x", 2, 0).is_none());
        for list in ["1,", ",1", "1 2", "1,,2", "", "1]"] {
            assert!(each_listed(list.as_bytes(), |_| true).is_none(), "{list:?}");
        }
    }

    #[test]
    fn deep_nesting_is_left_to_serde_json() {
        let deep = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        assert!(ours(&deep).is_none());
        let fine = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(same(&ours(&fine).unwrap(), &[Number::U64(1)]));
    }

    /// Random numbers in the forms clients write, and digit strings of
    /// every length: each reads as serde_json reads it.
    #[test]
    fn random_numbers_read_as_serde_json_reads_them() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut text = String::from("[");
        for i in 0..200_000 {
            let r = next();
            let n = match i % 5 {
                0 => {
                    let x = f32::from_bits(r as u32 & 0x7FFF_FFFF);
                    format!("{}", if x.is_finite() { x } else { 1.5 })
                }
                1 => format!("{:e}", f64::from_bits(r & 0x7FEF_FFFF_FFFF_FFFF)),
                2 => format!("{}", (r >> (r % 64)) as i64),
                3 => format!("{:.*}", (r % 12) as usize, (r % 10_000) as f64 / 7.0),
                _ => {
                    let digits = 1 + (r % 24) as usize;
                    let s: String = (0..digits)
                        .map(|d| char::from(b'0' + ((r >> (d % 60)) % 10) as u8))
                        .collect();
                    let s = s.trim_start_matches('0');
                    let s = if s.is_empty() { "0" } else { s };
                    match r % 3 {
                        0 => s.to_owned(),
                        1 => format!("-{s}"),
                        _ => format!("0.{s}"),
                    }
                }
            };
            if i > 0 {
                text.push(',');
            }
            text.push_str(&n);
        }
        text.push(']');
        let (want, got) = (serde(&text).unwrap(), ours(&text).unwrap());
        assert_eq!(want.len(), got.len());
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert!(
                same(&[*w], &[*g]),
                "number {i}: serde_json {w:?}, ours {g:?}"
            );
        }
    }
}

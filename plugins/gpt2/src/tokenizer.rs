//! GPT-2's byte-level BPE, as `vocab.json` + `merges.txt` define it.
//!
//! Text is split on the special token `<|endoftext|>`, each segment is
//! pre-tokenized with GPT-2's regex, each piece's UTF-8 bytes are mapped to
//! printable characters (so every byte is a vocabulary entry) and the pieces
//! are merged pair by pair, lowest merge rank first. Decoding maps the
//! characters back to bytes.

use std::collections::HashMap;

use regex::Regex;

/// GPT-2's end-of-text (and unconditional start) token.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// GPT-2's pre-tokenization pattern without its `\s+(?!\S)` alternative:
/// the `regex` crate has no lookahead, so [`Tokenizer::pieces`] gives the
/// last space of a run back instead, which is what the lookahead does.
const PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

/// A GPT-2 tokenizer.
pub struct Tokenizer {
    /// Vocabulary id of each byte's printable stand-in.
    byte_ids: [u32; 256],
    /// `(left, right)` -> `(rank, merged id)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Token text by id (byte stand-ins, or the special token itself).
    tokens: Vec<String>,
    /// The byte each printable stand-in character represents.
    char_bytes: HashMap<char, u8>,
    pattern: Regex,
    end_of_text: u32,
}

impl Tokenizer {
    /// Parses GPT-2's `vocab.json` (token -> id) and `merges.txt` (one
    /// `left right` pair per line, best first, after a `#version` line).
    pub fn new(vocab_json: &[u8], merges_txt: &[u8]) -> Result<Tokenizer, String> {
        let vocab: HashMap<String, u32> = serde_json::from_slice(vocab_json)
            .map_err(|e| format!("vocab.json is not a JSON object of token ids: {e}"))?;
        let merges_txt = std::str::from_utf8(merges_txt).map_err(|e| format!("merges.txt: {e}"))?;
        let byte_chars = bytes_to_unicode();
        let mut byte_ids = [0u32; 256];
        for (byte, c) in byte_chars.iter().enumerate() {
            byte_ids[byte] = *vocab.get(c.to_string().as_str()).ok_or_else(|| {
                format!(
                    "vocab.json lacks byte {byte:#04x} ({c:?}): not a byte-level BPE vocabulary"
                )
            })?;
        }
        let end_of_text = *vocab
            .get(END_OF_TEXT)
            .ok_or_else(|| format!("vocab.json has no {END_OF_TEXT} token"))?;
        let mut merges = HashMap::new();
        let lines = merges_txt
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty());
        for (rank, line) in lines.enumerate() {
            let (left, right) = line
                .split_once(' ')
                .ok_or_else(|| format!("merges.txt line {:?} is not a pair", line))?;
            let id = |token: &str| {
                vocab
                    .get(token)
                    .copied()
                    .ok_or_else(|| format!("merges.txt names {token:?}, which vocab.json lacks"))
            };
            let pair = (id(left)?, id(right)?);
            let merged = id(&format!("{left}{right}"))?;
            // A repeated pair keeps its first (best) rank.
            merges.entry(pair).or_insert((rank as u32, merged));
        }
        let size = vocab.values().max().map_or(0, |&m| m as usize + 1);
        let mut tokens = vec![String::new(); size];
        for (token, id) in vocab {
            tokens[id as usize] = token;
        }
        let char_bytes = byte_chars
            .iter()
            .enumerate()
            .map(|(byte, &c)| (c, byte as u8))
            .collect();
        Ok(Tokenizer {
            byte_ids,
            merges,
            tokens,
            char_bytes,
            pattern: Regex::new(PATTERN).expect("the GPT-2 pattern compiles"),
            end_of_text,
        })
    }

    /// Number of ids (one past the largest).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of `<|endoftext|>`.
    pub fn end_of_text(&self) -> u32 {
        self.end_of_text
    }

    /// The ids of `text`; `<|endoftext|>` in the text is the special token.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for (i, segment) in text.split(END_OF_TEXT).enumerate() {
            if i > 0 {
                ids.push(self.end_of_text);
            }
            for piece in self.pieces(segment) {
                self.merge(piece.as_bytes(), &mut ids);
            }
        }
        ids
    }

    /// Appends the bytes token `id` stands for (nothing for an unknown id):
    /// a piece of UTF-8 that may end mid-character (the SDK's `TextStream`
    /// turns the pieces into text, U+FFFD for bytes that are not UTF-8, as
    /// Hugging Face's decoder does).
    pub fn push_bytes(&self, id: u32, bytes: &mut Vec<u8>) {
        let Some(token) = self.tokens.get(id as usize) else {
            return;
        };
        for c in token.chars() {
            match self.char_bytes.get(&c) {
                Some(&b) => bytes.push(b),
                // Special tokens are plain text, not byte stand-ins.
                None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
    }

    /// Splits `text` as GPT-2's regex does.
    fn pieces<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = Vec::new();
        let mut start = 0;
        while let Some(m) = self.pattern.find_at(text, start) {
            let mut end = m.end();
            // Only the final `\s+` alternative matches whitespace alone, and
            // it stops before a non-space. GPT-2's `\s+(?!\S)` would have
            // matched one character less there, leaving the last space to
            // prefix the next word (" word"), so give it back.
            if end < text.len() && m.as_str().chars().all(char::is_whitespace) {
                let last = m.as_str().chars().next_back().map_or(0, char::len_utf8);
                if m.len() > last {
                    end -= last;
                }
            }
            pieces.push(&text[m.start()..end]);
            start = end;
        }
        pieces
    }

    /// Appends the BPE ids of one pre-tokenized piece.
    fn merge(&self, bytes: &[u8], out: &mut Vec<u32>) {
        let mut symbols: Vec<u32> = bytes.iter().map(|&b| self.byte_ids[b as usize]).collect();
        while symbols.len() > 1 {
            let best = symbols
                .windows(2)
                .filter_map(|w| {
                    self.merges
                        .get(&(w[0], w[1]))
                        .map(|&(rank, _)| (rank, w[0], w[1]))
                })
                .min();
            let Some((_, left, right)) = best else {
                break;
            };
            let merged = self.merges[&(left, right)].1;
            // Every occurrence of the best pair, left to right.
            let mut next = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && symbols[i] == left && symbols[i + 1] == right {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(symbols[i]);
                    i += 1;
                }
            }
            symbols = next;
        }
        out.extend(symbols);
    }
}

/// GPT-2's byte -> character table: printable Latin-1 bytes stand for
/// themselves, the rest are shifted to code points from U+0100 up, so no
/// token contains whitespace or control characters.
fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut shifted = 0u32;
    for byte in 0..=255u8 {
        table[byte as usize] = if printable(byte) {
            char::from(byte)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).expect("U+0100..U+0143 are characters")
        };
    }
    table
}

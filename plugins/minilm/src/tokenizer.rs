//! BERT's uncased WordPiece tokenizer, as Hugging Face `tokenizers` runs it
//! for all-MiniLM-L6-v2 (its `tokenizer.json`): special tokens matched in the
//! raw text, then `BertNormalizer` (clean text, space out Chinese characters,
//! strip accents, lowercase), `BertPreTokenizer` (split on whitespace, isolate
//! punctuation), `WordPiece` (greedy longest match, `##` continuations) and
//! `[CLS] … [SEP]`.
//!
//! Each step follows the Rust `tokenizers` crate rather than the older Python
//! `BertTokenizer` where the two differ (accents are stripped before
//! lowercasing, unassigned code points are kept), because that is what
//! sentence-transformers loads. Which characters count as control, Chinese,
//! nonspacing mark or punctuation comes from `tables.rs`, read off
//! `tokenizers` itself: its Unicode data is older than any current crate's.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;

use crate::tables;

/// Words longer than this many characters become one `[UNK]`, unsplit.
const MAX_WORD_CHARS: usize = 100;

/// The special tokens; the tokenizer matches them verbatim in the raw text
/// (they are "added tokens" that skip normalization), so a client can send
/// `[MASK]` and get the mask token.
const SPECIAL: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// A WordPiece vocabulary and the ids of the special tokens.
pub struct Tokenizer {
    vocab: HashMap<String, i64>,
    /// Ids of [`SPECIAL`], in the same order.
    special: [i64; 5],
}

/// A piece of the raw text: a special token's id, or text between them.
enum Segment<'a> {
    Special(i64),
    Text(&'a str),
}

impl Tokenizer {
    /// Parses a BERT `vocab.txt`: one token per line, the id is the line
    /// number. Fails if a special token is missing.
    pub fn from_vocab(text: &str) -> Result<Self, String> {
        // A later duplicate line wins, as in Hugging Face's `load_vocab`.
        let vocab: HashMap<String, i64> = text
            .lines()
            .enumerate()
            .map(|(id, token)| (token.to_string(), id as i64))
            .collect();
        let mut special = [0; 5];
        for (slot, token) in special.iter_mut().zip(SPECIAL) {
            *slot = *vocab
                .get(token)
                .ok_or_else(|| format!("vocab.txt has no {token} token"))?;
        }
        Ok(Tokenizer { vocab, special })
    }

    /// One past the largest id: the embedding table needs this many rows.
    pub fn vocab_size(&self) -> i64 {
        self.vocab.values().copied().max().map_or(0, |id| id + 1)
    }

    /// The id of `[PAD]`.
    pub fn pad(&self) -> i64 {
        self.special[0]
    }

    fn unk(&self) -> i64 {
        self.special[1]
    }

    /// `[CLS] wordpieces… [SEP]` for `text`, cut to at most `max_tokens` ids
    /// (specials included) by dropping wordpieces from the end.
    ///
    /// # Panics
    /// If `max_tokens < 2`: there must be room for `[CLS]` and `[SEP]`.
    pub fn encode(&self, text: &str, max_tokens: usize) -> Vec<i64> {
        assert!(
            max_tokens >= 2,
            "max_tokens must leave room for [CLS] and [SEP]"
        );
        let (cls, sep) = (self.special[2], self.special[3]);
        // Everything up to `limit` ids is kept. Only WordPiece stops once it
        // is reached: the whole text is still scanned for special tokens, and
        // each text segment it starts is normalized and pre-tokenized in full
        // (a text without special tokens is one segment), so a huge text
        // still costs time linear in its length, though no vocabulary
        // look-ups past the limit.
        let limit = max_tokens - 1;
        let mut ids = vec![cls];
        for segment in self.segments(text) {
            if ids.len() >= limit {
                break;
            }
            match segment {
                Segment::Special(id) => ids.push(id),
                Segment::Text(raw) => {
                    for word in pre_tokenize(&normalize(raw)) {
                        if ids.len() >= limit {
                            break;
                        }
                        self.word_pieces(word, &mut ids);
                    }
                }
            }
        }
        ids.truncate(limit);
        ids.push(sep);
        ids
    }

    /// Splits the raw text at special tokens (leftmost match; none is a
    /// prefix of another).
    fn segments<'a>(&self, text: &'a str) -> Vec<Segment<'a>> {
        let mut segments = Vec::new();
        let mut start = 0;
        let mut at = 0;
        while let Some(offset) = text[at..].find('[') {
            let i = at + offset;
            match SPECIAL.iter().position(|s| text[i..].starts_with(s)) {
                Some(k) => {
                    if start < i {
                        segments.push(Segment::Text(&text[start..i]));
                    }
                    segments.push(Segment::Special(self.special[k]));
                    start = i + SPECIAL[k].len();
                    at = start;
                }
                None => at = i + 1,
            }
        }
        if start < text.len() {
            segments.push(Segment::Text(&text[start..]));
        }
        segments
    }

    /// Appends the WordPiece ids of one pre-tokenized word: greedy longest
    /// match from the left, continuations prefixed with `##`; a word with a
    /// part that matches nothing, or one over [`MAX_WORD_CHARS`], is a single
    /// `[UNK]`.
    fn word_pieces(&self, word: &str, ids: &mut Vec<i64>) {
        if word.chars().count() > MAX_WORD_CHARS {
            ids.push(self.unk());
            return;
        }
        let first = ids.len();
        let mut key = String::with_capacity(word.len() + 2);
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let found = loop {
                key.clear();
                if start > 0 {
                    key.push_str("##");
                }
                key.push_str(&word[start..end]);
                if let Some(&id) = self.vocab.get(&key) {
                    break Some(id);
                }
                // Shorten by one character.
                match word[start..end].char_indices().next_back() {
                    Some((last, _)) if last > 0 => end = start + last,
                    _ => break None,
                }
            };
            match found {
                Some(id) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(first);
                    ids.push(self.unk());
                    return;
                }
            }
        }
    }
}

/// `BertNormalizer` with `clean_text`, `handle_chinese_chars`, `lowercase`
/// and accents stripped (its default when lowercasing).
fn normalize(text: &str) -> String {
    let mut spaced = String::with_capacity(text.len());
    for c in text.chars() {
        // Clean text: drop NUL, U+FFFD, control and format characters, fold
        // every kind of whitespace to a space.
        if in_table(c, tables::REMOVED) {
            continue;
        }
        // (Tab, newline and carriage return are not in REMOVED.)
        let c = if c.is_whitespace() { ' ' } else { c };
        // Chinese characters become words of their own.
        if in_table(c, tables::CHINESE) {
            spaced.extend([' ', c, ' ']);
        } else {
            spaced.push(c);
        }
    }
    // Strip accents (NFD, then drop nonspacing marks), then lowercase one
    // character at a time: `str::to_lowercase` would turn a final Σ into ς,
    // which the tokenizer does not.
    let mut out = String::with_capacity(spaced.len());
    for c in spaced
        .nfd()
        .filter(|&c| !in_table(c, tables::NONSPACING_MARK))
    {
        out.extend(c.to_lowercase());
    }
    out
}

/// `BertPreTokenizer`: words split at whitespace, each punctuation character
/// a word of its own.
fn pre_tokenize(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if space || in_table(c, tables::PUNCTUATION) {
            if let Some(s) = start.take() {
                words.push(&text[s..i]);
            }
            if !space {
                words.push(&text[i..i + c.len_utf8()]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push(&text[s..]);
    }
    words
}

/// Whether `c` lies in one of `table`'s sorted, inclusive ranges.
fn in_table(c: char, table: &[(u32, u32)]) -> bool {
    let c = c as u32;
    table
        .binary_search_by(|&(first, last)| {
            if last < c {
                std::cmp::Ordering::Less
            } else if first > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: the specials at BERT's ids are not needed, only
    /// their presence.
    fn tokenizer() -> Tokenizer {
        let tokens = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "un", "##aff",
            "##able", "!", "cafe", "我", "a", ",",
        ];
        Tokenizer::from_vocab(&tokens.join("\n")).unwrap()
    }

    #[test]
    fn normalizes_like_bert() {
        assert_eq!(normalize("Héllo\tWORLD\u{0}\u{200b}"), "hello world");
        assert_eq!(normalize("Café crème"), "cafe creme");
        assert_eq!(normalize("我a"), " 我 a");
        // Per-character lowercasing: no final sigma.
        assert_eq!(normalize("ΟΔΟΣ"), "οδοσ");
        // tokenizers' older Unicode data: an unassigned code point stays,
        // U+1734 (a nonspacing mark back then) goes.
        assert_eq!(normalize("a\u{38b}\u{1734}b"), "a\u{38b}b");
    }

    #[test]
    fn splits_words_and_punctuation() {
        assert_eq!(
            pre_tokenize("  hello, world!! "),
            ["hello", ",", "world", "!", "!"]
        );
        assert_eq!(pre_tokenize("a$b"), ["a", "$", "b"]);
        assert_eq!(pre_tokenize(""), Vec::<&str>::new());
    }

    #[test]
    fn word_pieces_and_unknowns() {
        let t = tokenizer();
        // [CLS]=2, [SEP]=3, [UNK]=1.
        assert_eq!(t.encode("Unaffable hello!", 64), [2, 7, 8, 9, 5, 10, 3]);
        assert_eq!(t.encode("unaffx world", 64), [2, 1, 6, 3]);
        assert_eq!(t.encode(&"a".repeat(101), 64), [2, 1, 3]);
        assert_eq!(t.encode("", 64), [2, 3]);
        assert_eq!(t.encode("Café我", 64), [2, 11, 12, 3]);
    }

    #[test]
    fn special_tokens_in_raw_text() {
        let t = tokenizer();
        // Matched case-sensitively, before lowercasing: `[mask]` is text.
        assert_eq!(
            t.encode("hello [MASK]world[mask]", 64),
            [2, 5, 4, 6, 1, 1, 1, 3]
        );
        assert_eq!(t.encode("[[SEP]", 64), [2, 1, 3, 3]);
    }

    #[test]
    fn truncates_to_max_tokens() {
        let t = tokenizer();
        let ids = t.encode(&"hello ".repeat(1000), 8);
        assert_eq!(ids, [2, 5, 5, 5, 5, 5, 5, 3]);
        assert_eq!(t.encode("hello world", 2), [2, 3]);
    }
}

//! Output sent while a request runs: a text generation streamed token by
//! token.
//!
//! [`TextStream`] does what every streaming generator needs around the raw
//! `output.send`: it turns each token's bytes into whole UTF-8 characters,
//! ends the text at the first stop sequence (which is not returned), holds
//! back text that may be the start of one, and reports when the client hung
//! up. It keeps the text whether or not the request is streamed, so a
//! handler returns the same text either way.
//!
//! ```no_run
//! use edgeserve_sdk::output::{Flow, TextStream};
//!
//! # fn next() -> (u32, Vec<u8>) { (0, Vec::new()) }
//! let mut stream = TextStream::new(0, vec!["\n\n".to_owned()]);
//! for _ in 0..16 {
//!     let (token, bytes) = next();
//!     if stream.push(token, &bytes, None) != Flow::Continue {
//!         break;
//!     }
//! }
//! let text = stream.finish();
//! ```

use crate::bindings::edgeserve::handler::output as raw;

pub use raw::TextChunk;

/// Whether the current request is streamed (when it is not, chunks are
/// dropped by the host).
pub fn streaming() -> bool {
    raw::streaming()
}

/// Sends `chunk` now; false when the client hung up (stop and return).
pub fn send(chunk: &TextChunk) -> bool {
    raw::send(chunk)
}

/// What a generator does after [`TextStream::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Generate the next token.
    Continue,
    /// A stop sequence ended the text.
    Stop,
    /// The client hung up: stop; nobody reads the answer.
    Cancelled,
}

/// One generated text, streamed as it grows. See the [module docs](self).
pub struct TextStream {
    index: u32,
    stops: Vec<String>,
    streaming: bool,
    /// Bytes of an incomplete character.
    pending: Vec<u8>,
    /// The text so far, whole characters only, ending before any stop.
    text: String,
    /// Bytes of `text` already sent.
    sent: usize,
    /// Tokens (and their log probabilities) not sent yet.
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    stopped: bool,
}

impl TextStream {
    /// The stream of input element `index`, ending at the first of `stops`
    /// (empty ones are ignored).
    pub fn new(index: u32, mut stops: Vec<String>) -> TextStream {
        stops.retain(|s| !s.is_empty());
        TextStream {
            index,
            stops,
            streaming: streaming(),
            pending: Vec::new(),
            text: String::new(),
            sent: 0,
            tokens: Vec::new(),
            logprobs: Vec::new(),
            stopped: false,
        }
    }

    /// Adds one generated token and its bytes (and its log probability when
    /// the request asked for them), sending what became final.
    pub fn push(&mut self, token: u32, bytes: &[u8], logprob: Option<f32>) -> Flow {
        self.tokens.push(token);
        self.logprobs.extend(logprob);
        self.pending.extend_from_slice(bytes);
        self.decode(false);
        if let Some(at) = self.first_stop() {
            self.text.truncate(at);
            self.pending.clear();
            self.stopped = true;
            return match self.send_to(at) {
                true => Flow::Stop,
                false => Flow::Cancelled,
            };
        }
        let end = self.text.len() - self.held_back();
        match self.send_to(end) {
            true => Flow::Continue,
            false => Flow::Cancelled,
        }
    }

    /// Whether a stop sequence ended the text.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Ends the stream: held-back text is sent, and an incomplete character
    /// at the end becomes U+FFFD (as `String::from_utf8_lossy` does).
    /// Returns the whole text.
    pub fn finish(mut self) -> String {
        self.decode(true);
        self.send_to(self.text.len());
        self.text
    }

    /// Moves the whole characters of `pending` into `text`; invalid bytes
    /// become U+FFFD, an incomplete tail waits unless this is the `last` call.
    fn decode(&mut self, last: bool) {
        loop {
            let (valid, bad) = match std::str::from_utf8(&self.pending) {
                Ok(_) => (self.pending.len(), None),
                Err(e) => (e.valid_up_to(), Some(e.error_len())),
            };
            self.text
                .push_str(&String::from_utf8_lossy(&self.pending[..valid]));
            match bad {
                None => {
                    self.pending.clear();
                    return;
                }
                Some(Some(len)) => {
                    self.text.push(char::REPLACEMENT_CHARACTER);
                    self.pending.drain(..valid + len);
                }
                Some(None) if last => {
                    self.text.push(char::REPLACEMENT_CHARACTER);
                    self.pending.clear();
                    return;
                }
                Some(None) => {
                    self.pending.drain(..valid);
                    return;
                }
            }
        }
    }

    /// Where the earliest stop sequence starts in the unsent text.
    fn first_stop(&self) -> Option<usize> {
        let from = self.sent;
        self.stops
            .iter()
            .filter_map(|stop| self.text[from..].find(stop.as_str()))
            .min()
            .map(|at| from + at)
    }

    /// Bytes at the end of `text` that may begin a stop sequence.
    fn held_back(&self) -> usize {
        let unsent = &self.text[self.sent..];
        self.stops
            .iter()
            .filter_map(|stop| {
                (1..stop.len())
                    .rev()
                    .filter(|&k| stop.is_char_boundary(k))
                    .find(|&k| unsent.ends_with(&stop[..k]))
            })
            .max()
            .unwrap_or(0)
    }

    /// Sends the text up to byte `end` with the tokens not sent yet; false
    /// when the client hung up.
    fn send_to(&mut self, end: usize) -> bool {
        let end = end.max(self.sent);
        if !self.streaming {
            self.tokens.clear();
            self.logprobs.clear();
            return true;
        }
        if self.tokens.is_empty() && end == self.sent {
            return true;
        }
        let chunk = TextChunk {
            index: self.index,
            tokens: std::mem::take(&mut self.tokens),
            logprobs: std::mem::take(&mut self.logprobs),
            text: self.text[self.sent..end].to_owned(),
        };
        self.sent = end;
        send(&chunk)
    }
}

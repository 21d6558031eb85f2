//! GPT-2 text generation.
//!
//! The version folder holds a GPT-2 checkpoint as Hugging Face lays it out:
//! `model.safetensors` (standard GPT-2 weight names, bare or under
//! `transformer.`), `config.json` (`n_layer`, `n_head`, …), `vocab.json` and
//! `merges.txt`. Tokenization runs in the guest; the transformer runs on host
//! ops, and the keys and values of past positions stay on the host between
//! decode steps, so each new token costs one position's worth of compute.
//! A greedy id goes from the argmax straight into the next step's embedding
//! lookup, never through the guest; when nothing watches the tokens one by
//! one (not streamed, no stop text, no log probabilities), the ids are read
//! back a few at a time, so a GPU runs several steps per wait.
//!
//! Input `text`: BYTES `[n]`, one prompt per element (an empty prompt starts
//! from `<|endoftext|>`).
//!
//! Request parameters (OIP `parameters`):
//! * `max_tokens` (integer ≥ 0, default the config parameter `max_tokens`,
//!   else 32): tokens to generate, capped so prompt + continuation fit the
//!   context (`n_positions`); generation also stops at `<|endoftext|>`;
//! * `temperature` (number ≥ 0), `top_k` (integer ≥ 0, 0: off), `top_p`
//!   (number in (0, 1]): any of them turns on sampling (temperature 1 unless
//!   given; temperature 0 is greedy). Without them decoding is greedy;
//! * `seed` (integer): the sampler's seed. The same request with the same
//!   seed gives the same text; without a seed every request draws a fresh one;
//! * `return_tokens` (boolean): also output `prompt_tokens` and `tokens`
//!   (also on when the request names `tokens` in its `outputs`);
//! * `return_logits` (boolean): also output `logits` (also on when the
//!   request names `logits` in its `outputs`);
//! * `stop` (text, repeatable): generation ends where the text reaches one
//!   of these; the stop text is not returned;
//! * `return_finish_reason` (boolean): also output `finish_reason` (also on
//!   when the request names it in its `outputs`);
//! * `return_logprobs` (boolean): also output `logprobs` (also on when the
//!   request names it in its `outputs`).
//!
//! A streamed request gets its text token by token through the `output`
//! interface, whole UTF-8 characters only, and stops at the next token when
//! the client hangs up.
//!
//! Outputs: `text` BYTES `[n]`, the continuations (without the prompt);
//! `finish_reason` BYTES `[n]`: `length` (the token budget or the context
//! ran out), `stop` (a stop sequence) or `eos` (`<|endoftext|>`);
//! `logprobs` FP32 `[n, longest]`, each generated token's natural-log
//! probability under the model, rows padded with 0;
//! `prompt_tokens` and `tokens` INT64 `[n, longest]`, the prompt's ids and the
//! generated ids, rows padded with -1; `logits` FP32 `[n, vocab]`, the
//! logits after the last prompt position (what the first generated token is
//! picked from). All but `text` are extras, off unless asked for: a flag
//! turns them on, and so does naming `tokens` or `logits` in `outputs` when
//! the flag is not given (`Request::names_output`); a request that names no
//! outputs and sets no flag gets only `text`.

mod sampling;
mod tokenizer;
mod transformer;

use std::hash::{BuildHasher, RandomState};
use std::ops::Bound;

use edgeserve_sdk::output::{self, Flow, TextStream};
use edgeserve_sdk::{
    Dtype, InferError, Model, ModelMetadata, Output, Request, Tensor, TensorSpec, export_model,
    model,
};

use sampling::{Decoding, SplitMix64, next_token};
use tokenizer::Tokenizer;
use transformer::{Gpt2, KvCache};

/// Tokens generated when neither the request nor the config says.
const DEFAULT_MAX_TOKENS: u32 = 32;

struct Generator {
    gpt2: Gpt2,
    tokenizer: Tokenizer,
    max_tokens: u32,
}

/// What one request asks for.
struct Settings {
    max_tokens: u32,
    decoding: Decoding,
    seed: u64,
    stops: Vec<String>,
    return_tokens: bool,
    return_logits: bool,
    return_finish_reason: bool,
    return_logprobs: bool,
}

/// Why a generation ended.
#[derive(Clone, Copy)]
enum Finish {
    /// The token budget or the context ran out.
    Length,
    /// A stop sequence.
    Stop,
    /// `<|endoftext|>`.
    EndOfText,
    /// The client hung up.
    Cancelled,
}

impl Finish {
    fn name(self) -> &'static str {
        match self {
            Finish::Length => "length",
            Finish::Stop => "stop",
            Finish::EndOfText => "eos",
            Finish::Cancelled => "cancelled",
        }
    }
}

/// One prompt's result.
struct Generation {
    prompt: Vec<u32>,
    generated: Vec<u32>,
    /// Natural-log probability of each generated token, when asked for.
    logprobs: Vec<f32>,
    text: String,
    finish: Finish,
    /// `[1, vocab]`, after the last prompt position.
    logits: Tensor,
}

impl Model for Generator {
    fn metadata() -> ModelMetadata {
        ModelMetadata {
            inputs: vec![TensorSpec::new("text", "BYTES", &[-1])],
            outputs: vec![
                TensorSpec::new("text", "BYTES", &[-1]),
                TensorSpec::new("prompt_tokens", "INT64", &[-1, -1]),
                TensorSpec::new("tokens", "INT64", &[-1, -1]),
                TensorSpec::new("logits", "FP32", &[-1, -1]),
                TensorSpec::new("finish_reason", "BYTES", &[-1]),
                TensorSpec::new("logprobs", "FP32", &[-1, -1]),
            ],
        }
    }

    fn init() -> Result<Self, String> {
        let tokenizer = Tokenizer::new(
            &model::asset_required("vocab.json")?,
            &model::asset_required("merges.txt")?,
        )?;
        let gpt2 = Gpt2::load(&model::asset_required("config.json")?)?;
        if tokenizer.vocab_size() > gpt2.vocab_size as usize {
            return Err(format!(
                "vocab.json has {} tokens but wte only {} rows",
                tokenizer.vocab_size(),
                gpt2.vocab_size
            ));
        }
        if gpt2.vocab_size > sampling::MAX_VOCAB {
            return Err(format!(
                "wte has {} rows, more than the {} token ids sampling reads exactly",
                gpt2.vocab_size,
                sampling::MAX_VOCAB
            ));
        }
        let max_tokens = model::parameter_in_range("max_tokens", DEFAULT_MAX_TOKENS, 0..)?;
        Ok(Generator {
            gpt2,
            tokenizer,
            max_tokens,
        })
    }

    fn infer(&self, request: Request) -> Result<Vec<Output>, InferError> {
        let settings = self.settings(&request)?;
        let prompts = request.bytes("text")?.strings()?;
        // Each prompt gets its own generator split off the request's seed, so
        // a prompt's text does not depend on the prompts before it.
        let mut seeds = SplitMix64::new(settings.seed);
        let mut generations = Vec::with_capacity(prompts.len());
        for (index, prompt) in prompts.iter().enumerate() {
            let generation = self.generate(prompt, index as u32, &settings, seeds.next_u64())?;
            let cancelled = matches!(generation.finish, Finish::Cancelled);
            generations.push(generation);
            if cancelled {
                // Nobody reads the rest: the host discards this answer.
                break;
            }
        }

        let n = generations.len() as u32;
        let texts = generations.iter().map(|g| g.text.as_str());
        let mut outputs = vec![Output::bytes("text", &[n], texts)];
        if settings.return_finish_reason {
            let reasons = generations.iter().map(|g| g.finish.name());
            outputs.push(Output::bytes("finish_reason", &[n], reasons));
        }
        if settings.return_logprobs {
            let rows: Vec<&[f32]> = generations.iter().map(|g| &g.logprobs[..]).collect();
            outputs.push(padded_f32("logprobs", &rows)?);
        }
        if settings.return_tokens {
            outputs.push(padded(
                "prompt_tokens",
                generations.iter().map(|g| &g.prompt[..]),
            )?);
            outputs.push(padded(
                "tokens",
                generations.iter().map(|g| &g.generated[..]),
            )?);
        }
        if settings.return_logits {
            let mut rows: Vec<Tensor> = generations.into_iter().map(|g| g.logits).collect();
            let logits = match rows.len() {
                0 => Tensor::full(Dtype::F32, &[0, self.gpt2.vocab_size], 0.0)?,
                1 => rows.remove(0),
                _ => Tensor::concat(&rows.iter().collect::<Vec<_>>(), 0)?,
            };
            outputs.push(Output::numeric("logits", logits));
        }
        Ok(outputs)
    }
}

impl Generator {
    fn settings(&self, request: &Request) -> Result<Settings, InferError> {
        let max_tokens = request
            .parameter_in_range("max_tokens", 0..)?
            .unwrap_or(self.max_tokens);
        let temperature: Option<f64> = request.parameter_in_range("temperature", 0.0..)?;
        let top_p: Option<f64> =
            request.parameter_in_range("top_p", (Bound::Excluded(0.0), Bound::Included(1.0)))?;
        let top_k: Option<u32> = request.parameter_in_range("top_k", 0..)?;
        let sampling = temperature.is_some() || top_k.is_some() || top_p.is_some();
        let temperature = temperature.unwrap_or(1.0);
        let decoding = if !sampling || temperature == 0.0 {
            Decoding::Greedy
        } else {
            Decoding::Sample {
                temperature,
                top_k: top_k.unwrap_or(0),
                top_p: top_p.unwrap_or(1.0),
            }
        };
        let seed = match request.parameter_as::<i64>("seed")? {
            Some(seed) => seed as u64,
            // The system's randomness (std seeds RandomState from it): a
            // different draw for every request that does not pin one.
            None => RandomState::new().hash_one(0u8),
        };
        // An optional output comes back when a parameter turns it on or the
        // client names it in `outputs`.
        let flag = |key: &str, output: &str| -> Result<bool, InferError> {
            Ok(request
                .parameter_as(key)?
                .unwrap_or_else(|| request.names_output(output)))
        };
        Ok(Settings {
            max_tokens,
            decoding,
            seed,
            stops: request
                .parameter_strings("stop")?
                .into_iter()
                .map(str::to_owned)
                .collect(),
            return_tokens: flag("return_tokens", "tokens")?,
            return_logits: flag("return_logits", "logits")?,
            return_finish_reason: flag("return_finish_reason", "finish_reason")?,
            return_logprobs: flag("return_logprobs", "logprobs")?,
        })
    }

    /// Generates the continuation of `text`, input element `index`,
    /// streaming it when the request is streamed.
    fn generate(
        &self,
        text: &str,
        index: u32,
        settings: &Settings,
        seed: u64,
    ) -> Result<Generation, InferError> {
        let prompt = self.tokenizer.encode(text);
        let context = self.gpt2.n_positions as usize;
        if prompt.len() > context {
            return Err(InferError::invalid_input(format!(
                "the prompt is {} tokens long; the model's context is {context}",
                prompt.len()
            )));
        }
        // GPT-2 cannot start from nothing: an empty prompt is conditioned on
        // <|endoftext|>, as GPT-2's unconditional samples are.
        let start = if prompt.is_empty() {
            vec![self.tokenizer.end_of_text()]
        } else {
            prompt.clone()
        };
        let budget = (settings.max_tokens as usize).min(context - start.len());
        let mut cache = self.gpt2.cache();
        let logits = self.gpt2.forward(&start, &mut cache)?;
        let mut out = Continuation {
            tokenizer: &self.tokenizer,
            stream: TextStream::new(index, settings.stops.clone()),
            generated: Vec::new(),
            logprobs: Vec::new(),
            bytes: Vec::new(),
        };
        // Greedy ids that nothing watches one by one (no stream, no stop
        // text, no log probabilities) are read back a chunk at a time.
        let unwatched = !output::streaming()
            && settings.stops.iter().all(String::is_empty)
            && !settings.return_logprobs;
        let model = (&logits, &mut cache);
        let finish = match settings.decoding {
            Decoding::Greedy if unwatched => self.greedy_chunks(model, budget, &mut out)?,
            _ => {
                let mut rng = SplitMix64::new(seed);
                self.token_by_token(model, budget, settings, &mut rng, &mut out)?
            }
        };
        Ok(Generation {
            prompt,
            generated: out.generated,
            logprobs: out.logprobs,
            text: out.stream.finish(),
            finish,
            logits,
        })
    }

    /// Decodes up to `budget` tokens after `logits`, reading each one back
    /// before the next forward pass: the stream, stop texts and log
    /// probabilities see every token as it comes. A greedy id still feeds
    /// the next pass as the argmax tensor, not uploaded again.
    fn token_by_token(
        &self,
        (logits, cache): (&Tensor, &mut KvCache),
        budget: usize,
        settings: &Settings,
        rng: &mut SplitMix64,
        out: &mut Continuation<'_>,
    ) -> Result<Finish, InferError> {
        let mut step: Option<Tensor> = None;
        while out.generated.len() < budget {
            let current = step.as_ref().unwrap_or(logits);
            let next = next_token(current, settings.decoding, rng, settings.return_logprobs)?;
            if next.id == self.tokenizer.end_of_text() {
                return Ok(Finish::EndOfText);
            }
            if let Some(finish) = out.push(next.id, next.logprob) {
                return Ok(finish);
            }
            if out.generated.len() < budget {
                step = Some(self.gpt2.forward_tokens(&next.tensor, cache)?);
            }
        }
        Ok(Finish::Length)
    }

    /// Greedy decoding of up to `budget` tokens after `logits` where
    /// nothing needs each token as it comes: every argmax feeds the next
    /// forward pass on the host, and the ids are read back a chunk at a
    /// time, so a GPU runs several passes per wait instead of one. Ids past
    /// an `<|endoftext|>` in a chunk are dropped: the text is the one
    /// token-by-token decoding gives, at the cost of the passes run past it
    /// (see [`chunk_after`]).
    fn greedy_chunks(
        &self,
        (logits, cache): (&Tensor, &mut KvCache),
        budget: usize,
        out: &mut Continuation<'_>,
    ) -> Result<Finish, InferError> {
        let mut step: Option<Tensor> = None;
        while out.generated.len() < budget {
            let done = out.generated.len();
            let size = chunk_after(done).min(budget - done);
            let mut ids = Vec::with_capacity(size);
            for i in 0..size {
                let id = step.as_ref().unwrap_or(logits).argmax(-1, false)?;
                // As token by token: no pass after the budget's last token.
                if done + i + 1 < budget {
                    step = Some(self.gpt2.forward_tokens(&id, cache)?);
                }
                ids.push(id);
            }
            let ids = match &ids[..] {
                [one] => one.to_i64_vec()?,
                many => Tensor::concat(&many.iter().collect::<Vec<_>>(), 0)?.to_i64_vec()?,
            };
            for id in ids {
                let next = id as u32;
                if next == self.tokenizer.end_of_text() {
                    return Ok(Finish::EndOfText);
                }
                if let Some(finish) = out.push(next, None) {
                    return Ok(finish);
                }
            }
        }
        Ok(Finish::Length)
    }
}

/// Most ids greedy decoding reads back at once (see
/// [`Generator::greedy_chunks`]).
const MAX_CHUNK: usize = 8;

/// Ids to read back at once after `done` tokens: 1, 2, 4, then
/// [`MAX_CHUNK`]. The passes run past an `<|endoftext|>` (at most one
/// chunk's less one) are thus never more than the tokens before the chunk,
/// and never more than `MAX_CHUNK - 1`: on the CPU, where a read-back costs
/// next to nothing, that is the price of a GPU's fewer waits, paid only by
/// texts that end at `<|endoftext|>`.
fn chunk_after(done: usize) -> usize {
    (done + 1).next_power_of_two().min(MAX_CHUNK)
}

/// The tokens generated for one prompt, as they are accepted.
struct Continuation<'a> {
    tokenizer: &'a Tokenizer,
    stream: TextStream,
    generated: Vec<u32>,
    logprobs: Vec<f32>,
    /// Scratch for one token's bytes.
    bytes: Vec<u8>,
}

impl Continuation<'_> {
    /// Accepts `next` (not `<|endoftext|>`): why generation ends here, if
    /// the stream says so.
    fn push(&mut self, next: u32, logprob: Option<f32>) -> Option<Finish> {
        self.generated.push(next);
        self.logprobs.extend(logprob);
        self.bytes.clear();
        self.tokenizer.push_bytes(next, &mut self.bytes);
        match self.stream.push(next, &self.bytes, logprob) {
            Flow::Continue => None,
            Flow::Stop => Some(Finish::Stop),
            Flow::Cancelled => Some(Finish::Cancelled),
        }
    }
}

/// Rows of ids as an INT64 `[rows, longest]` output, short rows padded with -1.
fn padded<'a>(
    name: &str,
    rows: impl Iterator<Item = &'a [u32]> + Clone,
) -> Result<Output, InferError> {
    let width = rows.clone().map(<[u32]>::len).max().unwrap_or(0);
    let mut data = Vec::new();
    let mut count = 0u32;
    for row in rows {
        data.extend(row.iter().map(|&id| i64::from(id)));
        data.extend(std::iter::repeat_n(-1, width - row.len()));
        count += 1;
    }
    let tensor = Tensor::from_i64(&[count, width as u32], &data)?;
    Ok(Output::numeric(name, tensor))
}

/// Rows of floats as an FP32 `[rows, longest]` output, short rows padded with 0.
fn padded_f32(name: &str, rows: &[&[f32]]) -> Result<Output, InferError> {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut data = Vec::with_capacity(rows.len() * width);
    for row in rows {
        data.extend_from_slice(row);
        data.extend(std::iter::repeat_n(0.0, width - row.len()));
    }
    let tensor = Tensor::from_f32(&[rows.len() as u32, width as u32], &data)?;
    Ok(Output::numeric(name, tensor))
}

export_model!(Generator);

//! Text generation on the typed infer path, shared by the OpenAI API and
//! the OIP generate extension.
//!
//! A [`GenerationRequest`] becomes an [`InferRequest`] for a model whose
//! `config.toml` says `task = "text-generation"` (input `text`, outputs
//! `text`, `finish_reason`, `prompt_tokens`, `tokens`, `logprobs`: what
//! plugins/gpt2 declares). It always runs with an output sink, so tokens
//! arrive as the model produces them, whether the protocol streams them or
//! gathers them into one answer; either way they are counted in the
//! generation metrics, and a client that hangs up (its route future, and
//! with it the [`Generation`], is dropped) stops the model at its next
//! token. Each prompt (each choice, when a client asks for several) is a
//! request of its own, so choices run side by side on the model's instances
//! ([`choices`](super::choices)).

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use edgeserve_tensor::DType;
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::task::JoinHandle;

use super::choices;
use super::error::ApiError;
use super::fields::{FieldError, Fields};
use super::infer::{InFlight, InferRequest, InferResponse, ModelRef};
use super::state::AppState;
use crate::metrics::{Metrics, ModelLabels};
use crate::registry::LoadedModel;
use crate::runtime::{Parameter, ParameterValue, TextChunk, Value};

/// The `task` of models that generate text.
pub const TEXT_GENERATION: &str = "text-generation";

/// The model's input (the prompts) and its outputs.
const TEXT: &str = "text";
const FINISH_REASON: &str = "finish_reason";
const PROMPT_TOKENS: &str = "prompt_tokens";
const TOKENS: &str = "tokens";
const LOGPROBS: &str = "logprobs";

/// Sampling and stopping options, as the handler's request parameters
/// name them.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Tokens to generate at most; the model's default when `None`.
    pub max_tokens: Option<u32>,
    /// Sampling temperature (0: greedy).
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// Top-k sampling (0: off).
    pub top_k: Option<u32>,
    /// The sampler's seed.
    pub seed: Option<i64>,
    /// Stop sequences: the text ends before the first one.
    pub stop: Vec<String>,
    /// Whether to return each token's log probability.
    pub logprobs: bool,
}

impl Options {
    /// Reads the sampling fields both generation protocols share, from a
    /// request body or its `parameters`. `max_tokens` is read by the caller
    /// (chat also takes `max_completion_tokens`); `temperature_max` is the
    /// protocol's upper bound (none: unbounded) and `max_stops` its limit
    /// on stop sequences.
    pub fn read(
        fields: &mut Fields,
        max_tokens: Option<i64>,
        temperature_max: Option<f64>,
        max_stops: usize,
    ) -> Result<Options, FieldError> {
        let range = match temperature_max {
            Some(max) => format!("0..={max}"),
            None => "[0, ∞)".to_owned(),
        };
        let below = |t: f64| temperature_max.is_none_or(|max| t <= max);
        Ok(Options {
            max_tokens: max_tokens.map(|n| n as u32),
            temperature: fields.number("temperature", &range, |t| t >= 0.0 && below(t))?,
            top_p: fields.number("top_p", "(0, 1]", |p| p > 0.0 && p <= 1.0)?,
            top_k: fields
                .integer("top_k", 0, u32::MAX.into())?
                .map(|k| k as u32),
            seed: fields.integer("seed", i64::MIN, i64::MAX)?,
            stop: fields.strings("stop", max_stops)?,
            logprobs: false,
        })
    }

    /// The options given, as request parameters.
    pub(super) fn parameters(&self) -> Vec<Parameter> {
        let integer = |n: u32| ParameterValue::Integer(n.into());
        let options = [
            ("max_tokens", self.max_tokens.map(integer)),
            ("temperature", self.temperature.map(ParameterValue::Double)),
            ("top_p", self.top_p.map(ParameterValue::Double)),
            ("top_k", self.top_k.map(integer)),
            ("seed", self.seed.map(ParameterValue::Integer)),
        ];
        let stops = self
            .stop
            .iter()
            .map(|s| ("stop", Some(ParameterValue::Text(s.clone()))));
        options
            .into_iter()
            .chain(stops)
            .filter_map(|(key, value)| Some((key.to_owned(), value?)))
            .collect()
    }

    /// The options of choice `index` of a request: the request's seed
    /// advanced by `index` steps of SplitMix64's increment, so each choice
    /// has a seed of its own, whichever instance runs it and in whatever
    /// order. A handler that splits its seed with SplitMix64 (gpt2 does)
    /// thus gives choice `index` exactly the text it gives element `index`
    /// of one batched request with the request's seed.
    pub(super) fn for_choice(&self, index: usize) -> Options {
        const SPLITMIX64_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let step = |seed: i64| {
            (seed as u64).wrapping_add(SPLITMIX64_GAMMA.wrapping_mul(index as u64)) as i64
        };
        Options {
            seed: self.seed.map(step),
            ..self.clone()
        }
    }

    /// The model request that continues `prompts`.
    pub(super) fn request(&self, prompts: Vec<String>) -> InferRequest {
        let mut outputs = vec![TEXT, FINISH_REASON, PROMPT_TOKENS, TOKENS];
        if self.logprobs {
            outputs.push(LOGPROBS);
        }
        InferRequest {
            inputs: vec![(
                TEXT.to_owned(),
                Value::Bytes {
                    shape: vec![prompts.len()],
                    elements: prompts.into_iter().map(String::into_bytes).collect(),
                },
            )],
            parameters: self.parameters(),
            outputs: Some(outputs.into_iter().map(str::to_owned).collect()),
        }
    }
}

/// Texts to continue, one generated text each.
#[derive(Clone, Debug)]
pub struct GenerationRequest {
    /// The prompts; a prompt repeated gives several samples of it.
    pub prompts: Vec<String>,
    /// How to generate.
    pub options: Options,
}

/// Why a text ended, as the handler reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The token budget or the context ran out.
    Length,
    /// A stop sequence.
    Stop,
    /// The model's end-of-text token.
    EndOfText,
}

/// One finished text.
#[derive(Clone, Debug)]
pub struct Completion {
    /// The continuation, without the prompt and any stop sequence.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Each generated token's natural-log probability, when asked for.
    pub logprobs: Vec<f32>,
}

/// What a running generation produced next.
pub enum Event {
    /// Tokens (and the text they completed) of one prompt.
    Chunk(TextChunk),
    /// The answer: one completion per prompt, in order.
    Done(Vec<Completion>),
}

/// A 400 unless `model` serves `task` (its `config.toml`'s `task`).
pub fn require_task(model: &LoadedModel, task: &str, route: &str) -> Result<(), ApiError> {
    match model.config.task.as_deref() {
        Some(t) if t == task => Ok(()),
        other => Err(ApiError::bad_request(format!(
            "model {} does not serve {route}: its task is {}, and {route} needs a model whose \
             config.toml says task = \"{task}\"",
            model.name,
            other.map_or("not declared".to_owned(), |t| format!("\"{t}\""))
        ))),
    }
}

/// A generation under way. Dropping it before [`Event::Done`] cancels it.
pub struct Generation {
    meter: TokenMeter,
    chunks: UnboundedReceiver<TextChunk>,
    task: Option<JoinHandle<Result<Vec<Completion>, ApiError>>>,
    api: &'static str,
}

impl Generation {
    /// Starts `request` on the text-generation model `model` names; `api`
    /// names the protocol in the request log. Fails at once when the model
    /// is unknown or does not generate text.
    pub fn start(
        app: &Arc<AppState>,
        model: &ModelRef,
        request: GenerationRequest,
        api: &'static str,
    ) -> Result<Generation, ApiError> {
        let loaded = app.registry.get(&model.name, model.version.as_deref())?;
        require_task(&loaded, TEXT_GENERATION, api)?;
        // As many choices at once as the model has free instances, so
        // choices never wait for instances that other requests hold.
        let lanes = loaded.pool.idle().max(1);
        let (sender, chunks) = mpsc::unbounded_channel();
        // The guard lives in the task: the gauge drops when the model is
        // done (the instances are back in their pool), not when the client is.
        let inflight = InFlight::enter(app);
        let task = {
            let (app, model) = (app.clone(), model.clone());
            tokio::spawn(async move {
                let _inflight = inflight;
                choices::run(&app, &model, request, lanes, sender).await
            })
        };
        Ok(Generation {
            meter: TokenMeter::start(&app.metrics, loaded.labels.clone()),
            chunks,
            task: Some(task),
            api,
        })
    }

    /// The version of the model running it.
    pub fn model_version(&self) -> &str {
        &self.meter.labels.version
    }

    /// The next event; `None` after [`Event::Done`] or an error.
    pub async fn next(&mut self) -> Option<Result<Event, ApiError>> {
        if let Some(chunk) = self.chunks.recv().await {
            self.meter.observe(&chunk);
            return Some(Ok(Event::Chunk(chunk)));
        }
        // The task dropped its sender: every choice is done, the answer is next.
        let task = self.task.take()?;
        let result = match task.await {
            Ok(result) => result,
            Err(e) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the generation task failed: {e}"),
            )),
        };
        self.log(result.as_ref().ok());
        Some(result.map(Event::Done))
    }

    /// Runs to the end and returns the completions (the chunks only count).
    pub async fn finish(mut self) -> Result<Vec<Completion>, ApiError> {
        while let Some(event) = self.next().await {
            if let Event::Done(completions) = event? {
                return Ok(completions);
            }
        }
        unreachable!("a generation ends with its answer or an error")
    }

    /// The request log line, with its token counts.
    fn log(&self, completions: Option<&Vec<Completion>>) {
        let Some(completions) = completions else {
            return;
        };
        let prompt_tokens: u32 = completions.iter().map(|c| c.prompt_tokens).sum();
        let completion_tokens: u32 = completions.iter().map(|c| c.completion_tokens).sum();
        let labels = &self.meter.labels;
        tracing::info!(
            target: "edgeserve::request",
            api = self.api,
            model = %labels.model,
            version = %labels.version,
            prompt_tokens,
            completion_tokens,
            ms = self.meter.started.elapsed().as_millis() as u64,
            "generation done"
        );
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        if self.task.is_some() {
            // Dropped before its answer: the client went away. The model
            // stops at its next token, since the chunk receiver is gone.
            let meter = &self.meter;
            meter
                .metrics
                .cancelled_streams
                .get_or_create(&meter.labels)
                .inc();
            tracing::info!(
                target: "edgeserve::request",
                api = self.api,
                model = %meter.labels.model,
                version = %meter.labels.version,
                completion_tokens = meter.generated,
                ms = meter.started.elapsed().as_millis() as u64,
                "generation cancelled by the client"
            );
        }
    }
}

/// Counts one generation's tokens in the generation metrics as they
/// arrive: time to the first, time per later one, and how many.
pub struct TokenMeter {
    metrics: Arc<Metrics>,
    labels: ModelLabels,
    started: Instant,
    last_token: Option<Instant>,
    generated: u64,
}

impl TokenMeter {
    /// A meter for a generation of the model `labels` name, starting now.
    pub fn start(metrics: &Arc<Metrics>, labels: ModelLabels) -> TokenMeter {
        TokenMeter {
            metrics: metrics.clone(),
            labels,
            started: Instant::now(),
            last_token: None,
            generated: 0,
        }
    }

    /// Counts a chunk's tokens.
    pub fn observe(&mut self, chunk: &TextChunk) {
        let tokens = chunk.tokens.len() as u64;
        if tokens == 0 {
            return;
        }
        let now = Instant::now();
        match self.last_token {
            None => self
                .metrics
                .time_to_first_token_seconds
                .get_or_create(&self.labels)
                .observe((now - self.started).as_secs_f64()),
            Some(last) => {
                let per_token = (now - last).as_secs_f64() / tokens as f64;
                let histogram = self
                    .metrics
                    .time_per_output_token_seconds
                    .get_or_create(&self.labels);
                for _ in 0..tokens {
                    histogram.observe(per_token);
                }
            }
        }
        self.last_token = Some(now);
        self.generated += tokens;
        self.metrics
            .generated_tokens
            .get_or_create(&self.labels)
            .inc_by(tokens);
    }
}

/// The completions in a text-generation model's answer.
pub(super) fn completions(response: &InferResponse) -> Result<Vec<Completion>, ApiError> {
    let model = &response.model.name;
    let bad = |what: String| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("model {model} answered a generation request without {what}"),
        )
    };
    let output = |name: &str| {
        response
            .output(name)
            .ok_or_else(|| bad(format!("its `{name}` output")))
    };
    let texts = strings(output(TEXT)?).ok_or_else(|| bad("a BYTES `text`".into()))?;
    let reasons =
        strings(output(FINISH_REASON)?).ok_or_else(|| bad("a BYTES `finish_reason`".into()))?;
    let prompt_tokens = row_lengths(output(PROMPT_TOKENS)?)
        .ok_or_else(|| bad("an INT64 `prompt_tokens`".into()))?;
    let tokens = row_lengths(output(TOKENS)?).ok_or_else(|| bad("an INT64 `tokens`".into()))?;
    let logprobs = match response.outputs.iter().find(|(n, _)| n == LOGPROBS) {
        Some((_, value)) => float_rows(value).ok_or_else(|| bad("an FP32 `logprobs`".into()))?,
        None => Vec::new(),
    };
    let n = texts.len();
    if reasons.len() != n || prompt_tokens.len() != n || tokens.len() != n {
        return Err(bad(format!(
            "one entry per prompt in every output ({n} texts)"
        )));
    }
    (0..n)
        .map(|i| {
            let finish_reason = match reasons[i].as_str() {
                "length" => FinishReason::Length,
                "stop" => FinishReason::Stop,
                "eos" => FinishReason::EndOfText,
                other => return Err(bad(format!("a known finish reason (got {other:?})"))),
            };
            let completion_tokens = tokens[i];
            let logprobs = logprobs
                .get(i)
                .map(|row| row[..(completion_tokens as usize).min(row.len())].to_vec())
                .unwrap_or_default();
            Ok(Completion {
                text: texts[i].clone(),
                finish_reason,
                prompt_tokens: prompt_tokens[i],
                completion_tokens,
                logprobs,
            })
        })
        .collect()
}

/// A BYTES value's elements as text.
pub(super) fn strings(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Bytes { elements, .. } => Some(
            elements
                .iter()
                .map(|e| String::from_utf8_lossy(e).into_owned())
                .collect(),
        ),
        Value::Numeric(_) => None,
    }
}

/// The real lengths of the rows of an INT64 `[n, width]` value padded with -1.
pub(super) fn row_lengths(value: &Value) -> Option<Vec<u32>> {
    let rows = matrix_rows::<i64>(value, DType::I64)?;
    Some(
        rows.iter()
            .map(|row| row.iter().filter(|&&id| id >= 0).count() as u32)
            .collect(),
    )
}

/// The rows of an FP32 `[n, width]` value.
fn float_rows(value: &Value) -> Option<Vec<Vec<f32>>> {
    matrix_rows(value, DType::F32)
}

/// The rows of a `[n, width]` value of `dtype`, read as `T`.
fn matrix_rows<T: bytemuck::Pod>(value: &Value, dtype: DType) -> Option<Vec<Vec<T>>> {
    let Value::Numeric(tensor) = value else {
        return None;
    };
    let &[rows, width] = tensor.shape() else {
        return None;
    };
    if tensor.dtype() != dtype {
        return None;
    }
    let data: Vec<T> = bytemuck::pod_collect_to_vec(tensor.host()?.bytes());
    if width == 0 {
        return Some(vec![Vec::new(); rows]);
    }
    Some(data.chunks(width).map(<[T]>::to_vec).collect())
}

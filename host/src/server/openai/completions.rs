//! `POST /v1/completions` and `POST /v1/chat/completions`: text generation
//! in OpenAI's shapes, whole or streamed as `text_completion` /
//! `chat.completion.chunk` events ending with `data: [DONE]`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::OpenAiError;
use super::template::{Message, Template};
use super::{Received, receive, response_id, unix_time};
use crate::runtime::TextChunk;
use crate::server::error::ApiError;
use crate::server::fields::{FieldError, Fields, empty_field, texts, wrong};
use crate::server::generation::{
    self, Completion, FinishReason, Generation, GenerationRequest, Options, TEXT_GENERATION,
};
use crate::server::infer::ModelRef;
use crate::server::sse::{self, StreamCodec};
use crate::server::state::AppState;

/// The most samples one request may ask for (`n`).
const MAX_N: i64 = 16;
/// The most stop sequences, as OpenAI allows.
const MAX_STOPS: usize = 4;

/// The two endpoints differ in how the prompt comes and choices look.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Completions,
    Chat,
}

impl Endpoint {
    fn route(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

/// `POST /v1/completions`.
pub async fn completions(
    State(app): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, OpenAiError> {
    run(&app, request, Endpoint::Completions).await
}

/// `POST /v1/chat/completions`.
pub async fn chat(
    State(app): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, OpenAiError> {
    run(&app, request, Endpoint::Chat).await
}

async fn run(
    app: &Arc<AppState>,
    request: Request,
    endpoint: Endpoint,
) -> Result<Response, OpenAiError> {
    let (name, mut fields) = match receive(app, request).await? {
        Received::Here { model, fields } => (model, fields),
        Received::Relayed(response) => return Ok(response),
    };
    let model = ModelRef {
        name: name.clone(),
        version: None,
    };
    let (prompts, mut stops) = match endpoint {
        Endpoint::Completions => (
            texts(
                "prompt",
                fields.required("prompt")?,
                "give the text to continue",
            )?,
            Vec::new(),
        ),
        Endpoint::Chat => {
            let messages = messages(&mut fields)?;
            let loaded = app
                .registry
                .get(&name, None)
                .map_err(|e| OpenAiError::from(ApiError::from(e)))?;
            generation::require_task(&loaded, TEXT_GENERATION, endpoint.route())?;
            let template =
                Template::named(loaded.config.chat_template.as_deref()).map_err(|e| {
                    ApiError::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        format!("model {name}: {e}"),
                    )
                })?;
            let stops = template.stops().iter().map(|s| s.to_string()).collect();
            (vec![template.render(&messages)], stops)
        }
    };
    let sampling = sampling(&mut fields, endpoint)?;
    fields.finish()?;
    let n = sampling.n;
    let mut options = sampling.options;
    stops.append(&mut options.stop);
    options.stop = stops;
    // Choice i * n + j is sample j of prompt i, as OpenAI numbers them.
    let prompts = prompts
        .into_iter()
        .flat_map(|p| std::iter::repeat_n(p, n as usize))
        .collect();
    let generation = Generation::start(
        app,
        &model,
        GenerationRequest { prompts, options },
        endpoint.route(),
    )?;
    let reply = Reply {
        endpoint,
        id: response_id(match endpoint {
            Endpoint::Completions => "cmpl",
            Endpoint::Chat => "chatcmpl",
        }),
        created: unix_time(),
        model: name,
        n,
    };
    if sampling.stream {
        let codec = Chunks {
            reply,
            include_usage: sampling.include_usage,
            started: Vec::new(),
        };
        return Ok(sse::stream(generation, codec).await?);
    }
    let completions = generation.finish().await?;
    Ok(Json(reply.whole(&completions)).into_response())
}

/// `messages`: a non-empty list of `{role, content}`.
fn messages(fields: &mut Fields) -> Result<Vec<Message>, FieldError> {
    let list = match fields.required("messages")? {
        Value::Array(list) if !list.is_empty() => list,
        Value::Array(_) => return Err(empty_field("messages", "give at least one message")),
        other => return Err(wrong("messages", "a list of messages", &other)),
    };
    list.into_iter().map(message).collect()
}

fn message(value: Value) -> Result<Message, FieldError> {
    let mut fields = Fields::of(value, "a message", Some("messages"))?;
    let role = fields.string("role")?.unwrap_or_default();
    if !["system", "developer", "user", "assistant"].contains(&role.as_str()) {
        return Err(FieldError::new(
            "messages",
            format!(
                "a message's `role` must be system, developer, user or assistant, got {role:?}"
            ),
        ));
    }
    let content = match fields.take("content") {
        None => String::new(),
        Some(Value::String(s)) => s,
        // Content parts: text parts only.
        Some(Value::Array(parts)) => parts
            .into_iter()
            .map(|part| match part.get("text").and_then(Value::as_str) {
                Some(text) if part.get("type") == Some(&json!("text")) => Ok(text.to_owned()),
                _ => Err(wrong("messages", "text content parts", &part)),
            })
            .collect::<Result<Vec<_>, _>>()?
            .concat(),
        Some(other) => return Err(wrong("messages", "text content", &other)),
    };
    fields.ignore(&["name"]);
    fields.finish()?;
    Ok(Message { role, content })
}

/// What both endpoints read besides the prompt.
struct Sampling {
    options: Options,
    n: u32,
    stream: bool,
    include_usage: bool,
}

fn sampling(fields: &mut Fields, endpoint: Endpoint) -> Result<Sampling, FieldError> {
    let mut max_tokens = fields.integer("max_tokens", 0, u32::MAX.into())?;
    if endpoint == Endpoint::Chat {
        max_tokens = max_tokens.or(fields.integer("max_completion_tokens", 0, u32::MAX.into())?);
    }
    let options = Options::read(fields, max_tokens, Some(2.0), MAX_STOPS)?;
    let n = fields.integer("n", 1, MAX_N)?.unwrap_or(1) as u32;
    let stream = fields.boolean("stream")?.unwrap_or(false);
    let include_usage = match fields.take("stream_options") {
        None => false,
        Some(value) => {
            let mut inner = Fields::of(value, "stream_options", Some("stream_options"))?;
            let include = inner.boolean("include_usage")?.unwrap_or(false);
            inner.finish()?;
            include
        }
    };
    // Accepted at their neutral values, which is what clients send.
    for key in ["presence_penalty", "frequency_penalty"] {
        fields.number(key, "0..=0 (penalties are not supported)", |x| x == 0.0)?;
    }
    fields.off("logit_bias", "empty (logit bias is not supported)", |v| {
        v.as_object().is_some_and(|m| m.is_empty())
    })?;
    let unset = |v: &Value| *v == json!(false);
    fields.off(
        "logprobs",
        "false (the generate extension returns log probabilities with `details`)",
        unset,
    )?;
    if endpoint == Endpoint::Completions {
        fields.off("best_of", "equal to `n` (best-of is not supported)", |v| {
            *v == json!(n)
        })?;
        for key in ["echo", "suffix"] {
            fields.off(key, "unset (it is not supported)", unset)?;
        }
    }
    fields.ignore(&["user"]);
    Ok(Sampling {
        options,
        n,
        stream,
        include_usage,
    })
}

/// What every answer of one request shares.
struct Reply {
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
    n: u32,
}

impl Reply {
    /// The envelope of an answer or a chunk.
    fn envelope(&self, chunk: bool, choices: Vec<Value>) -> Value {
        let object = match (self.endpoint, chunk) {
            (Endpoint::Completions, _) => "text_completion",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
        };
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The whole answer.
    fn whole(&self, completions: &[Completion]) -> Value {
        let choices = completions
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let mut choice = match self.endpoint {
                    Endpoint::Completions => json!({"text": c.text}),
                    Endpoint::Chat => {
                        json!({"message": {"role": "assistant", "content": c.text}})
                    }
                };
                choice["index"] = json!(index);
                choice["logprobs"] = Value::Null;
                choice["finish_reason"] = json!(finish_reason(c.finish_reason));
                choice
            })
            .collect();
        let mut body = self.envelope(false, choices);
        body["usage"] = self.usage(completions);
        body
    }

    /// Token counts; each prompt counts once however many samples it had.
    fn usage(&self, completions: &[Completion]) -> Value {
        let prompt: u32 = completions
            .iter()
            .step_by(self.n.max(1) as usize)
            .map(|c| c.prompt_tokens)
            .sum();
        let completion: u32 = completions.iter().map(|c| c.completion_tokens).sum();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        })
    }
}

/// OpenAI's `finish_reason`: it has no separate end-of-text reason.
fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::EndOfText => "stop",
    }
}

/// The streamed answer: one chunk per piece of text, a last chunk per
/// choice with its `finish_reason`, the usage when asked, then `[DONE]`.
struct Chunks {
    reply: Reply,
    include_usage: bool,
    /// Choices that have had their first chunk (chat sends the role then).
    started: Vec<bool>,
}

impl Chunks {
    fn event(&self, choice: Value) -> SseEvent {
        let mut chunk = self.reply.envelope(true, vec![choice]);
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        SseEvent::default().data(chunk.to_string())
    }

    /// A choice of a chunk: `text` (completions) or `delta` (chat).
    fn choice(&mut self, index: usize, text: &str, finish: Option<FinishReason>) -> Value {
        if self.started.len() <= index {
            self.started.resize(index + 1, false);
        }
        let first = !std::mem::replace(&mut self.started[index], true);
        let mut choice = match self.reply.endpoint {
            Endpoint::Completions => json!({"text": text}),
            Endpoint::Chat if finish.is_some() && text.is_empty() && !first => {
                json!({"delta": {}})
            }
            Endpoint::Chat if first => json!({"delta": {"role": "assistant", "content": text}}),
            Endpoint::Chat => json!({"delta": {"content": text}}),
        };
        choice["index"] = json!(index);
        choice["logprobs"] = Value::Null;
        choice["finish_reason"] = json!(finish.map(finish_reason));
        choice
    }
}

impl StreamCodec for Chunks {
    fn chunk(&mut self, chunk: TextChunk) -> Vec<SseEvent> {
        if chunk.text.is_empty() {
            // Tokens that completed no text yet: nothing to show.
            return Vec::new();
        }
        let choice = self.choice(chunk.index as usize, &chunk.text, None);
        vec![self.event(choice)]
    }

    fn done(&mut self, completions: Vec<Completion>) -> Vec<SseEvent> {
        let mut events: Vec<SseEvent> = Vec::new();
        for (index, completion) in completions.iter().enumerate() {
            let choice = self.choice(index, "", Some(completion.finish_reason));
            events.push(self.event(choice));
        }
        if self.include_usage {
            let mut last = self.reply.envelope(true, Vec::new());
            last["usage"] = self.reply.usage(&completions);
            events.push(SseEvent::default().data(last.to_string()));
        }
        events.push(SseEvent::default().data("[DONE]"));
        events
    }

    fn error(&mut self, error: ApiError) -> SseEvent {
        SseEvent::default().data(OpenAiError::from(error).body().to_string())
    }
}

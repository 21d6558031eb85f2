//! The choices of one generation, side by side on the model's instances.
//!
//! Each prompt of a [`GenerationRequest`] (a prompt repeated `n` times is
//! `n` choices) is a model request of its own with its own seed
//! ([`Options::for_choice`]), so choices can run at once on separate
//! instances. They run in as many lanes as the model has free instances
//! when the request starts; a lane runs its choices one after another, so a
//! request asking for more choices than there are free instances takes
//! turns on the ones it has instead of queueing for the others (and timing
//! out behind other requests' work).

use std::sync::Arc;

use axum::http::StatusCode;
use futures::future::try_join_all;
use tokio::sync::mpsc::UnboundedSender;

use super::error::ApiError;
use super::generation::{Completion, GenerationRequest, Options, completions};
use super::infer::{self, ModelRef};
use super::state::AppState;
use crate::runtime::{OutputSink, TextChunk};

/// Runs every choice of `request` in at most `lanes` lanes; their chunks go
/// to `sender`, numbered by choice. Stops starting choices once `sender`'s
/// receiver is gone (the client hung up).
pub async fn run(
    app: &Arc<AppState>,
    model: &ModelRef,
    request: GenerationRequest,
    lanes: usize,
    sender: UnboundedSender<TextChunk>,
) -> Result<Vec<Completion>, ApiError> {
    let GenerationRequest { prompts, options } = request;
    let count = prompts.len();
    let lanes = lanes.clamp(1, count.max(1));
    let lane = |first: usize| {
        let (prompts, options, sender) = (&prompts, &options, &sender);
        async move {
            let mut done = Vec::new();
            for index in (first..count).step_by(lanes) {
                if sender.is_closed() {
                    break;
                }
                let options = options.for_choice(index);
                let completion =
                    choice(app, model, &prompts[index], &options, index, sender).await?;
                done.push((index, completion));
            }
            Ok::<_, ApiError>(done)
        }
    };
    let mut completions: Vec<Option<Completion>> = vec![None; count];
    for (index, completion) in try_join_all((0..lanes).map(lane))
        .await?
        .into_iter()
        .flatten()
    {
        completions[index] = Some(completion);
    }
    completions
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the client went away before every choice was generated",
            )
        })
}

/// Runs choice `index`, sending its chunks on as they come.
async fn choice(
    app: &Arc<AppState>,
    model: &ModelRef,
    prompt: &str,
    options: &Options,
    index: usize,
    sender: &UnboundedSender<TextChunk>,
) -> Result<Completion, ApiError> {
    let request = options.request(vec![prompt.to_owned()]);
    let (sink, mut chunks) = OutputSink::channel();
    // When the client is gone, this ends and drops `chunks`: the handler
    // stops at its next token.
    let relay = async move {
        while let Some(mut chunk) = chunks.recv().await {
            chunk.index = index as u32;
            if sender.send(chunk).is_err() {
                break;
            }
        }
    };
    let (response, ()) = tokio::join!(infer::infer_streaming(app, model, request, sink), relay);
    let response = response?;
    completions(&response)?.pop().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("model {} answered a prompt with no text", model.name),
        )
    })
}

//! A running generation as Server-Sent Events, one `data:` line per event.
//!
//! Each protocol says what its events look like ([`StreamCodec`]); this
//! module drives the generation. The first event is awaited before the
//! response starts, so a request that fails before producing anything
//! (unknown model, bad input, busy) gets a plain HTTP error with its status.
//! When the client hangs up, the response body, and with it the
//! generation, is dropped: the model stops at its next token.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::generation::{Completion, Event, Generation};
use crate::runtime::TextChunk;

/// What a protocol sends for each step of a generation.
pub trait StreamCodec: Send + 'static {
    /// Events for a chunk of one text.
    fn chunk(&mut self, chunk: TextChunk) -> Vec<SseEvent>;
    /// Events that end the stream, given the finished texts.
    fn done(&mut self, completions: Vec<Completion>) -> Vec<SseEvent>;
    /// The event that reports a failure after the stream began; it ends
    /// the stream.
    fn error(&mut self, error: ApiError) -> SseEvent;
}

/// Streams `generation` through `codec`, or answers its first failure.
pub async fn stream<C: StreamCodec>(
    mut generation: Generation,
    mut codec: C,
) -> Result<Response, ApiError> {
    let mut queue = VecDeque::new();
    let ended = match generation.next().await {
        Some(Ok(event)) => step(&mut codec, event, &mut queue),
        Some(Err(error)) => return Err(error),
        None => true,
    };
    let state = (generation, codec, queue, ended);
    let events = futures::stream::unfold(state, |mut state| async move {
        let (generation, codec, queue, ended) = &mut state;
        loop {
            if let Some(event) = queue.pop_front() {
                return Some((Ok::<_, Infallible>(event), state));
            }
            if *ended {
                return None;
            }
            *ended = match generation.next().await {
                Some(Ok(event)) => step(codec, event, queue),
                Some(Err(error)) => {
                    queue.push_back(codec.error(error));
                    true
                }
                None => true,
            };
        }
    });
    Ok(Sse::new(events).into_response())
}

/// Queues the events for `event`; true when it was the last.
fn step<C: StreamCodec>(codec: &mut C, event: Event, queue: &mut VecDeque<SseEvent>) -> bool {
    match event {
        Event::Chunk(chunk) => {
            queue.extend(codec.chunk(chunk));
            false
        }
        Event::Done(completions) => {
            queue.extend(codec.done(completions));
            true
        }
    }
}

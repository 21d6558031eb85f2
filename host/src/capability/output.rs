//! The contract's `output` interface: the chunks a handler sends while a
//! request runs go to the protocol that streams them, and a hung-up client
//! tells the handler to stop at its next chunk.

use tokio::sync::mpsc;

use crate::runtime::bindings::{OutputHost, TextChunk};
use crate::runtime::state::InstanceState;

/// Where one streamed request's chunks go. Unbounded on purpose: a handler
/// must never block on a slow reader (its deadline keeps running), and one
/// request sends at most one small chunk per generated token.
pub struct OutputSink(mpsc::UnboundedSender<TextChunk>);

impl OutputSink {
    /// A sink and the receiver its chunks arrive on. Dropping the receiver
    /// is how a protocol cancels the request; the receiver ends once the
    /// handler has returned.
    pub fn channel() -> (OutputSink, mpsc::UnboundedReceiver<TextChunk>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (OutputSink(sender), receiver)
    }
}

impl OutputHost for InstanceState {
    fn streaming(&mut self) -> wasmtime::Result<bool> {
        Ok(self.output.is_some())
    }

    fn send(&mut self, chunk: TextChunk) -> wasmtime::Result<bool> {
        Ok(match &self.output {
            // Not streamed: the handler returns its text whole.
            None => true,
            Some(OutputSink(sender)) => sender.send(chunk).is_ok(),
        })
    }
}

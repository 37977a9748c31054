//! Model backends: one interface, streaming first.
//!
//! A [`Backend`] takes a chat request and returns a [`Generation`]: a stream of text pieces
//! ending in exact usage and a finish reason. Dropping the generation (or cancelling it) stops
//! the work and frees its slot.

pub mod llama;
pub mod openai;
#[cfg(feature = "test-utils")]
pub mod scripted;
mod text;

pub use text::StreamText;

use lloom_core::{ChatMessage, FinishReason, SamplingParams};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Sampling parameters (temperature 0 is greedy).
    pub sampling: SamplingParams,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Longest prompt accepted, in tokens after the chat template (`None`: only the context
    /// bounds it). A longer prompt fails before any work is done.
    pub max_input_tokens: Option<u64>,
    /// Who asked: backends that queue serve clients in turn (`None`: one shared lane).
    pub client: Option<lloom_core::Address>,
}

/// Exact usage of a finished generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens (after the chat template).
    pub input_tokens: u64,
    /// Generated tokens (the end-of-generation token is not counted).
    pub output_tokens: u64,
    /// Why it ended.
    pub finish: FinishReason,
}

/// One event of a generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenerationEvent {
    /// The prompt was admitted: its exact size. Comes first, once.
    Started {
        /// Prompt tokens (after the chat template).
        input_tokens: u64,
    },
    /// More text, in order.
    Text {
        /// The new text.
        text: String,
        /// Output tokens generated so far (cumulative), including this text's. At most the
        /// stop-sequence holdback (a few tokens) may be generated and not yet in the text.
        tokens: u64,
    },
    /// The end: exact usage. Nothing follows.
    Done(Usage),
    /// The backend failed; nothing follows.
    Failed(String),
    /// The request cannot be served as asked, here or on any executor (its answer's grammar
    /// does not load), found before any work; nothing follows.
    Refused(String),
    /// The prompt plus `max_tokens` do not fit the model's context here (or the request's
    /// `max_input_tokens`), found before any work; nothing follows. A shorter prompt, or an
    /// executor with a longer context, may serve it.
    ContextExceeded(String),
}

/// A running generation. Holds at most `max_tokens + 1` events, so its channel is bounded by
/// the request itself. Dropping it cancels the work.
#[derive(Debug)]
pub struct Generation {
    /// The events.
    pub events: mpsc::UnboundedReceiver<GenerationEvent>,
    pub(crate) cancel: CancellationToken,
}

impl Generation {
    /// Stops the generation; a final `Done` with `Cancelled` follows.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Collects the whole text and the usage (for tests and non-streaming callers).
    pub async fn collect(mut self) -> std::result::Result<(String, Usage), String> {
        let mut text = String::new();
        while let Some(event) = self.events.recv().await {
            match event {
                GenerationEvent::Started { .. } => {}
                GenerationEvent::Text { text: t, .. } => text.push_str(&t),
                GenerationEvent::Done(usage) => return Ok((text, usage)),
                GenerationEvent::Failed(e)
                | GenerationEvent::Refused(e)
                | GenerationEvent::ContextExceeded(e) => return Err(e),
            }
        }
        Err("generation ended without a result".into())
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A source of generated text.
pub trait Backend: Send + Sync {
    /// The models this backend serves.
    fn models(&self) -> Vec<String>;
    /// Whether the backend can serve requests now; the executor offers only models whose
    /// backend is healthy.
    fn health(&self) -> Result<()>;
    /// The context length, in tokens, the backend gives one request now, where it can change
    /// while serving (an HTTP server that reloads its model with another context); `None`:
    /// the offer's, fixed when the model was loaded.
    fn context_length(&self) -> Option<u32> {
        None
    }
    /// Starts generating; fails at once if the request can never be served or the backend is
    /// full.
    fn generate(&self, request: GenerateRequest) -> Result<Generation>;
}

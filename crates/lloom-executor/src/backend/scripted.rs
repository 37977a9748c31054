//! A scripted backend for tests and benchmarks (feature `test-utils`): it "generates" a fixed
//! list of pieces, one token each, optionally with a delay per token, a failure, or a full
//! queue. Never used by the binaries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lloom_core::FinishReason;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Backend, GenerateRequest, Generation, GenerationEvent, Usage};
use crate::error::{Error, Result};

/// What the scripted backend does.
#[derive(Clone, Debug)]
pub struct Script {
    /// The model name it serves.
    pub model: String,
    /// Pieces of text, one token each.
    pub pieces: Vec<String>,
    /// Prompt tokens reported.
    pub input_tokens: u64,
    /// Pause before each token.
    pub delay: Duration,
    /// Fail (as a backend error) after this many tokens.
    pub fail_after: Option<usize>,
    /// Fail (as a backend error, before any token) the first this many generations.
    pub fail_first: usize,
    /// Most generations running at once; more are refused as Busy.
    pub capacity: usize,
    /// The context, in tokens: a request whose prompt (one token a word of its messages)
    /// plus `max_tokens` is longer ends at once with
    /// [`ContextExceeded`](GenerationEvent::ContextExceeded). `None`: any length fits.
    pub context: Option<u64>,
}

impl Script {
    /// Answers `text` split on spaces (each word one token), instantly.
    pub fn answer(model: &str, text: &str) -> Self {
        let mut pieces: Vec<String> = Vec::new();
        for (i, word) in text.split(' ').enumerate() {
            pieces.push(if i == 0 { word.to_owned() } else { format!(" {word}") });
        }
        Self {
            model: model.to_owned(),
            pieces,
            input_tokens: 10,
            delay: Duration::ZERO,
            fail_after: None,
            fail_first: 0,
            capacity: usize::MAX,
            context: None,
        }
    }
}

/// The scripted backend.
#[derive(Debug)]
pub struct ScriptedBackend {
    script: Script,
    running: Arc<AtomicUsize>,
    /// Generations started so far.
    started: AtomicUsize,
    /// Generations that ended by cancellation (for tests that check the slot is freed).
    pub cancelled: Arc<AtomicUsize>,
}

impl ScriptedBackend {
    /// A backend following `script`.
    pub fn new(script: Script) -> Self {
        Self {
            script,
            running: Arc::default(),
            started: AtomicUsize::new(0),
            cancelled: Arc::default(),
        }
    }

    /// Generations running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
}

struct RunningGuard(Arc<AtomicUsize>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Backend for ScriptedBackend {
    fn models(&self) -> Vec<String> {
        vec![self.script.model.clone()]
    }

    fn health(&self) -> Result<()> {
        Ok(())
    }

    fn generate(&self, request: GenerateRequest) -> Result<Generation> {
        if self.running.fetch_add(1, Ordering::SeqCst) >= self.script.capacity {
            self.running.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Busy("the scripted backend is full".into()));
        }
        let guard = RunningGuard(self.running.clone());
        let fails = self.started.fetch_add(1, Ordering::SeqCst) < self.script.fail_first;
        let (tx, events) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let (script, token, cancelled) =
            (self.script.clone(), cancel.clone(), self.cancelled.clone());
        let words: usize =
            request.messages.iter().map(|m| m.content.split_whitespace().count()).sum();
        let needed = words as u64 + u64::from(request.max_tokens);
        tokio::spawn(async move {
            let _guard = guard;
            if fails {
                let _ = tx.send(GenerationEvent::Failed("scripted failure".into()));
                return;
            }
            if let Some(context) = script.context.filter(|context| needed > *context) {
                let message = format!(
                    "prompt of {words} tokens plus max_tokens {} exceeds the {context} tokens of context",
                    request.max_tokens
                );
                let _ = tx.send(GenerationEvent::ContextExceeded(message));
                return;
            }
            let _ = tx.send(GenerationEvent::Started { input_tokens: script.input_tokens });
            let mut produced = 0u64;
            let mut finish = FinishReason::Stop;
            for (i, piece) in script.pieces.iter().enumerate() {
                if script.fail_after == Some(i) {
                    let _ = tx.send(GenerationEvent::Failed("scripted failure".into()));
                    return;
                }
                if produced >= u64::from(request.max_tokens) {
                    finish = FinishReason::Length;
                    break;
                }
                if !script.delay.is_zero() {
                    tokio::select! {
                        () = token.cancelled() => {}
                        () = tokio::time::sleep(script.delay) => {}
                    }
                }
                if token.is_cancelled() || tx.is_closed() {
                    cancelled.fetch_add(1, Ordering::SeqCst);
                    finish = FinishReason::Cancelled;
                    break;
                }
                produced += 1;
                let _ = tx.send(GenerationEvent::Text { text: piece.clone(), tokens: produced });
            }
            let usage =
                Usage { input_tokens: script.input_tokens, output_tokens: produced, finish };
            let _ = tx.send(GenerationEvent::Done(usage));
        });
        Ok(Generation { events, cancel })
    }
}

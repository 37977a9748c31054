//! What a chat asks ([`ChatRequest`]) and what it answers: the streamed [`ChatEvent`]s of a
//! [`ChatStream`], ending in a verified [`Receipt`].

use std::sync::Arc;
use std::time::Duration;

use lloom_core::{
    Address, ChatMessage, FinishReason, PeerId, Role, SamplingParams, SignedRequest,
    SignedResponse, U256,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::attempt::AttemptFailure;
use crate::chat_cost::ChatCost;
use crate::error::{Error, Result};
use crate::routing::{RouteFilter, Strategy};

/// What to ask.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    /// The model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Sampling parameters.
    pub sampling: SamplingParams,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Asks each executor for as many output tokens as its context leaves after the prompt,
    /// up to `max_tokens` (what OpenAI-compatible servers do when `max_tokens` is omitted).
    /// Unset, exactly `max_tokens` of room is asked for, and a prompt that leaves less is
    /// refused ([`Error::ContextExceeded`]).
    pub fit_to_context: bool,
    /// For a chat fitted to the context: the fewest output tokens worth asking for. An
    /// executor whose context leaves fewer after the prompt is not asked, and when none leaves
    /// enough the chat fails with [`Error::ContextExceeded`] (so a conversation can leave out
    /// old turns rather than get a clipped answer). Ignored unless `fit_to_context` is set.
    pub min_tokens: u32,
    /// Price ceilings and minimum context.
    pub filter: RouteFilter,
    /// How to choose executors for this request; `None`: the client's strategy.
    pub strategy: Option<Strategy>,
    /// Time for the whole request, failovers included.
    pub timeout: Duration,
    /// The executor to ask first when it serves the model within the filter and is not cooling
    /// down, whatever the strategy ranks first: the one that answered the conversation's
    /// previous turn, whose prompt cache holds the history (an engine computes only the new
    /// turn). Failover goes on as ranked.
    pub prefer: Option<Address>,
    /// Set on a request asked again after waiting out the retry-after of a Busy answer (as
    /// [`Patience`](crate::patience::Patience) users do): when every executor left is waiting
    /// out a Busy answer, the one due first is asked anyway instead of the request ending
    /// busy at once, as each busy executor gives each refused request its own time to come
    /// back and this one's has come.
    pub waited_out_busy: bool,
}

impl ChatRequest {
    /// A one-message request with greedy decoding and 256 output tokens.
    pub fn user(model: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            messages: vec![ChatMessage { role: Role::User, content: prompt.into() }],
            sampling: SamplingParams::default(),
            max_tokens: 256,
            fit_to_context: false,
            min_tokens: 1,
            filter: RouteFilter::default(),
            strategy: None,
            timeout: Duration::from_secs(120),
            prefer: None,
            waited_out_busy: false,
        }
    }
}

/// What happened to one attempt (shown with `--verbose`).
#[derive(Clone, Debug)]
pub struct AttemptReport {
    /// The executor tried.
    pub executor: Address,
    /// Why it failed, or `None` for the attempt that answered.
    pub failure: Option<AttemptFailure>,
    /// The cooldown it was given: `None` for the attempt that answered, for a try at
    /// addresses the executor had left (it is tried again where it announces itself now), and
    /// for a request too long for its context (the request's fault).
    pub cooldown: Option<Duration>,
}

/// A verified answer: everything needed to prove and settle it.
#[derive(Clone, Debug)]
pub struct Receipt {
    /// The signed request that was answered.
    pub request: SignedRequest,
    /// The executor's signed final response (or, for a cut-off stream, its last checkpoint).
    pub response: SignedResponse,
    /// The executor's address (the response signer).
    pub executor: Address,
    /// The executor's peer id.
    pub peer: PeerId,
    /// The full answer text (its hash is in the response).
    pub text: String,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Cost in wei.
    pub cost: U256,
    /// Why generation ended.
    pub finish: FinishReason,
    /// Time to first token.
    pub ttft: Duration,
    /// The checks that passed, in order.
    pub checks: Vec<&'static str>,
    /// Every attempt, the successful one last.
    pub attempts: Vec<AttemptReport>,
}

/// The checks a final response passes before it is reported.
pub const RESPONSE_CHECKS: [&str; 7] = [
    "signed for our EIP-712 domain",
    "signer is the chosen executor (address == peer key)",
    "references this request's digest, client and model",
    "timestamp within the clock-skew window",
    "token counts within the signed limits",
    "cost == input × price_in + output × price_out",
    "content hash matches the streamed text",
];

/// The check a final response also passes when its request asked for JSON.
pub const FORMAT_CHECK: &str = "the text is the JSON the request's format asked for";

/// The checks a final response to a request with `format` passes.
pub fn response_checks(format: &lloom_core::OutputFormat) -> Vec<&'static str> {
    let mut checks = RESPONSE_CHECKS.to_vec();
    if *format != lloom_core::OutputFormat::Text {
        checks.push(FORMAT_CHECK);
    }
    checks
}

/// One event of a chat answer.
#[derive(Clone, Debug)]
pub enum ChatEvent {
    /// An executor was chosen and the request sent.
    Attempt {
        /// The executor.
        executor: Address,
    },
    /// More text.
    Text(String),
    /// The executor failed after streaming; text since the last `Attempt` is void and the
    /// answer restarts on another executor.
    Restart {
        /// What happened.
        reason: String,
        /// What the failed attempt's last verified checkpoint commits the client to pay for
        /// the text it streamed, in wei (zero without one). The checkpoint is in the receipt
        /// store by the time this event is sent.
        cost: U256,
    },
    /// The verified receipt; nothing follows.
    Done(Box<Receipt>),
}

/// The answer as it streams. Dropping it cancels the chat: the stream to the executor closes,
/// and the last verified checkpoint of what it streamed is kept in the receipt store.
#[derive(Debug)]
pub struct ChatStream {
    events: mpsc::Receiver<Result<ChatEvent>>,
    task: Option<JoinHandle<()>>,
    cost: Arc<ChatCost>,
}

impl ChatStream {
    /// The answer fed by `task` through `events`, whose cost the task keeps in `cost`;
    /// dropping it aborts the task.
    pub(crate) fn new(
        events: mpsc::Receiver<Result<ChatEvent>>,
        task: JoinHandle<()>,
        cost: Arc<ChatCost>,
    ) -> Self {
        Self { events, task: Some(task), cost }
    }

    /// What the chat has committed the client to pay so far, in wei: the last verified
    /// checkpoint of every attempt that broke after streaming began, the latest one of the
    /// attempt under way, and the final answer once it is verified. Executors can settle each
    /// of these, and the client keeps each in its receipt store.
    pub fn cost(&self) -> U256 {
        self.cost.total()
    }

    /// Cancels the chat and waits until its task has stopped; returns what it cost (see
    /// [`ChatStream::cost`]), which no longer changes.
    pub async fn cancel(mut self) -> U256 {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.cost.total()
    }

    /// The next event; `None` after `Done` or an error.
    pub async fn next(&mut self) -> Option<Result<ChatEvent>> {
        self.events.recv().await
    }

    /// Waits for the whole answer: its text and receipt.
    pub async fn collect(mut self) -> Result<Receipt> {
        self.receipt().await
    }

    /// Reads the rest of the answer and returns its receipt, keeping the stream (for its
    /// [`cost`](Self::cost)).
    pub async fn receipt(&mut self) -> Result<Receipt> {
        while let Some(event) = self.next().await {
            if let ChatEvent::Done(receipt) = event? {
                return Ok(*receipt);
            }
        }
        Err(Error::State("the answer ended without a receipt".into()))
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        // Dropping the answer cancels it: the stream to the executor closes.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

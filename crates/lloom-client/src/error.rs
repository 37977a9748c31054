//! The error type of `lloom-client`.

use lloom_core::PeerId;

/// Result alias for `lloom-client`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A protocol, identity, storage or network error from `lloom-core`.
    #[error(transparent)]
    Core(#[from] lloom_core::Error),
    /// Writing output failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A validator refused or mangled a registry query.
    #[error("validator {validator} refused the query: {reason}")]
    ValidatorRefused {
        /// The validator.
        validator: PeerId,
        /// Its reason.
        reason: String,
    },
    /// No validator could be reached.
    #[error("no validator reachable within {0:?}; check --bootstrap addresses")]
    NoValidator(std::time::Duration),
    /// A bootstrap address lacks its `/p2p/<peer id>` suffix.
    #[error("bootstrap address {0} must end in /p2p/<peer id>")]
    BootstrapWithoutPeerId(String),
    /// Local state (nonce file, ...) is unusable.
    #[error("client state: {0}")]
    State(String),
    /// The request is invalid before anything is sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The gateway's API keys are malformed.
    #[error("gateway API keys: {0}")]
    ApiKeys(String),
    /// No executor serves the model.
    #[error("no executor serves `{model}`{}; models on offer: {}", gone_for_now(*last_offered_secs), if available.is_empty() { "none".to_owned() } else { available.join(", ") })]
    NoExecutor {
        /// The model asked for.
        model: String,
        /// The models that are on offer.
        available: Vec<String>,
        /// How long ago this client last saw the model on offer (within the last day): its
        /// executors are gone for now (withdrawn, restarting), and it may return.
        last_offered_secs: Option<u64>,
    },
    /// Executors serve the model, but none within the request's price and context limits.
    #[error(
        "no executor serves `{model}` within your limits; {offers} do, asking at least {lowest_input_price} wei per input token and {lowest_output_price} wei per output token, with at most {largest_context} tokens of context: raise --max-price or lower --min-context"
    )]
    OutsideLimits {
        /// The model asked for.
        model: String,
        /// How many offers of it are known.
        offers: usize,
        /// The lowest price per prompt token among them, in wei.
        lowest_input_price: lloom_core::U256,
        /// The lowest price per generated token among them, in wei.
        lowest_output_price: lloom_core::U256,
        /// The largest context among them, in tokens.
        largest_context: u32,
    },
    /// The prompt plus the requested output tokens fit the context of no executor tried (each
    /// refused it with a signed `ContextExceeded`; none with a longer context was left).
    #[error(
        "the prompt and max_tokens {max_tokens} do not fit the context of any executor tried for `{model}` (the longest has {context_length} tokens: {reason}); shorten the prompt or lower max_tokens"
    )]
    ContextExceeded {
        /// The model asked for.
        model: String,
        /// The longest context among the executors that refused, in tokens.
        context_length: u32,
        /// The output tokens asked for.
        max_tokens: u32,
        /// That executor's signed reason.
        reason: String,
    },
    /// Every executor tried was busy or rate limited.
    #[error("all executors are busy; retry after {}", crate::wait_text::wait_text(*retry_after))]
    AllBusy {
        /// The shortest retry-after any of them signed.
        retry_after: std::time::Duration,
    },
    /// The deadline passed before a verified answer arrived.
    #[error("no verified answer within {0:?}")]
    DeadlineExceeded(std::time::Duration),
    /// An executor refused the request for a reason another executor would share.
    #[error("executor {executor} refused the request: {reason}")]
    Refused {
        /// The executor.
        executor: lloom_core::Address,
        /// Its signed reason.
        reason: String,
    },
    /// Every attempt failed.
    #[error("no executor for `{model}` gave a verified answer:\n  {}", attempts.join("\n  "))]
    AllFailed {
        /// The model.
        model: String,
        /// One line per attempt: executor and failure.
        attempts: Vec<String>,
    },
    /// Every executor's worst-case cost exceeds the client's escrow.
    #[error(
        "the worst-case cost ({needed} wei) exceeds your escrow ({escrow} wei): deposit more or lower --max-tokens"
    )]
    InsufficientEscrow {
        /// The smallest worst-case cost among the candidates, in wei.
        needed: lloom_core::U256,
        /// The escrow, in wei.
        escrow: lloom_core::U256,
    },
}

/// The note for a model no executor serves now that was on offer `last_offered_secs` ago.
fn gone_for_now(last_offered_secs: Option<u64>) -> String {
    last_offered_secs.map_or_else(String::new, |secs| {
        format!(" now (it was on offer {secs} s ago; its executors may be restarting)")
    })
}

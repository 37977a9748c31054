//! The messages peers exchange on the request stream.

use alloy_primitives::B256;
use serde::{Deserialize, Serialize};

use super::WireLimits;
use super::digested::DigestedRequest;
use crate::eip712::{
    DomainConfig, ErrorCommitment, RequestCommitment, ResponseCommitment, signing_hash,
};
use crate::error::{Error, Result};
use crate::identity::NodeKey;
use crate::signature::Signature;

/// Who wrote a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The user's turn.
    User,
    /// A previous model answer.
    Assistant,
}

/// One message of a chat conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Author of the message.
    pub role: Role,
    /// Text of the message.
    pub content: String,
}

/// Sampling parameters. Greedy decoding is `temperature == 0`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Softmax temperature in `[0, 2]`; 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling mass in `(0, 1]`.
    pub top_p: f32,
    /// Top-k cut-off; 0 disables it.
    pub top_k: u32,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
    /// Generation stops when any of these strings is produced.
    pub stop: Vec<String>,
    /// OpenAI's `frequency_penalty` in `[-2, 2]`: lowers a token's logit by this much for each
    /// time it was already generated (0: off).
    pub frequency_penalty: f32,
    /// OpenAI's `presence_penalty` in `[-2, 2]`: lowers a token's logit by this much once it
    /// was generated at all (0: off).
    pub presence_penalty: f32,
    /// The shape the answer must take; anything but [`OutputFormat::Text`] constrains
    /// sampling to tokens that keep the answer valid.
    pub format: OutputFormat,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            stop: Vec::new(),
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            format: OutputFormat::Text,
        }
    }
}

impl SamplingParams {
    /// Checks the ranges (temperature in `[0, 2]`, `top_p` in `(0, 1]`, penalties in `[-2, 2]`),
    /// the stop sequences and the format against `limits`.
    pub fn validate(&self, limits: &WireLimits) -> Result<()> {
        if !(self.temperature.is_finite() && (0.0..=2.0).contains(&self.temperature)) {
            return Err(Error::InvalidMessage(format!(
                "temperature {} not in [0, 2]",
                self.temperature
            )));
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidMessage(format!("top_p {} not in (0, 1]", self.top_p)));
        }
        too_large("stop sequences", self.stop.len(), limits.max_stop_sequences)?;
        for stop in &self.stop {
            if stop.is_empty() {
                return Err(Error::InvalidMessage("empty stop sequence".into()));
            }
            too_large("stop sequence", stop.len(), limits.max_stop_bytes)?;
        }
        for (name, penalty) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if !(penalty.is_finite() && (-2.0..=2.0).contains(&penalty)) {
                return Err(Error::InvalidMessage(format!("{name} {penalty} not in [-2, 2]")));
            }
        }
        self.format.validate(limits)
    }
}

/// The shape an answer must take (OpenAI's `response_format`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputFormat {
    /// Free text.
    #[default]
    Text,
    /// One JSON object, with any keys.
    JsonObject,
    /// JSON that a JSON Schema accepts.
    JsonSchema {
        /// The schema's name (OpenAI's `json_schema.name`): letters, digits, `_` and `-`,
        /// at most 64.
        name: String,
        /// The schema, as JSON text.
        schema: String,
    },
}

impl OutputFormat {
    /// Longest schema name, in characters (OpenAI's limit).
    pub const MAX_NAME_CHARS: usize = 64;

    /// Whether `c` may stand in a schema name: letters, digits, `_` and `-`.
    pub fn is_name_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_' || c == '-'
    }

    /// Checks the name and that the schema is a JSON object of at most `max_schema_bytes`.
    /// Whether an executor can compile the schema is its own check, before work starts.
    fn validate(&self, limits: &WireLimits) -> Result<()> {
        let Self::JsonSchema { name, schema } = self else { return Ok(()) };
        if name.is_empty()
            || name.len() > Self::MAX_NAME_CHARS
            || !name.chars().all(Self::is_name_char)
        {
            return Err(Error::InvalidMessage(format!(
                "schema name `{name}` must be 1 to 64 letters, digits, `_` or `-`"
            )));
        }
        too_large("JSON schema", schema.len(), limits.max_schema_bytes)?;
        match serde_json::from_str::<serde_json::Value>(schema) {
            Ok(serde_json::Value::Object(_)) => Ok(()),
            Ok(_) => Err(Error::InvalidMessage("the JSON schema must be a JSON object".into())),
            Err(e) => Err(Error::InvalidMessage(format!("the JSON schema is not JSON: {e}"))),
        }
    }
}

/// The full request body; its hash is the commitment's `requestHash`.
///
/// The model and the token limits live in the signed [`RequestCommitment`], not here, so there
/// is exactly one authoritative copy of each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestBody {
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// How to sample.
    pub sampling: SamplingParams,
}

impl RequestBody {
    /// Checks protocol rules and size limits.
    pub fn validate(&self, limits: &WireLimits) -> Result<()> {
        if self.messages.is_empty() {
            return Err(Error::InvalidMessage("a request needs at least one message".into()));
        }
        too_large("messages", self.messages.len(), limits.max_messages)?;
        self.sampling.validate(limits)
    }
}

fn too_large(what: &'static str, size: usize, limit: usize) -> Result<()> {
    if size > limit {
        return Err(Error::TooLarge { what, size: size as u64, limit: limit as u64 });
    }
    Ok(())
}

/// A client's signed request: the commitment, the body it hashes, and the signature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedRequest {
    /// The domain the client signed for.
    pub domain: DomainConfig,
    /// The signed commitment.
    pub commitment: RequestCommitment,
    /// The request body (`commitment.requestHash == request_hash(body)`).
    pub body: RequestBody,
    /// The client's signature over the commitment's EIP-712 digest.
    pub signature: Signature,
}

impl SignedRequest {
    /// Signs `commitment` with `key` under `domain`. The caller sets `requestHash`
    /// (see [`request_hash`](super::request_hash)) and `client == key.address()`.
    pub fn sign(
        key: &NodeKey,
        domain: DomainConfig,
        commitment: RequestCommitment,
        body: RequestBody,
    ) -> Result<Self> {
        Self::sign_digested(key, domain, commitment, body).map(DigestedRequest::into_request)
    }

    /// [`SignedRequest::sign`], keeping the digest it signed over.
    pub fn sign_digested(
        key: &NodeKey,
        domain: DomainConfig,
        commitment: RequestCommitment,
        body: RequestBody,
    ) -> Result<DigestedRequest> {
        let digest = signing_hash(&commitment, &domain);
        let signature = key.sign_digest(&digest)?;
        Ok(DigestedRequest::signed(Self { domain, commitment, body, signature }, digest))
    }

    /// The EIP-712 digest of the commitment (what the response must reference).
    pub fn digest(&self) -> B256 {
        signing_hash(&self.commitment, &self.domain)
    }
}

/// An executor's signed response or checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedResponse {
    /// The domain the executor signed for.
    pub domain: DomainConfig,
    /// The signed commitment.
    pub commitment: ResponseCommitment,
    /// The executor's signature over the commitment's EIP-712 digest.
    pub signature: Signature,
}

impl SignedResponse {
    /// Signs `commitment` with `key` under `domain`.
    pub fn sign(
        key: &NodeKey,
        domain: DomainConfig,
        commitment: ResponseCommitment,
    ) -> Result<Self> {
        let signature = key.sign_digest(&signing_hash(&commitment, &domain))?;
        Ok(Self { domain, commitment, signature })
    }

    /// The EIP-712 digest of the commitment.
    pub fn digest(&self) -> B256 {
        signing_hash(&self.commitment, &self.domain)
    }
}

/// An executor's signed refusal or failure notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedError {
    /// The domain the executor signed for.
    pub domain: DomainConfig,
    /// The signed commitment.
    pub commitment: ErrorCommitment,
    /// The executor's signature over the commitment's EIP-712 digest.
    pub signature: Signature,
}

impl SignedError {
    /// Signs `commitment` with `key` under `domain`.
    pub fn sign(key: &NodeKey, domain: DomainConfig, commitment: ErrorCommitment) -> Result<Self> {
        let signature = key.sign_digest(&signing_hash(&commitment, &domain))?;
        Ok(Self { domain, commitment, signature })
    }

    /// The EIP-712 digest of the commitment.
    pub fn digest(&self) -> B256 {
        signing_hash(&self.commitment, &self.domain)
    }
}

/// A piece of generated text, in stream order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamChunk {
    /// Position in the stream, starting at 0 and increasing by one.
    pub index: u32,
    /// The text, appended to what came before.
    pub text: String,
}

/// Everything that travels on a request stream. The enum tag is part of the encoding, so new
/// variants are appended only, and incompatible changes bump [`WIRE_VERSION`](super::WIRE_VERSION).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WireMessage {
    /// client → executor: the signed request.
    Request(SignedRequest),
    /// executor → client: generated text.
    Chunk(StreamChunk),
    /// executor → client: a signed mid-stream checkpoint (`finishReason == PARTIAL`).
    Checkpoint(SignedResponse),
    /// executor → client: the final signed response; the stream ends after it.
    Response(SignedResponse),
    /// executor → client: a signed refusal or failure; the stream ends after it.
    Error(SignedError),
}

impl WireMessage {
    /// Checks the per-field size limits and protocol rules of a decoded message.
    pub fn validate(&self, limits: &WireLimits) -> Result<()> {
        match self {
            Self::Request(r) => {
                too_large("model name", r.commitment.model.len(), limits.max_model_bytes)?;
                r.body.validate(limits)
            }
            Self::Chunk(c) => too_large("stream chunk", c.text.len(), limits.max_chunk_bytes),
            Self::Checkpoint(r) | Self::Response(r) => {
                too_large("model name", r.commitment.model.len(), limits.max_model_bytes)?;
                crate::FinishReason::from_code(r.commitment.finishReason).map(|_| ())
            }
            Self::Error(e) => too_large(
                "error message",
                e.commitment.message.len(),
                limits.max_error_message_bytes,
            ),
        }
    }

    /// A short name for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Request(_) => "request",
            Self::Chunk(_) => "chunk",
            Self::Checkpoint(_) => "checkpoint",
            Self::Response(_) => "response",
            Self::Error(_) => "error",
        }
    }
}

//! The OpenAI chat-completions wire types the gateway accepts and returns.

use lloom_core::{ChatMessage, OutputFormat, Role, SamplingParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::ApiError;
use super::tools::{self, ToolAnswer};
use crate::client::{ChatRequest, Receipt};

/// `POST /v1/chat/completions` body (the fields Lloom uses; unknown fields are ignored, as
/// OpenAI-compatible servers do).
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<InMessage>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Newer name of `max_tokens`.
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature in [0, 2].
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Top-k sampling (0: off), as llama.cpp's server and vLLM accept it.
    pub top_k: Option<u32>,
    /// Seed.
    pub seed: Option<u64>,
    /// Stop sequences: a string or a list.
    pub stop: Option<Stop>,
    /// Stream with server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Number of choices; only 1 is supported.
    pub n: Option<u32>,
    /// Functions the model may call (see [`tools`](super::tools)).
    pub tools: Option<Value>,
    /// The deprecated form of `tools`: refused.
    pub functions: Option<Value>,
    /// `"none"`, `"auto"` (the default with tools), `"required"` or one named function.
    pub tool_choice: Option<Value>,
    /// `true`: a turn may call several tools (at most
    /// [`MAX_PARALLEL_CALLS`](super::tools::MAX_PARALLEL_CALLS)); otherwise one at most.
    pub parallel_tool_calls: Option<bool>,
    /// `{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema",
    /// "json_schema": {"name", "schema", "strict"}}`: the executor constrains sampling to it.
    pub response_format: Option<Value>,
    /// In [-2, 2]: lowers a token's logit by this much for each time it was generated.
    pub frequency_penalty: Option<f32>,
    /// In [-2, 2]: lowers a token's logit by this much once it was generated.
    pub presence_penalty: Option<f32>,
    /// Log probabilities: refused when asked for.
    pub logprobs: Option<bool>,
    /// Refused when above 0.
    pub top_logprobs: Option<u32>,
    /// Refused when not empty.
    pub logit_bias: Option<Value>,
    /// Lloom's routing options for this request: `strategy`, `max_price`,
    /// `max_price_per_input_token`, `max_price_per_output_token` (wei), `min_context`.
    pub lloom: Option<Value>,
}

/// Whether a JSON value asks for nothing (absent, null, `[]` or `{}`).
fn is_empty(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    }
}

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop sequence.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// One input message.
#[derive(Debug, Deserialize)]
pub struct InMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text, or a list of content parts (only `text` parts are supported); may be null in an
    /// assistant turn that called tools.
    pub content: Option<Content>,
    /// The tools an earlier assistant turn called.
    pub tool_calls: Option<Value>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
}

/// A completion request as Lloom sends it, and how to answer it.
#[derive(Debug)]
pub struct Converted {
    /// The chat request for the network.
    pub chat: ChatRequest,
    /// Whether a streamed answer ends with a usage chunk.
    pub include_usage: bool,
    /// Whether the model may call tools: its answer is read back into `tool_calls`.
    pub with_tools: bool,
}

/// Message content: a string or parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Content parts.
    Parts(Vec<Part>),
}

/// A content part.
#[derive(Debug, Deserialize)]
pub struct Part {
    /// The part type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

impl CompletionRequest {
    /// Converts to a Lloom chat request, refusing what Lloom cannot honour.
    /// A request without `max_tokens` is fitted to the context, up to `default_max_tokens`.
    pub fn into_chat(self, default_max_tokens: Option<u32>) -> Result<Converted, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid("only n = 1 is supported", Some("n")));
        }
        self.refuse_unsupported()?;
        if self.messages.is_empty() {
            return Err(ApiError::invalid("messages must not be empty", Some("messages")));
        }
        let tools =
            tools::parse(self.tools.as_ref(), self.tool_choice.as_ref(), self.parallel_tool_calls)?;
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                // A tool's result is reported to the model in the user's turn.
                "user" | "tool" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(ApiError::invalid(
                        &format!("messages[{i}].role `{other}` is not supported"),
                        Some("messages"),
                    ));
                }
            };
            let mut content = match m.content {
                None if m.tool_calls.is_some() && role == Role::Assistant => String::new(),
                None => {
                    return Err(ApiError::invalid(
                        &format!("messages[{i}].content is required"),
                        Some("messages"),
                    ));
                }
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), part.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    &format!(
                                        "messages[{i}]: content part `{kind}` is not supported"
                                    ),
                                    Some("messages"),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            if m.role == "tool" {
                content = tools::result_as_text(m.tool_call_id.as_deref(), &content);
            }
            if let Some(calls) = m.tool_calls.as_ref().filter(|_| role == Role::Assistant) {
                let calls = tools::calls_as_text(calls)?;
                content = if content.is_empty() { calls } else { format!("{content}\n{calls}") };
            }
            messages.push(ChatMessage { role, content });
        }
        if let Some(spec) = &tools {
            // The tools are described in the system message, the first one's if there is one.
            match messages.first_mut().filter(|m| m.role == Role::System) {
                Some(system) => {
                    system.content = format!("{}\n\n{}", system.content, spec.instructions())
                }
                None => messages
                    .insert(0, ChatMessage { role: Role::System, content: spec.instructions() }),
            }
        }
        let asked = self.max_completion_tokens.or(self.max_tokens);
        let max_tokens = asked.or(default_max_tokens).unwrap_or(u32::MAX);
        if max_tokens == 0 {
            return Err(ApiError::invalid("max_tokens must be at least 1", Some("max_tokens")));
        }
        let defaults = SamplingParams::default();
        let format = match (&tools, output_format(self.response_format.as_ref())?) {
            (None, format) => format,
            (Some(spec), OutputFormat::Text) => spec.format(),
            (Some(_), _) => {
                return Err(ApiError::invalid(
                    "response_format cannot be combined with tools (a tool call's arguments \
                     follow the tool's parameters)",
                    Some("response_format"),
                ));
            }
        };
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            seed: self.seed,
            stop: match self.stop {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s],
                Some(Stop::Many(v)) => v,
            },
            frequency_penalty: self.frequency_penalty.unwrap_or(defaults.frequency_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(defaults.presence_penalty),
            format,
        };
        let mut request = ChatRequest::user(self.model, "");
        super::routing_options::apply(self.lloom.as_ref(), &mut request)?;
        request.messages = messages;
        request.sampling = sampling;
        request.max_tokens = max_tokens;
        request.fit_to_context = asked.is_none();
        let include_usage = self.stream_options.is_some_and(|o| o.include_usage);
        Ok(Converted { chat: request, include_usage, with_tools: tools.is_some() })
    }
}

impl CompletionRequest {
    /// Refuses the features whose answers would have another shape than the one Lloom returns,
    /// rather than ignoring them and answering as if they had not been asked for.
    fn refuse_unsupported(&self) -> Result<(), ApiError> {
        if !is_empty(self.functions.as_ref()) {
            return Err(ApiError::invalid(
                "`functions` is not supported; use `tools`",
                Some("functions"),
            ));
        }
        if self.logprobs == Some(true) || self.top_logprobs.is_some_and(|n| n > 0) {
            return Err(ApiError::invalid("logprobs are not supported", Some("logprobs")));
        }
        if !is_empty(self.logit_bias.as_ref()) {
            return Err(ApiError::invalid("logit_bias is not supported", Some("logit_bias")));
        }
        Ok(())
    }
}

/// The output format an OpenAI `response_format` asks for. A `json_schema` without a schema
/// asks only for JSON; the schema's own checks (a JSON object, its size, its name) are the
/// protocol's, made before anything is sent.
fn output_format(response_format: Option<&Value>) -> Result<OutputFormat, ApiError> {
    let invalid = |message: &str| ApiError::invalid(message, Some("response_format"));
    let Some(format) = response_format.filter(|v| !v.is_null()) else {
        return Ok(OutputFormat::Text);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(OutputFormat::Text),
        Some("json_object") => Ok(OutputFormat::JsonObject),
        Some("json_schema") => {
            let Some(spec) = format.get("json_schema").filter(|v| v.is_object()) else {
                return Err(invalid("response_format.json_schema must be an object"));
            };
            let name = match spec.get("name") {
                None | Some(Value::Null) => "schema".to_owned(),
                Some(Value::String(name)) => name.clone(),
                Some(_) => {
                    return Err(invalid("response_format.json_schema.name must be a string"));
                }
            };
            match spec.get("schema") {
                None | Some(Value::Null) => Ok(OutputFormat::JsonObject),
                Some(schema @ Value::Object(_)) => {
                    Ok(OutputFormat::JsonSchema { name, schema: schema.to_string() })
                }
                Some(_) => Err(invalid("response_format.json_schema.schema must be an object")),
            }
        }
        _ => Err(invalid(&format!(
            "response_format {format} is not supported; the type must be text, json_object or \
             json_schema"
        ))),
    }
}

/// The OpenAI `finish_reason` for a Lloom finish reason.
pub(super) fn finish_reason(receipt: &Receipt) -> &'static str {
    match receipt.finish {
        lloom_core::FinishReason::Length => "length",
        _ => "stop",
    }
}

/// The answer as OpenAI shapes it: the text, or, for a request with tools, the verified JSON
/// read back into `tool_calls` or the reply in it.
pub(super) enum Answer {
    /// Content.
    Text(String),
    /// Tool calls, in order, each with its OpenAI id: `call_` and the first 12 bytes of the
    /// request digest in hex, then `_1`, `_2`, … after the first.
    Calls(Vec<(String, tools::ToolCall)>),
}

impl Answer {
    /// Reads `receipt`'s verified text; `with_tools` when the request listed tools.
    pub(super) fn of(receipt: &Receipt, with_tools: bool) -> Self {
        if !with_tools {
            return Self::Text(receipt.text.clone());
        }
        match tools::read_answer(&receipt.text) {
            ToolAnswer::Text(text) => Self::Text(text),
            ToolAnswer::Calls(calls) => {
                let digest = receipt.request.digest().to_string();
                let id = format!("call_{}", digest.get(2..26).unwrap_or_default());
                let ids = (0..).map(|i| if i == 0 { id.clone() } else { format!("{id}_{i}") });
                Self::Calls(ids.zip(calls).collect())
            }
        }
    }

    /// The `finish_reason`.
    pub(super) fn finish_reason(&self, receipt: &Receipt) -> &'static str {
        match self {
            Self::Calls(_) => "tool_calls",
            Self::Text(_) => finish_reason(receipt),
        }
    }

    /// The `tool_calls` list (each entry with its `index` when streamed).
    fn tool_calls(calls: &[(String, tools::ToolCall)], streamed: bool) -> Value {
        let entries = calls.iter().enumerate().map(|(index, (id, call))| {
            let mut entry = json!({
                "id": id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            });
            if let (true, Some(fields)) = (streamed, entry.as_object_mut()) {
                fields.insert("index".into(), json!(index));
            }
            entry
        });
        Value::Array(entries.collect())
    }

    /// The message of a complete completion.
    fn message(&self) -> Value {
        match self {
            Self::Text(text) => json!({"role": "assistant", "content": text}),
            Self::Calls(calls) => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": Self::tool_calls(calls, false),
            }),
        }
    }

    /// The delta of a streamed completion that carries the whole answer.
    pub(super) fn delta(&self) -> Value {
        match self {
            Self::Text(text) => json!({"content": text}),
            Self::Calls(calls) => json!({"tool_calls": Self::tool_calls(calls, true)}),
        }
    }

    /// The streamed delta that completes it after `streamed` of its text was sent as it was
    /// generated, or `None` when nothing is left to send.
    pub(super) fn delta_after(&self, streamed: &str) -> Option<Value> {
        match self {
            Self::Text(text) => match text.strip_prefix(streamed) {
                Some("") => None,
                Some(rest) => Some(json!({"content": rest})),
                None => {
                    // The reply is read from the same verified text as it was streamed.
                    tracing::warn!("the streamed reply is not the start of the verified one");
                    None
                }
            },
            Self::Calls(_) => Some(self.delta()),
        }
    }
}

/// Receipt details carried in the extra `lloom` field; `with_tools`, also the signed text
/// (the JSON that `tool_calls` were read from, whose hash the receipt carries).
pub(super) fn lloom_field(receipt: &Receipt, with_tools: bool) -> Value {
    let mut field = json!({
        "executor": receipt.executor.to_checksum(None),
        "peer_id": receipt.peer.to_string(),
        "request_digest": receipt.request.digest().to_string(),
        "cost_wei": receipt.cost.to_string(),
        "response_signature": receipt.response.signature.to_string(),
        "checks": receipt.checks,
    });
    if let (true, Some(fields)) = (with_tools, field.as_object_mut()) {
        fields.insert("signed_text".into(), json!(receipt.text));
    }
    field
}

/// `usage` for a receipt.
pub(super) fn usage(receipt: &Receipt) -> Value {
    json!({
        "prompt_tokens": receipt.input_tokens,
        "completion_tokens": receipt.output_tokens,
        "total_tokens": receipt.input_tokens + receipt.output_tokens,
    })
}

/// A complete (non-streaming) completion; `with_tools` when the request listed tools.
pub(super) fn completion(id: &str, created: u64, receipt: &Receipt, with_tools: bool) -> Value {
    let answer = Answer::of(receipt, with_tools);
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": receipt.request.commitment.model,
        "choices": [{
            "index": 0,
            "message": answer.message(),
            "finish_reason": answer.finish_reason(receipt),
        }],
        "usage": usage(receipt),
        "lloom": lloom_field(receipt, with_tools),
    })
}

/// One streamed chunk.
pub(super) fn chunk(
    id: &str,
    created: u64,
    model: &str,
    delta: &Value,
    finish: Option<&str>,
) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
    })
}

/// A model entry of `GET /v1/models`.
#[derive(Debug, Serialize)]
pub(super) struct ModelEntry {
    /// The model name.
    pub(super) id: String,
    /// Always `model`.
    pub(super) object: &'static str,
    /// Unknown; 0.
    pub(super) created: u64,
    /// Always `lloom`.
    pub(super) owned_by: &'static str,
    /// Executors serving it.
    pub(super) executors: usize,
    /// Cheapest price per prompt token, in wei.
    pub(super) min_input_price_wei: String,
    /// Cheapest price per generated token, in wei.
    pub(super) min_output_price_wei: String,
    /// Largest context length offered.
    pub(super) max_context: u32,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn request(body: Value) -> CompletionRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn tools_become_a_system_message_and_a_schema_and_earlier_calls_become_text() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
        let converted = request(json!({"model": "m", "tools": tools, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 °C"},
        ]}))
        .into_chat(Some(64))
        .unwrap();
        assert!(converted.with_tools);
        let m = &converted.chat.messages;
        assert_eq!(m.len(), 4, "the tools join the first system message: {m:?}");
        assert!(
            m[0].content.starts_with("Be brief.\n\nYou can call these tools"),
            "{}",
            m[0].content
        );
        assert!(m[0].content.contains("\"get_weather\""));
        assert_eq!(m[2].role, Role::Assistant);
        let earlier: Value = serde_json::from_str(&m[2].content).unwrap();
        assert_eq!(earlier["tool_call"]["arguments"]["city"], "Paris");
        assert_eq!(m[3].role, Role::User);
        let result: Value = serde_json::from_str(&m[3].content).unwrap();
        assert_eq!(result["tool_response"], json!({"tool_call_id": "call_1", "content": "18 °C"}));
        let OutputFormat::JsonSchema { name, schema } = &converted.chat.sampling.format else {
            panic!("{:?}", converted.chat.sampling.format)
        };
        assert_eq!(name, "tool_call");
        assert!(schema.contains("\"const\":\"get_weather\""), "{schema}");

        // Without a system message, one is added first; with tool_choice none, nothing is.
        let ask = json!([{"role": "user", "content": "hi"}]);
        let converted = request(json!({"model": "m", "tools": tools, "messages": ask}))
            .into_chat(Some(64))
            .unwrap();
        assert_eq!(converted.chat.messages[0].role, Role::System);
        let none = json!({"model": "m", "tools": tools, "tool_choice": "none", "messages": ask});
        let converted = request(none).into_chat(Some(64)).unwrap();
        assert_eq!((converted.chat.messages.len(), converted.with_tools), (1, false));
        assert_eq!(converted.chat.sampling.format, OutputFormat::Text);
    }

    #[test]
    fn a_request_without_max_tokens_is_fitted_to_the_context_up_to_the_default_cap() {
        let ask = json!([{"role": "user", "content": "hi"}]);
        let given = request(json!({"model": "m", "max_tokens": 12, "messages": ask}));
        let chat = given.into_chat(Some(64)).unwrap().chat;
        assert_eq!((chat.max_tokens, chat.fit_to_context), (12, false), "asked: exactly that");
        let newer = request(json!({"model": "m", "max_completion_tokens": 9, "messages": ask}));
        assert_eq!(newer.into_chat(None).unwrap().chat.max_tokens, 9);
        let omitted = || request(json!({"model": "m", "messages": ask}));
        let chat = omitted().into_chat(Some(64)).unwrap().chat;
        assert_eq!((chat.max_tokens, chat.fit_to_context), (64, true), "capped by the default");
        let chat = omitted().into_chat(None).unwrap().chat;
        assert_eq!((chat.max_tokens, chat.fit_to_context), (u32::MAX, true), "the context only");
        let zero = request(json!({"model": "m", "max_tokens": 0, "messages": ask}));
        assert!(zero.into_chat(None).is_err());
    }
}

//! Reading a server's "the prompt does not fit the context" answer: whether an error body says
//! so, and how many tokens it counted in the prompt, so the signed `ContextExceeded` can state
//! the count as the embedded engine does ("prompt has N tokens"). A client fitting its answer
//! to the context reads that count to ask again for exactly what is left.

use serde_json::Value;

/// Whether an error body says that the prompt does not fit the context, in the words of the
/// servers the backend fronts: OpenAI and vLLM (`context_length_exceeded`, "maximum context
/// length"), llama.cpp's server (`exceed_context_size_error`, "exceeds the available context
/// size") and LM Studio ("greater than the context length").
pub(super) fn exceeds_context(body: &[u8]) -> bool {
    let error = error_object(body);
    let field = |name: &str| error.as_ref().and_then(|e| e.get(name)).and_then(Value::as_str);
    if matches!(field("code"), Some("context_length_exceeded"))
        || matches!(field("type"), Some("exceed_context_size_error"))
    {
        return true;
    }
    let text = match field("message") {
        Some(message) => message.to_lowercase(),
        None => String::from_utf8_lossy(body).to_lowercase(),
    };
    ["maximum context length", "context size", "context length", "context window"]
        .iter()
        .any(|phrase| text.contains(phrase))
}

/// `message`, led by "prompt has N tokens: " when the body counts the prompt's tokens.
pub(super) fn with_prompt_count(body: &[u8], message: String) -> String {
    match prompt_tokens(body) {
        Some(count) => format!("prompt has {count} tokens: {message}"),
        None => message,
    }
}

/// The prompt's tokens as the server counted them: llama.cpp's `n_prompt_tokens`, or the
/// count in OpenAI's and vLLM's messages ("(N in the messages, …", "your messages resulted in
/// N tokens", "your request has N input tokens", "your prompt contains at least N input
/// tokens").
fn prompt_tokens(body: &[u8]) -> Option<u64> {
    let error = error_object(body)?;
    if let Some(count) = error.get("n_prompt_tokens").and_then(Value::as_u64) {
        return Some(count);
    }
    let message = error.get("message").and_then(Value::as_str)?;
    let after = |lead: &str, trail: &str| {
        let (_, rest) = message.split_once(lead)?;
        let (number, rest) = rest.split_once(' ')?;
        rest.starts_with(trail).then(|| number.parse::<u64>().ok()).flatten()
    };
    after("(", "in the messages")
        .or_else(|| after("your messages resulted in ", "tokens"))
        .or_else(|| after("your request has ", "input tokens"))
        .or_else(|| after("your prompt contains at least ", "input tokens"))
}

/// The `error` object of an OpenAI-style error body, or the body itself where the error's
/// fields stand at the top (vLLM: `{"object": "error", "message": …}`).
fn error_object(body: &[u8]) -> Option<Value> {
    let mut body = serde_json::from_slice::<Value>(body).ok()?;
    match body.get_mut("error") {
        Some(error) => Some(error.take()),
        None => Some(body),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn error(fields: &Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "error": fields })).unwrap()
    }

    #[test]
    fn the_servers_counts_are_read_in_each_ones_words() {
        let cases = [
            // llama.cpp's server.
            (
                serde_json::json!({"code": 400, "type": "exceed_context_size_error",
                    "message": "request (9412 tokens) exceeds the available context size (8192 tokens), try increasing it",
                    "n_prompt_tokens": 9412, "n_ctx": 8192}),
                Some(9412),
            ),
            // OpenAI and older vLLM, with max_tokens.
            (
                serde_json::json!({"code": "context_length_exceeded", "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (1000 in the messages, 4000 in the completion). Please reduce the length of the messages or completion."}),
                Some(1000),
            ),
            // OpenAI, the prompt alone.
            (
                serde_json::json!({"code": "context_length_exceeded", "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens. Please reduce the length of the messages."}),
                Some(9000),
            ),
            // vLLM, whose error fields stand at the top.
            (
                serde_json::json!({"message": "This model's maximum context length is 2048 tokens. However, you requested 2100 tokens (2000 in the messages, 100 in the completion).", "object": "error", "type": "BadRequestError", "code": 400}),
                Some(2000),
            ),
            (
                serde_json::json!({"message": "This model's maximum context length is 2048 tokens. However, your request has 2049 input tokens. Please reduce the length of the input messages."}),
                Some(2049),
            ),
            (
                serde_json::json!({"message": "This model's maximum context length is 2048 tokens. However, you requested 1000 output tokens and your prompt contains at least 1049 input tokens, for a total of at least 2049 tokens."}),
                Some(1049),
            ),
            // LM Studio counts nothing.
            (
                serde_json::json!({"message": "Trying to keep the first 5000 tokens when context the overflows. However, the model is loaded with context length of only 4096 tokens, which is not enough."}),
                None,
            ),
        ];
        for (fields, count) in cases {
            let top_level = fields.get("object").is_some();
            let body =
                if top_level { serde_json::to_vec(&fields).unwrap() } else { error(&fields) };
            assert!(exceeds_context(&body), "{fields}");
            assert_eq!(prompt_tokens(&body), count, "{fields}");
        }
    }

    #[test]
    fn the_signed_message_leads_with_the_count_when_there_is_one() {
        let counted = error(&serde_json::json!({"type": "exceed_context_size_error",
            "message": "request (70 tokens) exceeds the available context size (64 tokens)",
            "n_prompt_tokens": 70}));
        assert_eq!(
            with_prompt_count(&counted, "HTTP 400: too long".into()),
            "prompt has 70 tokens: HTTP 400: too long"
        );
        let uncounted = error(&serde_json::json!({"message": "context window exceeded"}));
        assert_eq!(with_prompt_count(&uncounted, "HTTP 400: x".into()), "HTTP 400: x");
        assert_eq!(with_prompt_count(b"not json", "HTTP 400: x".into()), "HTTP 400: x");
    }

    #[test]
    fn other_errors_and_odd_numbers_are_not_read_as_counts() {
        let other = error(&serde_json::json!({"code": "invalid_request_error",
            "message": "temperature must be at most 2 (3 in the request)"}));
        assert!(!exceeds_context(&other));
        let huge = error(&serde_json::json!({"message":
            "maximum context length exceeded: your messages resulted in 99999999999999999999999 tokens"}));
        assert!(exceeds_context(&huge));
        assert_eq!(prompt_tokens(&huge), None);
        let negative =
            error(&serde_json::json!({"n_prompt_tokens": -4, "message": "context size"}));
        assert_eq!(prompt_tokens(&negative), None);
    }
}

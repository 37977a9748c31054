//! The `/chat/completions` request body the HTTP backend sends upstream.

use lloom_core::{OutputFormat, Role};
use serde_json::{Value, json};

use super::OpenAiConfig;
use crate::backend::GenerateRequest;
use crate::error::{Error, Result};

/// The `/chat/completions` body for `request`; fails if its JSON schema is not JSON.
pub(super) fn request_body(config: &OpenAiConfig, request: &GenerateRequest) -> Result<Value> {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({ "role": role, "content": m.content })
        })
        .collect();
    let s = &request.sampling;
    let mut body = json!({
        "model": config.remote_model,
        "messages": messages,
        "max_tokens": request.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    if let Some(fields) = body.as_object_mut() {
        if let Some(seed) = s.seed {
            fields.insert("seed".into(), json!(seed));
        }
        if !s.stop.is_empty() {
            fields.insert("stop".into(), json!(s.stop));
        }
        if s.top_k > 0 {
            fields.insert("top_k".into(), json!(s.top_k));
        }
        if s.frequency_penalty != 0.0 {
            fields.insert("frequency_penalty".into(), json!(s.frequency_penalty));
        }
        if s.presence_penalty != 0.0 {
            fields.insert("presence_penalty".into(), json!(s.presence_penalty));
        }
        if let Some(format) = response_format(&s.format)? {
            fields.insert("response_format".into(), format);
        }
    }
    Ok(body)
}

/// OpenAI's `response_format` for an output format (`None` for free text); the server
/// enforces it.
fn response_format(format: &OutputFormat) -> Result<Option<Value>> {
    Ok(match format {
        OutputFormat::Text => None,
        OutputFormat::JsonObject => Some(json!({ "type": "json_object" })),
        OutputFormat::JsonSchema { name, schema } => {
            let schema: Value = serde_json::from_str(schema)
                .map_err(|e| Error::Unservable(format!("the JSON schema is not JSON: {e}")))?;
            Some(json!({
                "type": "json_schema",
                "json_schema": { "name": name, "schema": schema, "strict": true },
            }))
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use lloom_core::{ChatMessage, SamplingParams};

    use super::*;

    fn request(sampling: SamplingParams) -> GenerateRequest {
        GenerateRequest {
            messages: vec![ChatMessage { role: Role::User, content: "Capital?".into() }],
            sampling,
            max_tokens: 16,
            max_input_tokens: None,
            client: None,
        }
    }

    #[test]
    fn penalties_and_the_format_go_upstream_only_when_asked_for() {
        let config = OpenAiConfig::new("http://127.0.0.1:1/v1", "m");
        let plain = request_body(&config, &request(SamplingParams::default())).unwrap();
        for field in ["frequency_penalty", "presence_penalty", "response_format"] {
            assert!(plain.get(field).is_none(), "{field} in {plain}");
        }
        let schema = OutputFormat::JsonSchema {
            name: "capital".into(),
            schema: r#"{"type":"object","required":["city"]}"#.into(),
        };
        let sampling = SamplingParams {
            frequency_penalty: 0.5,
            presence_penalty: -1.0,
            format: schema,
            ..SamplingParams::default()
        };
        let body = request_body(&config, &request(sampling)).unwrap();
        assert_eq!(body["frequency_penalty"], json!(0.5));
        assert_eq!(body["presence_penalty"], json!(-1.0));
        assert_eq!(
            body["response_format"],
            json!({ "type": "json_schema", "json_schema": {
                "name": "capital",
                "schema": { "type": "object", "required": ["city"] },
                "strict": true,
            }})
        );
        let object =
            SamplingParams { format: OutputFormat::JsonObject, ..SamplingParams::default() };
        let body = request_body(&config, &request(object)).unwrap();
        assert_eq!(body["response_format"], json!({ "type": "json_object" }));
    }

    #[test]
    fn a_schema_that_is_not_json_is_unservable() {
        let config = OpenAiConfig::new("http://127.0.0.1:1/v1", "m");
        let format = OutputFormat::JsonSchema { name: "x".into(), schema: "{oops".into() };
        let sampling = SamplingParams { format, ..SamplingParams::default() };
        let err = request_body(&config, &request(sampling)).unwrap_err();
        assert!(matches!(err, Error::Unservable(_)), "{err}");
    }
}

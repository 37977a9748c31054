//! The context length an OpenAI-compatible server gives a request, read from what it reports,
//! so the executor announces the server's real context instead of a guess.
//!
//! Servers report it in different places: vLLM as `max_model_len` in its `/v1/models`
//! entries, hosted routers (OpenRouter, Together) as `context_length`, Lloom's own gateway as
//! `max_context`; llama.cpp's server as `default_generation_settings.n_ctx` in `GET /props`
//! (the context of one slot: `--ctx-size` divided among its `--parallel` slots); LM Studio as
//! `loaded_context_length` in `GET /api/v0/models`, Ollama as `context_length` in
//! `GET /api/ps` (both while the model is loaded). A training or largest possible context
//! (llama.cpp's `n_ctx_train`, LM Studio's `max_context_length`, the `context_length` in
//! Ollama's `/api/show`) is not what a request may use, so it is not read.

use serde_json::Value;

/// The fields of a `/v1/models` entry that hold the context a request may use.
const LISTED_FIELDS: [&str; 4] =
    ["max_model_len", "context_length", "max_context", "context_window"];

/// The context length a `/v1/models` entry reports, if any.
pub(super) fn listed(entry: &Value) -> Option<u32> {
    LISTED_FIELDS.iter().find_map(|field| tokens(entry.get(field)?))
}

/// Reads a context length for a model from what a server endpoint answered.
pub(super) type ReadContext = fn(&Value, &str) -> Option<u32>;

/// The servers' own endpoints (at the server's root) asked in turn when the `/v1/models`
/// entry says nothing, and how each answer is read.
pub(super) const SERVER_ENDPOINTS: [(&str, ReadContext); 3] = [
    ("/props", |props, _| llama_props(props)),
    ("/api/v0/models", lm_studio_models),
    ("/api/ps", ollama_ps),
];

/// The context length llama.cpp's `GET /props` reports (one slot's), if any.
fn llama_props(props: &Value) -> Option<u32> {
    let settings = props.get("default_generation_settings")?;
    tokens(settings.get("n_ctx")?)
}

/// The context length LM Studio's `GET /api/v0/models` reports for `model` while it is
/// loaded, if any.
fn lm_studio_models(listed: &Value, model: &str) -> Option<u32> {
    let models = listed.get("data")?.as_array()?;
    let entry = models.iter().find(|m| m.get("id").and_then(Value::as_str) == Some(model))?;
    tokens(entry.get("loaded_context_length")?)
}

/// The context length Ollama's `GET /api/ps` reports for `model` while it is loaded (named
/// as the OpenAI-compatible API names it; `name` means `name:latest`), if any.
fn ollama_ps(running: &Value, model: &str) -> Option<u32> {
    let latest = format!("{model}:latest");
    let named = |m: &&Value| {
        ["name", "model"]
            .iter()
            .filter_map(|key| m.get(key)?.as_str())
            .any(|name| name == model || (!model.contains(':') && name == latest))
    };
    let entry = running.get("models")?.as_array()?.iter().find(named)?;
    tokens(entry.get("context_length")?)
}

/// The root of a server whose API is at `base_url` (`…/v1`), where llama.cpp serves `/props`;
/// `None` for a base URL of another shape.
pub(super) fn server_root(base_url: &str) -> Option<&str> {
    base_url.strip_suffix("/v1").filter(|root| !root.is_empty())
}

/// A positive token count that fits `u32`.
fn tokens(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_servers_field_is_read_and_odd_values_are_not() {
        assert_eq!(listed(&json!({"id": "m", "max_model_len": 32768})), Some(32_768));
        assert_eq!(listed(&json!({"id": "m", "context_length": 131072})), Some(131_072));
        assert_eq!(listed(&json!({"id": "m", "max_context": 8192})), Some(8192));
        assert_eq!(listed(&json!({"id": "m", "context_window": 4096})), Some(4096));
        for odd in [json!(0), json!(-1), json!("8192"), json!(1u64 << 40), json!(null)] {
            assert_eq!(listed(&json!({"id": "m", "max_model_len": odd})), None, "{odd}");
        }
        // A training context is not a request's.
        assert_eq!(listed(&json!({"id": "m", "meta": {"n_ctx_train": 8192}})), None);
        let props = json!({"default_generation_settings": {"n_ctx": 2048}, "total_slots": 4});
        assert_eq!(llama_props(&props), Some(2048));
        assert_eq!(llama_props(&json!({"n_ctx": 2048})), None);
        let lm_studio = json!({"object": "list", "data": [
            {"id": "other", "loaded_context_length": 2048},
            {"id": "m", "state": "loaded", "max_context_length": 131072, "loaded_context_length": 8192},
            {"id": "idle", "state": "not-loaded", "max_context_length": 32768},
        ]});
        assert_eq!(lm_studio_models(&lm_studio, "m"), Some(8192));
        assert_eq!(lm_studio_models(&lm_studio, "idle"), None, "not loaded: not known");
        assert_eq!(lm_studio_models(&lm_studio, "absent"), None);
        let ollama = json!({"models": [
            {"name": "qwen2.5:0.5b", "model": "qwen2.5:0.5b", "size_vram": 0, "context_length": 2048},
            {"name": "llama3:latest", "model": "llama3:latest", "context_length": 8192},
        ]});
        assert_eq!(ollama_ps(&ollama, "qwen2.5:0.5b"), Some(2048));
        assert_eq!(ollama_ps(&ollama, "llama3"), Some(8192), "no tag: the latest");
        assert_eq!(ollama_ps(&ollama, "llama3:8b"), None);
        assert_eq!(ollama_ps(&json!({"models": []}), "llama3"), None, "not loaded");
    }

    #[test]
    fn props_are_asked_at_the_servers_root() {
        assert_eq!(server_root("http://127.0.0.1:8080/v1"), Some("http://127.0.0.1:8080"));
        assert_eq!(
            server_root("https://api.example/openai/v1"),
            Some("https://api.example/openai")
        );
        assert_eq!(server_root("http://127.0.0.1:8080/api"), None);
        assert_eq!(server_root("/v1"), None);
    }
}

//! Answers constrained to JSON (OpenAI's `response_format`) and the repetition penalties, with
//! the embedded engine and the real default model.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;

use lloom_core::answer_format::check_answer_format;
use lloom_core::{FinishReason, OutputFormat};
use lloom_executor::Error;
use lloom_executor::backend::llama::{EngineConfig, LlamaEngine};
use lloom_executor::backend::{Backend, GenerateRequest, GenerationEvent};
use lloom_executor::models::DEFAULT_MODEL;
use serde_json::Value;

mod common;
use common::{FRANCE, ask, model_path};

const CAPITAL_SCHEMA: &str = r#"{
    "type": "object",
    "properties": { "capital": { "type": "string", "maxLength": 40 } },
    "required": ["capital"],
    "additionalProperties": false
}"#;

fn engine(max_sequences: u32) -> Arc<LlamaEngine> {
    let config = EngineConfig { max_sequences, ..EngineConfig::default() };
    Arc::new(LlamaEngine::load(DEFAULT_MODEL.name, &model_path(), config).unwrap())
}

fn with_format(mut request: GenerateRequest, format: OutputFormat) -> GenerateRequest {
    request.sampling.format = format;
    request
}

fn capital_schema() -> OutputFormat {
    OutputFormat::JsonSchema { name: "capital".into(), schema: CAPITAL_SCHEMA.into() }
}

async fn answer(engine: &LlamaEngine, request: GenerateRequest) -> (String, FinishReason) {
    let (text, usage) = engine.generate(request).unwrap().collect().await.unwrap();
    eprintln!("answer: {text:?} {usage:?}");
    (text, usage.finish)
}

#[tokio::test]
async fn an_answer_held_to_a_schema_is_json_the_schema_accepts() {
    let engine = engine(1);
    let question = format!("{FRANCE} Answer in JSON.");
    let (text, finish) =
        answer(&engine, with_format(ask(&question, 96, &[]), capital_schema())).await;
    assert_eq!(finish, FinishReason::Stop, "the grammar ends the answer: {text:?}");
    let json: Value = serde_json::from_str(&text).unwrap();
    let object = json.as_object().unwrap();
    assert_eq!(object.len(), 1, "{json}");
    let capital = object["capital"].as_str().unwrap();
    assert!(capital.chars().count() <= 40, "{capital:?}");

    // Any object: this small model goes on adding keys until max_tokens, so the answer is an
    // object or, cut off, the start of one (a parse that fails only at the end of input).
    let (text, finish) =
        answer(&engine, with_format(ask(&question, 96, &[]), OutputFormat::JsonObject)).await;
    assert!(text.starts_with('{'), "{text:?}");
    match serde_json::from_str::<Value>(&text) {
        Ok(json) => assert!(json.is_object() && finish == FinishReason::Stop, "{json}"),
        Err(e) => assert!(e.is_eof() && finish == FinishReason::Length, "{e}: {text:?}"),
    }

    // Unconstrained, the same question gets prose.
    let (text, _) = answer(&engine, ask(&question, 96, &[])).await;
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text:?}");
}

/// Schemas that use what the answer check reads (bounds, lengths, enums, tuples, `$ref`s,
/// alternatives) and what it leaves to the grammar (a pattern, number bounds).
const CHECKED_SCHEMAS: [&str; 4] = [
    r#"{"type": "object", "properties": {
        "country": {"enum": ["France", "Spain"]},
        "population_millions": {"type": "integer", "minimum": 1, "maximum": 99},
        "cities": {"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 12},
                   "minItems": 1, "maxItems": 3}
    }, "required": ["country", "population_millions", "cities"], "additionalProperties": false}"#,
    r##"{"$defs": {"city": {"type": "object", "properties": {"name": {"type": "string",
        "maxLength": 20}, "capital": {"type": "boolean"}}, "required": ["name", "capital"]}},
        "type": "array", "items": {"$ref": "#/$defs/city"}, "maxItems": 2}"##,
    r#"{"type": "array", "prefixItems": [{"type": "string", "pattern": "^[A-Z][a-z]+$"},
        {"type": "number", "minimum": 0}, {"anyOf": [{"type": "null"}, {"type": "integer"}]}]}"#,
    r#"{"oneOf": [{"type": "object", "properties": {"capital": {"const": "Paris"}},
        "required": ["capital"]}, {"type": "string", "maxLength": 8}]}"#,
];

#[tokio::test]
async fn every_answer_the_grammar_holds_passes_the_clients_schema_check() {
    let engine = engine(1);
    let question = format!("{FRANCE} Answer in JSON.");
    for schema in CHECKED_SCHEMAS {
        let format = OutputFormat::JsonSchema { name: "check".into(), schema: schema.into() };
        let request = with_format(ask(&question, 128, &[]), format);
        let sampling = request.sampling.clone();
        let (text, finish) = answer(&engine, request).await;
        // An honest executor never fails the check clients and executors run on its answer.
        check_answer_format(&sampling, finish, &text)
            .unwrap_or_else(|e| panic!("{text:?} against {schema}: {e}"));
        if finish == FinishReason::Stop {
            serde_json::from_str::<Value>(&text).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constrained_and_free_answers_batched_together_answer_as_alone() {
    let engine = engine(2);
    let constrained = || with_format(ask(FRANCE, 48, &[]), capital_schema());
    let free = || ask(FRANCE, 48, &[]);
    let alone = (answer(&engine, constrained()).await, answer(&engine, free()).await);
    let together = tokio::join!(answer(&engine, constrained()), answer(&engine, free()));
    assert_eq!(together, alone);
}

#[tokio::test]
async fn a_schema_that_cannot_become_a_grammar_fails_before_it_is_queued() {
    let engine = engine(1);
    let bad = OutputFormat::JsonSchema { name: "bad".into(), schema: r#"{"type": 12}"#.into() };
    let err = engine.generate(with_format(ask(FRANCE, 8, &[]), bad)).unwrap_err();
    assert!(matches!(err, Error::Unservable(_)), "{err}");
    assert!(err.to_string().contains("JSON schema"), "{err}");
}

#[tokio::test]
async fn a_grammar_llama_cpp_will_not_load_is_refused_as_the_requests_fault() {
    let engine = engine(1);
    // Converted, but past llama.cpp's limit on repetitions when the grammar loads.
    let schema = r#"{"type": "array", "items": {"type": "integer"}, "minItems": 100000}"#;
    let huge = OutputFormat::JsonSchema { name: "huge".into(), schema: schema.into() };
    let mut generation = engine.generate(with_format(ask(FRANCE, 8, &[]), huge)).unwrap();
    match generation.events.recv().await {
        Some(GenerationEvent::Refused(message)) => {
            assert!(message.contains("grammar does not load"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(generation.events.recv().await, None);
    // The engine goes on serving.
    let (text, _) = answer(&engine, ask(FRANCE, 16, &[])).await;
    assert!(text.contains("Paris"), "{text:?}");
}

#[tokio::test]
async fn a_frequency_penalty_keeps_the_answer_from_repeating_itself() {
    let engine = engine(1);
    let prompt = "Write the word apple twenty times, separated by spaces.";
    let count = |text: &str| text.to_lowercase().matches("apple").count();
    let (plain, _) = answer(&engine, ask(prompt, 48, &[])).await;
    let mut penalised = ask(prompt, 48, &[]);
    penalised.sampling.frequency_penalty = 2.0;
    penalised.sampling.presence_penalty = 1.0;
    let (fewer, _) = answer(&engine, penalised).await;
    assert!(count(&fewer) < count(&plain), "{plain:?} / {fewer:?}");
}

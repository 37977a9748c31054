//! The gateway with the official `openai` Python package and the real default model: list
//! models, one completion, one streamed completion, structured output, a tool call, and the
//! errors (an unknown model, a wrong key, a spent budget, schemas the executor refuses).
//!
//! The package lives in a virtual environment that `scripts/test.sh` creates
//! (`~/.cache/lloom/venv`, or `LLOOM_OPENAI_PYTHON`). Without it the test is skipped, unless
//! `LLOOM_REQUIRE_OPENAI` is set (as it is in CI), in which case it fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lloom_client::gateway::{ApiKeys, GatewayConfig, SpendLedger, serve};
use lloom_client::{Client, ClientConfig};
use lloom_core::network::NetworkConfig;
use lloom_core::{NodeKey, U256};
use lloom_executor::backend::llama::EngineConfig;
use lloom_executor::models::{DEFAULT_MODEL, ModelChoice, prepare};
use lloom_executor::{ExecutorConfig, ExecutorNode};
use lloom_validator::{Validator, ValidatorConfig};

const SCRIPT: &str = r#"
import json, sys
import openai
client = openai.OpenAI(base_url=sys.argv[1], api_key=sys.argv[3])
model = sys.argv[2]
ask = [{"role": "user", "content": "What is the capital of France?"}]
models = [m.id for m in client.models.list()]
retrieved = client.models.retrieve(model).id
done = client.chat.completions.create(model=model, messages=ask, max_tokens=48, temperature=0)
parts, usage = [], None
for chunk in client.chat.completions.create(
    model=model, messages=ask, max_tokens=48, temperature=0, stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage.completion_tokens
# Structured output: the answer is held to a JSON Schema.
schema = {"type": "object", "properties": {"capital": {"type": "string", "maxLength": 40}},
          "required": ["capital"], "additionalProperties": False}
structured = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": ask[0]["content"] + " Answer in JSON."}],
    max_tokens=64, temperature=0, frequency_penalty=0.1,
    response_format={"type": "json_schema",
                     "json_schema": {"name": "capital", "schema": schema, "strict": True}},
)
# Tool calling: the answer is held to the tools' schema, then read back into tool_calls.
weather = [{"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                   "required": ["city"], "additionalProperties": False}}}]
called = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    max_tokens=64, temperature=0, tools=weather, tool_choice="required",
)
call = called.choices[0].message.tool_calls[0]
# Several calls a turn when asked: the grammar holds the answer to a list of calls.
several = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "What is the weather in Paris and in Rome?"}],
    max_tokens=320, temperature=0, tools=weather, tool_choice="required", parallel_tool_calls=True,
)
parallel = [several.choices[0].finish_reason,
            len(several.choices[0].message.tool_calls or []) >= 1,
            all(c.function.name == "get_weather" for c in several.choices[0].message.tool_calls or [])]
# With tool_choice "auto" the model may reply in words instead: the reply streams as it is
# generated (it is not held back until the JSON it is written in is whole).
joke = [{"role": "user", "content": "Tell me a joke."}]
auto_parts, auto_calls = [], 0
for chunk in client.chat.completions.create(
    model=model, messages=joke, max_tokens=48, temperature=0, tools=weather,
    tool_choice="auto", stream=True,
):
    if chunk.choices and chunk.choices[0].delta.content:
        auto_parts.append(chunk.choices[0].delta.content)
    if chunk.choices and chunk.choices[0].delta.tool_calls:
        auto_calls += 1
auto_whole = client.chat.completions.create(
    model=model, messages=joke, max_tokens=48, temperature=0, tools=weather, tool_choice="auto")
auto_reply = [auto_calls, len(auto_parts), "".join(auto_parts),
              auto_whole.choices[0].message.content]
tool_call = [called.choices[0].finish_reason, call.function.name,
             sorted(json.loads(call.function.arguments).keys()), call.id.startswith("call_")]
# A schema llama.cpp cannot compile: the executor refuses it (signed), the gateway answers 400,
# and the executor is not cooled down for the request's fault: the next request is answered.
try:
    client.chat.completions.create(
        model=model, messages=ask, max_tokens=8,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}},
    )
    uncompilable = None
except openai.BadRequestError as e:
    uncompilable = [e.status_code, e.code, "JSON schema" in e.message]
# One that converts but that llama.cpp will not load (too many repetitions): refused likewise.
try:
    client.chat.completions.create(
        model=model, messages=ask, max_tokens=8,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "array", "items": {"type": "integer"}, "minItems": 100000}}},
    )
    unloadable = None
except openai.BadRequestError as e:
    unloadable = [e.status_code, e.code, "grammar does not load" in e.message]
# A prompt longer than the model's context: OpenAI's own error code, which SDK users check.
try:
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "word " * 3000}], max_tokens=8)
    too_long = None
except openai.BadRequestError as e:
    too_long = [e.status_code, e.code, e.param]
# Without max_tokens, an answer may use all the context the prompt leaves (as with OpenAI), even
# when the prompt ends near the context's end.
context = getattr(client.models.retrieve(model), "max_context")
near_end = client.chat.completions.create(
    model=model, temperature=0, messages=[{"role": "user", "content": "word " * (context - 140)
                                            + "\nWrite the word 'word' many more times:"}])
fitted = [near_end.choices[0].finish_reason, near_end.usage.prompt_tokens,
          near_end.usage.completion_tokens, context]
after_uncompilable = client.chat.completions.create(
    model=model, messages=ask, max_tokens=4).choices[0].finish_reason
try:
    client.chat.completions.create(model="no-such-model", messages=ask)
    missing = None
except openai.NotFoundError as e:
    missing = e.status_code
# The request's own routing options, through the SDK's extra_body.
routed = client.chat.completions.create(
    model=model, messages=ask, max_tokens=4,
    extra_body={"lloom": {"strategy": "cheapest", "max_price": "2", "min_context": 512}},
).choices[0].finish_reason
try:
    client.chat.completions.create(
        model=model, messages=ask, max_tokens=4, extra_body={"lloom": {"max_price": 1}})
    priced_out = None
except openai.NotFoundError as e:
    priced_out = [e.status_code, e.code]
try:
    openai.OpenAI(base_url=sys.argv[1], api_key="wrong-key-0123456789").models.list()
    wrong_key = None
except openai.AuthenticationError as e:
    wrong_key = e.status_code
# A key with a budget of 1 wei: its first answer spends it, its next request gets a 402, which
# the SDK does not retry (it would retry a 429).
budgeted = openai.OpenAI(base_url=sys.argv[1], api_key=sys.argv[4])
budgeted.chat.completions.create(model=model, messages=ask, max_tokens=4)
try:
    budgeted.chat.completions.create(model=model, messages=ask, max_tokens=4)
    over_budget = None
except openai.APIStatusError as e:
    over_budget = [e.status_code, e.code]
import urllib.request
metrics = urllib.request.urlopen(sys.argv[1][: -len("/v1")] + "/metrics").read().decode()
refused = [line.split()[-1] for line in metrics.splitlines()
           if line.startswith('lloom_gateway_key_completions_total{key="budgeted",outcome="error"}')]
print(json.dumps({
    "models": models,
    "retrieved": retrieved,
    "text": done.choices[0].message.content,
    "finish": done.choices[0].finish_reason,
    "completion_tokens": done.usage.completion_tokens,
    "streamed": "".join(parts),
    "streamed_usage": usage,
    "structured": json.loads(structured.choices[0].message.content),
    "structured_finish": structured.choices[0].finish_reason,
    "tool_call": tool_call,
    "parallel": parallel,
    "auto_reply": auto_reply,
    "uncompilable": uncompilable,
    "unloadable": unloadable,
    "after_uncompilable": after_uncompilable,
    "too_long": too_long,
    "fitted": fitted,
    "routed": routed,
    "priced_out": priced_out,
    "missing_status": missing,
    "wrong_key_status": wrong_key,
    "over_budget": over_budget,
    "over_budget_requests": refused,
}))
"#;

fn python() -> Option<PathBuf> {
    let path = std::env::var_os("LLOOM_OPENAI_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs_home().join(".cache/lloom/venv/bin/python"));
    let ok = std::process::Command::new(&path)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(path);
    }
    assert!(
        std::env::var_os("LLOOM_REQUIRE_OPENAI").is_none(),
        "LLOOM_REQUIRE_OPENAI is set but {} cannot import openai",
        path.display()
    );
    eprintln!("skipped: no Python with the openai package (run ./scripts/test.sh)");
    None
}

fn dirs_home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default()
}

/// The key the gateway of these tests asks for.
const API_KEY: &str = "test-key-0123456789abcdef";
/// A second key, `budgeted`, that may spend 1 wei.
const BUDGETED_KEY: &str = "budget-key-0123456789abcdef";

/// A validator, an executor with the real engine, a client and its gateway (asking for
/// [`API_KEY`]); returns the gateway's base URL and the validator's addresses (the nodes live
/// as long as the runtime).
async fn gateway_over_the_real_model() -> (String, Vec<lloom_core::network::Multiaddr>) {
    let choice = ModelChoice {
        path: None,
        name: None,
        price_per_input_token: U256::from(1),
        price_per_output_token: U256::from(2),
        engine: EngineConfig { n_ctx: 2048, max_sequences: 2, ..EngineConfig::default() },
    };
    let model = tokio::task::spawn_blocking(move || prepare(&choice, &())).await.unwrap().unwrap();
    // The engine holds answers to JSON itself, and says so.
    assert!(model.offer.has_capability(lloom_core::announce::CAPABILITY_JSON), "{:?}", model.offer);
    let vconfig = ValidatorConfig {
        network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
        ..ValidatorConfig::default()
    };
    let validator = Validator::spawn(&NodeKey::generate(), vconfig).await.unwrap();
    let bootstrap = validator.listen_addrs().await.unwrap();
    let bootstrap_copy = bootstrap.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ExecutorConfig::new(dir.path().to_owned());
    config.network = NetworkConfig { bootstrap: bootstrap.clone(), ..NetworkConfig::local() };
    let _executor = ExecutorNode::start(&NodeKey::generate(), vec![model], config).await.unwrap();
    let client = Client::connect(NodeKey::generate(), ClientConfig::default().bootstrap(bootstrap))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.refresh().await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "the executor never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let budgeted = ApiKeys::parse(&format!("budgeted {BUDGETED_KEY} 1")).unwrap();
    let api_keys = ApiKeys::single(API_KEY).unwrap().merge(budgeted).unwrap();
    let ledger = SpendLedger::open(&dir.path().join("gateway-spend.redb")).unwrap();
    let config = GatewayConfig {
        api_keys,
        spend_ledger: Some(std::sync::Arc::new(ledger)),
        ..Default::default()
    };
    tokio::spawn(serve(client, listener, config, std::future::pending()));
    tokio::spawn(async move {
        // Keep the nodes alive until the test's runtime ends.
        let _keep = (validator, _executor, dir);
        std::future::pending::<()>().await;
    });
    (base_url, bootstrap_copy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_works_against_the_gateway() {
    let Some(python) = python() else { return };
    let (base_url, _) = gateway_over_the_real_model().await;

    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", SCRIPT, &base_url, DEFAULT_MODEL.name, API_KEY, BUDGETED_KEY])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["models"], serde_json::json!([DEFAULT_MODEL.name]));
    assert_eq!(report["retrieved"], DEFAULT_MODEL.name);
    assert!(report["text"].as_str().unwrap().contains("Paris"), "{report}");
    assert!(report["completion_tokens"].as_u64().unwrap() > 0);
    // Greedy decoding: the stream carries the same answer.
    assert_eq!(report["streamed"], report["text"], "{report}");
    assert_eq!(report["streamed_usage"], report["completion_tokens"]);
    let structured = report["structured"].as_object().unwrap();
    assert_eq!(structured.keys().collect::<Vec<_>>(), ["capital"], "{report}");
    assert!(structured["capital"].is_string(), "{report}");
    assert_eq!(report["structured_finish"], "stop");
    assert_eq!(
        report["tool_call"],
        serde_json::json!(["tool_calls", "get_weather", ["city"], true]),
        "{report}"
    );
    assert_eq!(report["parallel"], serde_json::json!(["tool_calls", true, true]), "{report}");
    // Asked for a joke, the default model replies rather than call the weather tool (at
    // temperature 0), and its reply reaches the SDK in several chunks, the same text as the
    // reply not streamed.
    let auto = &report["auto_reply"];
    assert_eq!(auto[0], 0, "no tool call: {report}");
    assert!(auto[1].as_u64().unwrap() > 1, "the reply came in pieces: {report}");
    assert!(!auto[2].as_str().unwrap().is_empty(), "{report}");
    assert_eq!(auto[2], auto[3], "{report}");
    assert_eq!(report["uncompilable"], serde_json::json!([400, "refused_by_executor", true]));
    assert_eq!(report["unloadable"], serde_json::json!([400, "refused_by_executor", true]));
    assert_eq!(report["after_uncompilable"], "length", "{report}");
    assert_eq!(
        report["too_long"],
        serde_json::json!([400, "context_length_exceeded", "messages"]),
        "{report}"
    );
    // The prompt alone is most of the context (beyond what six bytes a token estimates, so
    // it is asked again with the count the engine's refusal states): the answer was given
    // the rest, and no more. (This model answers such a prompt at once, with no tokens.)
    let fitted = report["fitted"].as_array().unwrap();
    let (finish, prompt, completion, context) = (
        fitted[0].as_str().unwrap(),
        fitted[1].as_u64().unwrap(),
        fitted[2].as_u64().unwrap(),
        fitted[3].as_u64().unwrap(),
    );
    assert!(prompt > context - 200, "{report}");
    match finish {
        "length" => assert_eq!(prompt + completion, context, "ran to the context's end: {report}"),
        "stop" => assert!(prompt + completion <= context, "{report}"),
        other => panic!("finish {other}: {report}"),
    }
    assert_eq!(report["routed"], "length", "{report}");
    assert_eq!(report["priced_out"], serde_json::json!([404, "no_offer_within_limits"]));
    assert_eq!(report["missing_status"], 404);
    assert_eq!(report["wrong_key_status"], 401);
    assert_eq!(report["over_budget"], serde_json::json!([402, "insufficient_quota"]));
    assert_eq!(report["over_budget_requests"], serde_json::json!(["1"]), "no retry of a 402");
}

/// The executor's HTTP backend against a real OpenAI-compatible server (this gateway): a
/// second executor resells the model through HTTP, and a client gets a verified answer from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_serves_through_the_http_backend_in_front_of_a_real_server() {
    use lloom_executor::backend::openai::{OpenAiBackend, OpenAiConfig};
    use lloom_executor::serve::ServedModel;

    let (base_url, bootstrap) = gateway_over_the_real_model().await;
    let mut config = OpenAiConfig::new(base_url, DEFAULT_MODEL.name);
    config.served_model = "smol-over-http".into();
    // Without the key, the server refuses and the probe says so.
    let keyless = OpenAiBackend::new(config.clone()).unwrap();
    let refused = keyless.probe().await.unwrap_err().to_string();
    assert!(refused.contains("401"), "{refused}");
    config.api_key = Some(API_KEY.into());
    let backend = OpenAiBackend::new(config).unwrap();
    // The gateway lists the context its executors give a request (`max_context`).
    let server = backend.probe().await.unwrap();
    assert_eq!(server.context_length, Some(1024));
    let offer = lloom_core::ModelOffer {
        model: "smol-over-http".into(),
        context_length: 1024,
        price_per_input_token: U256::from(5),
        price_per_output_token: U256::from(9),
        weights_sha256: None,
        quantization: None,
        capabilities: vec!["chat".into()],
    };
    let dir = tempfile::tempdir().unwrap();
    let mut exec_config = ExecutorConfig::new(dir.path().to_owned());
    exec_config.network = NetworkConfig { bootstrap: bootstrap.clone(), ..NetworkConfig::local() };
    let model = ServedModel { offer, backend: std::sync::Arc::new(backend) };
    let _reseller =
        ExecutorNode::start(&NodeKey::generate(), vec![model], exec_config).await.unwrap();

    let client = Client::connect(NodeKey::generate(), ClientConfig::default().bootstrap(bootstrap))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.refresh().await.unwrap() < 2 {
        assert!(Instant::now() < deadline, "the reseller never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut request =
        lloom_client::ChatRequest::user("smol-over-http", "What is the capital of France?");
    request.max_tokens = 48;
    let receipt = client.chat(request.clone()).await.unwrap().collect().await.unwrap();
    assert!(receipt.text.contains("Paris"), "{:?}", receipt.text);
    assert!(receipt.input_tokens > 5, "usage came from the server: {receipt:?}");
    assert_eq!(receipt.cost, U256::from(receipt.input_tokens * 5 + receipt.output_tokens * 9));

    // The HTTP backend passes the answer's format on: the server behind it keeps to the schema.
    request.sampling.format = lloom_core::OutputFormat::JsonSchema {
        name: "capital".into(),
        schema: r#"{"type":"object","properties":{"capital":{"type":"string","maxLength":40}},
            "required":["capital"],"additionalProperties":false}"#
            .into(),
    };
    let receipt = client.chat(request).await.unwrap().collect().await.unwrap();
    let answer: serde_json::Value = serde_json::from_str(&receipt.text).unwrap();
    assert!(answer["capital"].is_string() && answer.as_object().unwrap().len() == 1, "{answer}");
}

//! Tool calling through the gateway over real HTTP (scripted backends answer the JSON the
//! tool-call schema holds them to): one call or several, streamed or not, read back into
//! OpenAI's `tool_calls`, and the turns after them shown to the model.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use lloom_client::gateway::GatewayConfig;
use lloom_executor::backend::scripted::Script;
use serde_json::{Value, json};

mod gateway_net;
mod http;

use gateway_net::{MODEL, chat, network, network_priced};
use http::{http, json_body, sse_events};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_come_back_as_openai_tool_calls_streamed_or_not() {
    // The executor's answer is the JSON the tool-call schema holds it to (with the embedded
    // engine, its grammar enforces it; `gateway_openai` checks that with the real model).
    let answer = r#"{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}"#;
    let net = network(vec![Script::answer(MODEL, answer)], GatewayConfig::default()).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "The weather in a city now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"]}}}]);
    let ask = json!({"tools": tools, "tool_choice": "required"});
    let (status, headers, body) = http(net.addr, "POST", "/v1/chat/completions", &chat(&ask)).await;
    assert_eq!(status, 200, "{body}");
    let v = json_body(&body);
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(
        (call["type"].clone(), call["function"]["name"].clone()),
        (json!("function"), json!("get_weather"))
    );
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    let id = call["id"].as_str().unwrap();
    let digest = v["lloom"]["request_digest"].as_str().unwrap();
    assert_eq!(id, format!("call_{}", &digest[2..26]));
    // What was signed is the JSON as generated; the receipt's content hash is of that text.
    assert_eq!(v["lloom"]["signed_text"], answer);
    assert!(headers.contains("x-lloom-request-digest: 0x"), "{headers}");

    let streamed = json!({"tools": tools, "stream": true});
    let (status, _, raw) = http(net.addr, "POST", "/v1/chat/completions", &chat(&streamed)).await;
    assert_eq!(status, 200, "{raw}");
    let events = sse_events(&raw);
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    // No JSON text is streamed as content: the call arrives whole, then the finish.
    assert!(
        events
            .iter()
            .all(|e| e["choices"][0]["delta"]["content"].as_str().unwrap_or("").is_empty()),
        "{raw}"
    );
    let call = &events[1]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(
        (call["index"].clone(), call["function"]["name"].clone()),
        (json!(0), json!("get_weather"))
    );
    assert_eq!(events[2]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(events[2]["lloom"]["signed_text"], answer);

    // The conversation goes on with the call and its result, which the model is shown.
    let follow_up = json!({"tools": tools, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": id, "content": "18 °C, sunny"},
    ]});
    let (status, _, body) = http(net.addr, "POST", "/v1/chat/completions", &chat(&follow_up)).await;
    assert_eq!(status, 200, "{body}");
    // Without tools the same JSON is plain content.
    let (status, _, body) = http(net.addr, "POST", "/v1/chat/completions", &chat(&json!({}))).await;
    assert_eq!(
        (status, json_body(&body)["choices"][0]["message"]["content"].clone()),
        (200, json!(answer))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_tool_calls_come_back_in_order_with_their_own_ids_and_indexes() {
    let answer = concat!(
        r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, "#,
        r#"{"name": "get_weather", "arguments": {"city": "Rome"}}]}"#
    );
    let net = network(vec![Script::answer(MODEL, answer)], GatewayConfig::default()).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let ask = json!({"tools": tools, "parallel_tool_calls": true});
    let (status, _, body) = http(net.addr, "POST", "/v1/chat/completions", &chat(&ask)).await;
    assert_eq!(status, 200, "{body}");
    let v = json_body(&body);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    let cities: Vec<Value> = calls
        .iter()
        .map(|c| serde_json::from_str::<Value>(c["function"]["arguments"].as_str().unwrap()))
        .map(|a| a.unwrap()["city"].clone())
        .collect();
    assert_eq!(cities, [json!("Paris"), json!("Rome")]);
    let digest = v["lloom"]["request_digest"].as_str().unwrap();
    let id = format!("call_{}", &digest[2..26]);
    assert_eq!(
        (calls[0]["id"].as_str(), calls[1]["id"].as_str()),
        (Some(&*id), Some(&*format!("{id}_1")))
    );

    let streamed = json!({"tools": tools, "parallel_tool_calls": true, "stream": true});
    let (status, _, raw) = http(net.addr, "POST", "/v1/chat/completions", &chat(&streamed)).await;
    assert_eq!(status, 200, "{raw}");
    let events = sse_events(&raw);
    let calls = events[1]["choices"][0]["delta"]["tool_calls"].as_array().unwrap();
    let indexes: Vec<Value> = calls.iter().map(|c| c["index"].clone()).collect();
    assert_eq!(indexes, [json!(0), json!(1)]);

    // The next turn shows the model both calls as one list, with both results.
    let follow_up = json!({"tools": tools, "parallel_tool_calls": true, "messages": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": null, "tool_calls": v["choices"][0]["message"]["tool_calls"]},
        {"role": "tool", "tool_call_id": id, "content": "18 °C"},
        {"role": "tool", "tool_call_id": format!("{id}_1"), "content": "21 °C"},
    ]});
    let (status, _, body) = http(net.addr, "POST", "/v1/chat/completions", &chat(&follow_up)).await;
    assert_eq!(status, 200, "{body}");
}

/// The weather tool of these tests, with `tool_choice: "auto"` (a call or a reply).
fn weather_or_reply() -> Value {
    json!({"tools": [{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "auto", "stream": true, "lloom": {"strategy": "cheapest"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_a_request_with_tools_streams_its_words_as_they_come() {
    // The scripted backend sends a word a token: `{"response":`, ` "Paris`, ` is`, ...
    let answer = r#"{"response": "Paris is \"the\" capital.\nYes."}"#;
    let reply = "Paris is \"the\" capital.\nYes.";
    // The cheapest executor fails after its first token, before any of the reply: the answer
    // comes from the other one as if it were the first.
    let failing = Script { fail_after: Some(1), ..Script::answer(MODEL, answer) };
    let scripts = vec![(failing, 1), (Script::answer(MODEL, answer), 3)];
    let net = network_priced(scripts, GatewayConfig::default()).await;

    let (status, _, raw) =
        http(net.addr, "POST", "/v1/chat/completions", &chat(&weather_or_reply())).await;
    assert_eq!(status, 200, "{raw}");
    let events = sse_events(&raw);
    assert!(events.iter().all(|e| e.get("error").is_none()), "{raw}");
    let words: Vec<&str> = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .filter(|w| !w.is_empty())
        .collect();
    assert_eq!(words, ["Paris", " is", " \"the\"", " capital.\nYes."], "{raw}");
    let last = events.iter().rev().find(|e| !e["choices"][0]["finish_reason"].is_null());
    let last = last.unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["lloom"]["signed_text"], answer);
    assert!(events.iter().all(|e| e["choices"][0]["delta"]["tool_calls"].is_null()));

    // Not streamed, the same reply.
    let whole = json!({"tools": weather_or_reply()["tools"], "tool_choice": "auto"});
    let (status, _, body) = http(net.addr, "POST", "/v1/chat/completions", &chat(&whole)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_body(&body)["choices"][0]["message"]["content"], reply);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_cut_off_after_its_first_words_ends_in_an_error_event() {
    let answer = r#"{"response": "Paris is the capital."}"#;
    let failing = Script { fail_after: Some(2), ..Script::answer(MODEL, answer) };
    let net = network(vec![failing], GatewayConfig::default()).await;
    let (status, _, raw) =
        http(net.addr, "POST", "/v1/chat/completions", &chat(&weather_or_reply())).await;
    assert_eq!(status, 200, "{raw}");
    // The stream ends at the error, without `[DONE]`.
    let events: Vec<Value> =
        raw.lines().filter_map(|l| l.strip_prefix("data: ")).map(json_body).collect();
    let streamed: Vec<&str> =
        events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(streamed.concat(), "Paris", "{raw}");
    assert!(events.last().unwrap().get("error").is_some(), "{raw}");
}

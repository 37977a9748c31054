//! The OpenAI-compatible gateway over real HTTP, in front of real validators and executors
//! (scripted backends): completions with receipt headers, SSE streaming, `/v1/models`,
//! `/health`, and an OpenAI-style JSON error with the right status for every kind of bad input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use lloom_client::ClientConfig;
use lloom_client::gateway::{ApiKeys, BudgetPeriod, GatewayConfig, SpendLedger};
use lloom_core::U256;
use lloom_core::network::test_utils::WAIT;
use lloom_executor::backend::scripted::Script;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod gateway_net;
mod http;

use gateway_net::{MODEL, chat, network, network_with};
use http::{header, http, http_with, json_body, sse_events};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_models_and_health_follow_the_openai_shapes() {
    let net = network(vec![Script::answer(MODEL, "Paris it is.")], GatewayConfig::default()).await;

    let (status, headers, body) =
        http(net.addr, "POST", "/v1/chat/completions", &chat(&json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let v = json_body(&body);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Paris it is.");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 10);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], 13);
    assert_eq!(v["lloom"]["cost_wei"], (10 * 2 + 3 * 3).to_string());
    assert!(headers.contains("x-lloom-executor: 0x"), "{headers}");
    assert!(headers.contains("x-lloom-request-digest: 0x"), "{headers}");
    assert!(headers.contains("x-lloom-cost-wei: 29"), "{headers}");

    let (status, _, body) = http(net.addr, "GET", "/v1/models", b"").await;
    assert_eq!(status, 200);
    let v = json_body(&body);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], MODEL);
    assert_eq!(v["data"][0]["executors"], 1);

    // What asks for nothing beyond text is served as usual.
    let plain = json!({"response_format": {"type": "text"}, "tools": [], "tool_choice": "none",
        "logprobs": false, "logit_bias": {}, "top_k": 40});
    let (status, _, body) = http(net.addr, "POST", "/v1/chat/completions", &chat(&plain)).await;
    assert_eq!(status, 200, "{body}");
    // JSON mode and penalties are accepted; this scripted backend answers prose all the same,
    // which its executor catches before signing: no verified answer, and what is wrong
    // named. (The engine's own tests and the SDK test over the real model check real JSON
    // answers.)
    let json_mode = json!({"response_format": {"type": "json_object"}, "presence_penalty": 0.5});
    let (status, _, body) = http(net.addr, "POST", "/v1/chat/completions", &chat(&json_mode)).await;
    assert_eq!(status, 502, "{body}");
    let error = &json_body(&body)["error"];
    assert_eq!(error["code"], "no_verified_answer", "{error}");
    assert!(error["message"].as_str().unwrap().contains("not a JSON object"), "{error}");

    // One model, as `client.models.retrieve(id)` asks for it.
    let (status, _, body) = http(net.addr, "GET", &format!("/v1/models/{MODEL}"), b"").await;
    assert_eq!(status, 200, "{body}");
    let v = json_body(&body);
    assert_eq!((v["id"].clone(), v["object"].clone()), (json!(MODEL), json!("model")));
    let (status, _, body) = http(net.addr, "GET", "/v1/models/org/gpt-17", b"").await;
    assert_eq!(status, 404, "{body}");
    let error = &json_body(&body)["error"];
    assert_eq!(error["code"], "model_not_found");
    assert!(error["message"].as_str().unwrap().contains("`org/gpt-17`"), "{error}");

    let (status, _, body) = http(net.addr, "GET", "/health", b"").await;
    assert_eq!((status, json_body(&body)["status"].clone()), (200, json!("ok")));

    let (status, headers, body) = http(net.addr, "GET", "/metrics", b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.contains("content-type: text/plain; version=0.0.4"), "{headers}");
    assert!(body.contains("lloom_gateway_completions_total{outcome=\"ok\"} 2\n"), "{body}");
    assert!(body.contains("lloom_client_executor_successes_total{executor=\"0x"), "{body}");
    assert!(body.contains("lloom_client_executor_ttft_milliseconds{executor=\"0x"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_sends_role_content_finish_usage_and_done() {
    let net = network(vec![Script::answer(MODEL, "Paris it is.")], GatewayConfig::default()).await;
    let body = chat(&json!({"stream": true, "stream_options": {"include_usage": true}}));
    let (status, headers, raw) = http(net.addr, "POST", "/v1/chat/completions", &body).await;
    assert_eq!(status, 200);
    assert!(headers.contains("content-type: text/event-stream"), "{headers}");
    let events = sse_events(&raw);
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Paris it is.");
    let finish = events.iter().find(|e| e["choices"][0]["finish_reason"].is_string()).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(finish["lloom"]["request_digest"].as_str().unwrap().starts_with("0x"));
    let usage = events.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_openai_style_error_with_the_right_status() {
    let config = GatewayConfig { max_body_bytes: 4096, ..GatewayConfig::default() };
    let net = network(vec![Script::answer(MODEL, "x")], config).await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{\"model\": ".to_vec(), 400, "invalid JSON body"),
        ("missing messages", json!({"model": MODEL}).to_string().into_bytes(), 400, "messages"),
        ("unknown model", chat(&json!({"model": "gpt-17"})), 404, "no executor serves `gpt-17`"),
        (
            "oversized body",
            chat(&json!({"pad": "x".repeat(10_000)})),
            413,
            "larger than 4096 bytes",
        ),
        ("temperature out of range", chat(&json!({"temperature": 5.0})), 400, "temperature 5"),
        ("n > 1", chat(&json!({"n": 2})), 400, "only n = 1"),
        ("max_tokens 0", chat(&json!({"max_tokens": 0})), 400, "max_tokens must be at least 1"),
        (
            "a tool that is not a function",
            chat(&json!({"tools": [{"type": "code_interpreter"}]})),
            400,
            "only tools of type `function`",
        ),
        (
            "a tool without a name",
            chat(&json!({"tools": [{"type": "function", "function": {"parameters": {}}}]})),
            400,
            "function.name `` must be",
        ),
        (
            "a tool call asked for with no tools",
            chat(&json!({"tool_choice": "required"})),
            400,
            "no tools are given",
        ),
        (
            "a named tool that is not among the tools",
            chat(&json!({"tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}}})),
            400,
            "`g`, which is not among the tools",
        ),
        (
            "tools with a response format",
            chat(&json!({"tools": [{"type": "function", "function": {"name": "f"}}],
                "response_format": {"type": "json_object"}})),
            400,
            "cannot be combined with tools",
        ),
        (
            "the deprecated functions",
            chat(&json!({"functions": [{"name": "f"}]})),
            400,
            "use `tools`",
        ),
        (
            "an unknown response format",
            chat(&json!({"response_format": {"type": "xml"}})),
            400,
            "the type must be text, json_object or json_schema",
        ),
        (
            "a schema that is not an object",
            chat(&json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "x", "schema": "{}"}}})),
            400,
            "json_schema.schema must be an object",
        ),
        (
            "a schema name with a space",
            chat(&json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "my schema", "schema": {"type": "object"}}}})),
            400,
            "schema name `my schema`",
        ),
        (
            "frequency_penalty out of range",
            chat(&json!({"frequency_penalty": 3.0})),
            400,
            "frequency_penalty 3 not in [-2, 2]",
        ),
        ("logprobs", chat(&json!({"logprobs": true, "top_logprobs": 2})), 400, "logprobs"),
        ("logit_bias", chat(&json!({"logit_bias": {"42": 5}})), 400, "logit_bias"),
        ("top_k of the wrong type", chat(&json!({"top_k": "many"})), 400, "invalid JSON body"),
        (
            "a message without content",
            json!({"model": MODEL, "messages": [{"role": "user"}]}).to_string().into_bytes(),
            400,
            "messages[0].content is required",
        ),
        (
            "an unknown role",
            json!({"model": MODEL, "messages": [{"role": "narrator", "content": "x"}]})
                .to_string()
                .into_bytes(),
            400,
            "role `narrator`",
        ),
    ];
    for (name, body, want, needle) in cases {
        let (status, headers, body) = http(net.addr, "POST", "/v1/chat/completions", &body).await;
        assert_eq!(status, want, "{name}: {body}");
        assert!(headers.contains("content-type: application/json"), "{name}: {headers}");
        let error = &json_body(&body)["error"];
        assert!(error["message"].as_str().unwrap().contains(needle), "{name}: {error}");
        assert!(error["type"].is_string(), "{name}: {error}");
    }
    let (status, _, body) = http(net.addr, "GET", "/v2/nothing", b"").await;
    assert_eq!(status, 404);
    assert_eq!(json_body(&body)["error"]["code"], "unknown_url");
    let (status, _, body) = http(net.addr, "GET", "/v1/key", b"").await;
    assert_eq!((status, json_body(&body)["error"]["code"].clone()), (404, json!("no_api_keys")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_executors_busy_is_a_429_with_retry_after() {
    let full = Script { capacity: 0, ..Script::answer(MODEL, "never") };
    let net = network(vec![full], GatewayConfig::default()).await;
    let sent = Instant::now();
    let (status, headers, body) =
        http(net.addr, "POST", "/v1/chat/completions", &chat(&json!({}))).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(header(&headers, "retry-after"), Some("1"), "{headers}");
    assert_eq!(header(&headers, "retry-after-ms"), Some("1000"), "nothing timed yet: {headers}");
    assert_eq!(json_body(&body)["error"]["code"], "all_executors_busy");

    // The refusal cooled the executor down, and the metrics say so.
    let (_, _, body) = http(net.addr, "GET", "/metrics", b"").await;
    assert!(body.contains("lloom_gateway_completions_total{outcome=\"error\"} 1\n"), "{body}");
    let cooldown = body
        .lines()
        .find(|l| l.starts_with("lloom_client_executor_cooldown_seconds{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no cooldown sample in {body}"));
    assert!(cooldown > 0.0 && cooldown <= 1.0, "the signed retry-after: {body}");
    let sample = |family: &str| {
        body.lines().find(|l| l.starts_with(family)).and_then(|l| l.rsplit(' ').next())
    };
    assert_eq!(sample("lloom_client_executor_busy_total{"), Some("1"), "{body}");
    assert_eq!(sample("lloom_client_executor_failures_total{"), Some("0"), "not a failure: {body}");

    // A new request while the executor cools down is answered 429 without asking it; an
    // OpenAI SDK's retry (`x-stainless-retry-count`), which has waited out its own
    // `retry-after-ms`, asks it again.
    let busy_asked = || async {
        let (_, _, page) = http(net.addr, "GET", "/metrics", b"").await;
        let line = page.lines().find(|l| l.starts_with("lloom_client_executor_busy_total{"));
        line.and_then(|l| l.rsplit(' ').next()).map(str::to_owned)
    };
    let cooling_until = sent + Duration::from_secs(1);
    let (status, _, _) = http(net.addr, "POST", "/v1/chat/completions", &chat(&json!({}))).await;
    assert_eq!(status, 429);
    let asked = busy_asked().await;
    if Instant::now() < cooling_until {
        assert_eq!(asked.as_deref(), Some("1"), "not asked while it cools down");
    }
    let retry = "x-stainless-retry-count: 1\r\n";
    let (status, _, body) =
        http_with(net.addr, "POST", "/v1/chat/completions", retry, &chat(&json!({}))).await;
    assert_eq!(status, 429, "{body}");
    let expected = if asked.as_deref() == Some("1") { "2" } else { "3" };
    assert_eq!(busy_asked().await.as_deref(), Some(expected), "the SDK's retry asked it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_whose_executors_are_gone_for_now_is_a_503_with_retry_after() {
    let refreshing =
        ClientConfig { directory_ttl: Duration::from_millis(100), ..ClientConfig::default() };
    let scripts = vec![(Script::answer(MODEL, "Paris."), 3)];
    let mut net = network_with(scripts, GatewayConfig::default(), refreshing).await;
    let (status, _, body) = http(net.addr, "POST", "/v1/chat/completions", &chat(&json!({}))).await;
    assert_eq!(status, 200, "{body}");

    // The only executor withdraws (a restart, say): the model is unavailable, not unknown, so
    // SDKs retry by themselves.
    net.stop_executors().await;
    let deadline = Instant::now() + WAIT;
    let (headers, body) = loop {
        let (status, headers, body) =
            http(net.addr, "POST", "/v1/chat/completions", &chat(&json!({}))).await;
        if status == 503 {
            break (headers, body);
        }
        assert!(Instant::now() < deadline, "never a 503: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(header(&headers, "retry-after"), Some("5"), "{headers}");
    assert_eq!(header(&headers, "retry-after-ms"), Some("5000"), "{headers}");
    let error = &json_body(&body)["error"];
    assert_eq!(
        (error["code"].clone(), error["type"].clone()),
        (json!("model_unavailable"), json!("api_error"))
    );
    assert!(
        error["message"].as_str().unwrap().contains("its executors may be restarting"),
        "{error}"
    );
    let (status, _, body) = http(net.addr, "GET", &format!("/v1/models/{MODEL}"), b"").await;
    assert_eq!(status, 503, "{body}");

    // A model never offered is still unknown.
    let (status, _, body) =
        http(net.addr, "POST", "/v1/chat/completions", &chat(&json!({"model": "gpt-17"}))).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(json_body(&body)["error"]["code"], "model_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_too_long_for_the_context_is_a_400_context_length_exceeded() {
    let short = Script { context: Some(12), ..Script::answer(MODEL, "Paris.") };
    let net = network(vec![short], GatewayConfig::default()).await;
    let long = chat(&json!({"max_tokens": 100}));
    let (status, _, body) = http(net.addr, "POST", "/v1/chat/completions", &long).await;
    assert_eq!(status, 400, "{body}");
    let error = &json_body(&body)["error"];
    assert_eq!(error["code"], "context_length_exceeded", "{error}");
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], "messages");
    assert!(error["message"].as_str().unwrap().contains("exceeds the 12 tokens of context"));
    // It is the request's size, not the executor: a shorter one is answered at once.
    let (status, _, body) =
        http(net.addr, "POST", "/v1/chat/completions", &chat(&json!({"max_tokens": 4}))).await;
    assert_eq!(status, 200, "{body}");
    // The gateway's metrics count errors by code.
    let (_, _, page) = http(net.addr, "GET", "/metrics", b"").await;
    assert!(page.contains("lloom_gateway_errors_total{code=\"context_length_exceeded\"} 1\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_api_keys_only_requests_that_carry_one_are_answered() {
    let (alice, bob) = ("alice-0123456789abcdef", "bob-0123456789abcdef");
    let api_keys = ApiKeys::parse(&format!("alice {alice}\nbob {bob}\n")).unwrap();
    let config = GatewayConfig { api_keys, ..GatewayConfig::default() };
    let net = network(vec![Script::answer(MODEL, "Paris it is.")], config).await;
    let refused: [(&str, &str); 4] = [
        ("", "missing_api_key"),
        ("authorization: Bearer nobody-0123456789abcdef\r\n", "invalid_api_key"),
        (&format!("authorization: Basic {alice}\r\n"), "invalid_api_key"),
        (&format!("authorization: Bearer {alice}x\r\n"), "invalid_api_key"),
    ];
    for (header, code) in refused {
        for (method, path) in [("POST", "/v1/chat/completions"), ("GET", "/v1/models")] {
            let body = if method == "POST" { chat(&json!({})) } else { Vec::new() };
            let (status, headers, body) = http_with(net.addr, method, path, header, &body).await;
            assert_eq!(status, 401, "{path} with {header:?}: {body}");
            assert!(headers.contains("www-authenticate: bearer"), "{headers}");
            assert_eq!(json_body(&body)["error"]["code"], code, "{header:?}");
        }
    }
    let header = format!("authorization: Bearer {alice}\r\n");
    let (status, _, body) =
        http_with(net.addr, "POST", "/v1/chat/completions", &header, &chat(&json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_body(&body)["choices"][0]["message"]["content"], "Paris it is.");
    let streamed = chat(&json!({"stream": true}));
    let (status, _, raw) =
        http_with(net.addr, "POST", "/v1/chat/completions", &header, &streamed).await;
    assert_eq!(status, 200, "{raw}");
    assert!(raw.contains("data: [DONE]"), "{raw}");
    let header = format!("authorization: bearer {bob}\r\n");
    let (status, _, body) = http_with(net.addr, "GET", "/v1/models", &header, b"").await;
    assert_eq!((status, json_body(&body)["data"][0]["id"].clone()), (200, json!(MODEL)));

    // Health and metrics stay open; the metrics count refusals and each key's usage.
    let (status, _, _) = http(net.addr, "GET", "/health", b"").await;
    assert_eq!(status, 200);
    let (status, _, page) = http(net.addr, "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    for line in [
        "lloom_gateway_unauthorized_total 8\n",
        "lloom_gateway_key_completions_total{key=\"alice\",outcome=\"ok\"} 2\n",
        "lloom_gateway_key_completions_total{key=\"bob\",outcome=\"ok\"} 0\n",
        "lloom_gateway_key_tokens_total{key=\"alice\",kind=\"prompt\"} 20\n",
        "lloom_gateway_key_tokens_total{key=\"alice\",kind=\"completion\"} 6\n",
        "lloom_gateway_key_tokens_total{key=\"bob\",kind=\"completion\"} 0\n",
        // Two answers of 10 prompt tokens at 2 wei and 3 completion tokens at 3 wei.
        "lloom_gateway_key_cost_wei_total{key=\"alice\"} 58\n",
        "lloom_gateway_key_cost_wei_total{key=\"bob\"} 0\n",
    ] {
        assert!(page.contains(line), "{line} not in {page}");
    }
    assert!(!page.contains("0123456789abcdef"), "a key leaked into the metrics: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_metrics_key_only_scrapes_that_carry_it_see_the_metrics() {
    let (alice, scraper) = ("alice-0123456789abcdef", "prometheus-0123456789abcdef");
    let api_keys = ApiKeys::parse(&format!("alice {alice}\n")).unwrap();
    // An API key cannot double as the metrics key.
    let shared = GatewayConfig {
        api_keys: api_keys.clone(),
        metrics_keys: ApiKeys::single(alice).unwrap(),
        ..GatewayConfig::default()
    };
    let error = shared.check().expect_err("a shared key").to_string();
    assert!(error.contains("metrics key is also an API key"), "{error}");

    let config = GatewayConfig {
        api_keys,
        metrics_keys: ApiKeys::single(scraper).unwrap(),
        ..GatewayConfig::default()
    };
    let net = network(vec![], config).await;
    for header in [String::new(), format!("authorization: Bearer {alice}\r\n")] {
        let (status, headers, body) = http_with(net.addr, "GET", "/metrics", &header, b"").await;
        assert_eq!(status, 401, "/metrics with {header:?}: {body}");
        assert!(headers.contains("www-authenticate: bearer"), "{headers}");
        assert!(!body.contains("alice"), "the refusal names a key: {body}");
    }
    let scrape = format!("authorization: Bearer {scraper}\r\n");
    let (status, _, page) = http_with(net.addr, "GET", "/metrics", &scrape, b"").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("lloom_gateway_unauthorized_total 2\n"), "{page}");
    assert!(page.contains("lloom_gateway_key_cost_wei_total{key=\"alice\"} 0\n"), "{page}");
    // The metrics key opens nothing else; health stays open.
    let (status, _, _) = http_with(net.addr, "GET", "/v1/models", &scrape, b"").await;
    assert_eq!(status, 401);
    let (status, _, _) = http(net.addr, "GET", "/health", b"").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_beyond_the_concurrency_limit_get_a_429_at_once() {
    let slow =
        Script { delay: Duration::from_millis(150), ..Script::answer(MODEL, "one two three") };
    let config = GatewayConfig { max_concurrent: 1, ..GatewayConfig::default() };
    let net = network(vec![slow], config).await;
    let addr = net.addr;
    let first = tokio::spawn(async move {
        http(addr, "POST", "/v1/chat/completions", &chat(&json!({"stream": true}))).await
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, _, page) = http(addr, "GET", "/metrics", b"").await;
        if page.contains("lloom_gateway_in_flight 1\n") {
            break;
        }
        assert!(Instant::now() < deadline, "the first completion never started: {page}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, headers, body) =
        http(addr, "POST", "/v1/chat/completions", &chat(&json!({}))).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(header(&headers, "retry-after"), Some("1"), "{headers}");
    assert_eq!(json_body(&body)["error"]["code"], "gateway_busy");
    // Refused at once, not queued behind the stream.
    assert!(!first.is_finished(), "the refusal waited for the first stream to end");

    let (status, _, raw) = first.await.unwrap();
    assert_eq!(status, 200);
    assert!(raw.contains("data: [DONE]"), "{raw}");
    // The stream's end gave its slot back.
    let (status, _, body) = http(addr, "POST", "/v1/chat/completions", &chat(&json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_body(&body)["choices"][0]["message"]["content"], "one two three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_api_key_has_its_own_requests_per_minute() {
    use lloom_core::rate_limit::RateLimits;
    let (alice, bob) = ("alice-0123456789abcdef", "bob-0123456789abcdef");
    let api_keys = ApiKeys::parse(&format!("alice {alice}\nbob {bob}\n")).unwrap();
    let key_limits = RateLimits { requests_per_minute: Some(2), ..RateLimits::default() };
    let config = GatewayConfig { api_keys, key_limits, ..GatewayConfig::default() };
    let net = network(vec![Script::answer(MODEL, "Paris it is.")], config).await;
    let as_alice = format!("authorization: Bearer {alice}\r\n");
    for _ in 0..2 {
        let (status, _, body) =
            http_with(net.addr, "POST", "/v1/chat/completions", &as_alice, &chat(&json!({}))).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, headers, body) =
        http_with(net.addr, "POST", "/v1/chat/completions", &as_alice, &chat(&json!({}))).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        header(&headers, "retry-after"),
        Some("30"),
        "one request refills in 60/2 s: {headers}"
    );
    let millis: u64 = header(&headers, "retry-after-ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no retry-after-ms: {headers}"));
    assert!((25_000..=30_000).contains(&millis), "to the millisecond: {millis}");
    let error = &json_body(&body)["error"];
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["message"].as_str().unwrap().contains("`alice`"), "{error}");
    // Bob's budget is his own.
    let as_bob = format!("authorization: Bearer {bob}\r\n");
    let (status, _, body) =
        http_with(net.addr, "POST", "/v1/chat/completions", &as_bob, &chat(&json!({}))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_has_spent_its_budget_gets_a_402_and_its_spend_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = ("alice-0123456789abcdef", "bob-0123456789abcdef");
    // Each answer costs 29 wei (10 prompt tokens at 2, 3 completion tokens at 3).
    let api_keys = ApiKeys::parse(&format!("alice {alice} 50\nbob {bob}\n")).unwrap();
    let ledger = Arc::new(SpendLedger::open(&dir.path().join("spend.redb")).unwrap());
    let without_ledger = GatewayConfig { api_keys: api_keys.clone(), ..GatewayConfig::default() };
    let error = without_ledger.check().expect_err("budgets without a ledger").to_string();
    assert!(error.contains("need a spend ledger"), "{error}");
    let config = GatewayConfig {
        api_keys,
        spend_ledger: Some(ledger.clone()),
        budget_period: Some(BudgetPeriod::Monthly),
        ..GatewayConfig::default()
    };
    let net = network(vec![Script::answer(MODEL, "Paris it is.")], config).await;
    let as_alice = format!("authorization: Bearer {alice}\r\n");
    let month = BudgetPeriod::Monthly.start(lloom_core::unix_now());
    let ask = |headers: String, body: Vec<u8>| async move {
        http_with(net.addr, "POST", "/v1/chat/completions", &headers, &body).await
    };

    // Let in while below the budget, and charged in full: 29, then 58 of 50.
    for spent in [29u64, 58] {
        let (status, _, body) = ask(as_alice.clone(), chat(&json!({}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(ledger.spent("alice", month), U256::from(spent), "on disk before the answer");
    }
    let (status, headers, body) = ask(as_alice.clone(), chat(&json!({}))).await;
    assert_eq!(status, 402, "{body}");
    let retry_after: u64 = headers
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("the next month's start: {headers}"));
    assert!(retry_after > 0 && retry_after <= 31 * 86_400, "{retry_after}");
    let error = &json_body(&body)["error"];
    assert_eq!(
        (error["type"].clone(), error["code"].clone()),
        (json!("insufficient_quota"), json!("insufficient_quota"))
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(
            "`alice` has spent 58 wei of its monthly budget of 50 wei; it is whole again at 20"
        ),
        "{message}"
    );
    // Streams too are refused, and nothing was signed for them.
    let (status, _, _) = ask(as_alice.clone(), chat(&json!({"stream": true}))).await;
    assert_eq!(status, 402);

    // Bob has no budget; his streamed answer is charged to him all the same.
    let as_bob = format!("authorization: Bearer {bob}\r\n");
    let (status, _, raw) = ask(as_bob.clone(), chat(&json!({"stream": true}))).await;
    assert_eq!(status, 200, "{raw}");
    assert!(raw.contains("data: [DONE]"), "{raw}");
    assert_eq!(ledger.spent("bob", month), U256::from(29));

    // Each key can ask what it has spent and has left.
    let (status, _, body) = http_with(net.addr, "GET", "/v1/key", &as_alice, b"").await;
    assert_eq!(status, 200, "{body}");
    let data = &json_body(&body)["data"];
    assert_eq!(data["label"], "alice");
    assert_eq!(data["usage_wei"], "58");
    assert_eq!(data["limit_wei"], "50");
    assert_eq!(data["limit_remaining_wei"], "0");
    assert_eq!(data["durable"], true);
    assert_eq!(data["limit_reset"], "monthly");
    assert!(data["resets_at"].as_str().unwrap().ends_with("-01T00:00:00Z"), "{data}");
    let (_, _, body) = http_with(net.addr, "GET", "/v1/key", &as_bob, b"").await;
    let data = &json_body(&body)["data"];
    assert_eq!((data["usage_wei"].clone(), data["limit_wei"].clone()), (json!("29"), Value::Null));
    let (status, _, _) = http(net.addr, "GET", "/v1/key", b"").await;
    assert_eq!(status, 401, "the key endpoint asks for a key");

    let (_, _, page) = http(net.addr, "GET", "/metrics", b"").await;
    for line in [
        "lloom_gateway_key_spent_wei{key=\"alice\"} 58\n",
        "lloom_gateway_key_budget_wei{key=\"alice\"} 50\n",
        "lloom_gateway_key_spent_wei{key=\"bob\"} 29\n",
        "lloom_gateway_key_completions_total{key=\"alice\",outcome=\"error\"} 2\n",
        "lloom_gateway_spend_ledger_errors_total 0\n",
    ] {
        assert!(page.contains(line), "{line} not in {page}");
    }
    assert!(!page.contains("lloom_gateway_key_budget_wei{key=\"bob\"}"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_http_client_leaves_is_charged_for_its_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let alice = "alice-0123456789abcdef";
    let api_keys = ApiKeys::parse(&format!("alice {alice}\n")).unwrap();
    let ledger = Arc::new(SpendLedger::open(&dir.path().join("spend.redb")).unwrap());
    let config =
        GatewayConfig { api_keys, spend_ledger: Some(ledger.clone()), ..GatewayConfig::default() };
    // 100 tokens, 10 ms apart; the executor signs a checkpoint every 32.
    let slow =
        Script { delay: Duration::from_millis(10), ..Script::answer(MODEL, &"tick ".repeat(100)) };
    let net = network(vec![slow], config).await;
    let body = chat(&json!({"stream": true}));
    let mut stream = tokio::net::TcpStream::connect(net.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {alice}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        net.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    // Read until 40 tokens have come (the checkpoint after 32 with them), then go away.
    let mut seen = String::new();
    let mut buf = vec![0u8; 4096];
    while seen.matches("tick").count() < 40 {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    drop(stream);
    // The executor can settle what it signed for: 10 prompt tokens at 2 wei and a multiple of
    // 32 completion tokens at 3.
    let deadline = Instant::now() + WAIT;
    while ledger.spent("alice", 0).is_zero() {
        assert!(Instant::now() < deadline, "the key was never charged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spent = ledger.spent("alice", 0);
    let completion = (spent - U256::from(20)) / U256::from(3);
    assert_eq!(spent, U256::from(20) + completion * U256::from(3));
    assert!(
        completion >= U256::from(32) && completion % U256::from(32) == U256::ZERO,
        "{completion}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_gets_a_408() {
    let config =
        GatewayConfig { body_timeout: Duration::from_millis(300), ..GatewayConfig::default() };
    let net = network(vec![Script::answer(MODEL, "x")], config).await;
    let mut stream = tokio::net::TcpStream::connect(net.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{{\"model\":",
        net.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw)).await.unwrap().unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert_eq!(json_body(body)["error"]["code"], "request_timeout", "{body}");
}

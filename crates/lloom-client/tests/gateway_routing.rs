//! A chat completion's own routing options (the extra `lloom` field) through the gateway over
//! real HTTP, in front of a validator and two executors (scripted backends) that differ in
//! price and context.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod http;
mod scripted;

use std::net::SocketAddr;
use std::sync::Arc;

use lloom_client::Strategy;
use lloom_client::gateway::{GatewayConfig, serve};
use lloom_core::network::{Multiaddr, NetworkConfig};
use lloom_core::{ModelOffer, NodeKey, U256};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::serve::ServedModel;
use lloom_executor::{ExecutorConfig, ExecutorNode};
use serde_json::{Value, json};

use http::{http, json_body};
use scripted::{MODEL, validator};

/// An executor answering `text` at `price` wei per token (input and output) with `context`.
async fn executor(
    bootstrap: &[Multiaddr],
    dir: &tempfile::TempDir,
    text: &str,
    price: u64,
    context: u32,
) -> ExecutorNode {
    let key = NodeKey::generate();
    let mut config = ExecutorConfig::new(dir.path().join(key.address().to_string()));
    config.network = NetworkConfig { bootstrap: bootstrap.to_vec(), ..NetworkConfig::local() };
    let offer = ModelOffer {
        context_length: context,
        price_per_input_token: U256::from(price),
        price_per_output_token: U256::from(price),
        ..scripted::offer(price)
    };
    let backend = Arc::new(ScriptedBackend::new(Script::answer(MODEL, text)));
    ExecutorNode::start(&key, vec![ServedModel { offer, backend }], config).await.unwrap()
}

async fn gateway(client: lloom_client::Client, config: GatewayConfig) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(client, listener, config, std::future::pending()));
    addr
}

/// A completion of `messages` with `lloom` as its routing options: the status and the JSON
/// answer.
async fn complete(addr: SocketAddr, messages: Value, lloom: Value) -> (u16, Value) {
    let request = json!({"model": MODEL, "messages": messages, "lloom": lloom});
    let (status, _, body) =
        http(addr, "POST", "/v1/chat/completions", request.to_string().as_bytes()).await;
    (status, json_body(&body))
}

/// A one-question completion with `lloom` as its routing options.
async fn ask(addr: SocketAddr, lloom: Value) -> (u16, Value) {
    complete(addr, json!([{"role": "user", "content": "Which one?"}]), lloom).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_routes_by_its_own_ceilings_and_context_and_bad_options_are_400s() {
    let (_validator, bootstrap) = validator().await;
    let dir = tempfile::tempdir().unwrap();
    let _small = executor(&bootstrap, &dir, "Small context.", 1, 1024).await;
    let _large = executor(&bootstrap, &dir, "Large context.", 10, 8192).await;
    // The gateway's client picks the cheapest executor unless a request says otherwise.
    let client = scripted::client(&bootstrap, Strategy::Cheapest, 2).await;
    let addr = gateway(client.clone(), GatewayConfig::default()).await;

    let (status, answer) = ask(addr, Value::Null).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "Small context.");

    // A minimum context the cheap executor lacks sends the request to the other one.
    let (status, answer) = ask(addr, json!({"min_context": 4096, "strategy": "cheapest"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "Large context.");
    assert_eq!(answer["lloom"]["cost_wei"], ((10 + 2) * 10).to_string());

    // Ceilings below every offer that fits: a 404 that says what is on offer.
    let (status, answer) = ask(addr, json!({"min_context": 4096, "max_price": "5"})).await;
    assert_eq!(status, 404, "{answer}");
    let error = &answer["error"];
    assert_eq!(error["code"], "no_offer_within_limits", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("2 do, asking at least 1 wei per input token"), "{message}");
    assert!(message.contains("at most 8192 tokens of context"), "{message}");
    // A per-token ceiling wins over max_price: the cheap executor is allowed again.
    let (status, answer) = ask(
        addr,
        json!({"max_price": 0, "max_price_per_input_token": 1, "max_price_per_output_token": "1"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "Small context.");

    for (lloom, message) in [
        (json!({"max_prize": 5}), "lloom.max_prize is not an option"),
        (json!({"strategy": "random"}), "lloom.strategy must be"),
        (json!({"max_price": "-1"}), "lloom.max_price must be a whole number of wei"),
        (json!([1]), "`lloom` must be an object"),
    ] {
        let (status, answer) = ask(addr, lloom.clone()).await;
        assert_eq!(status, 400, "{lloom}: {answer}");
        let error = &answer["error"];
        assert_eq!(error["param"], "lloom", "{error}");
        assert!(error["message"].as_str().unwrap().contains(message), "{error}");
    }
    // A gateway's own ceiling: requests may lower it, never raise it.
    let capped = GatewayConfig { max_price: Some(U256::from(5)), ..GatewayConfig::default() };
    let addr = gateway(client, capped).await;
    let (status, answer) = ask(addr, Value::Null).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "Small context.");
    for lloom in [json!({"min_context": 4096}), json!({"min_context": 4096, "max_price": 100})] {
        let (status, answer) = ask(addr, lloom.clone()).await;
        assert_eq!(status, 404, "{lloom}: {answer}");
        assert_eq!(answer["error"]["code"], "no_offer_within_limits", "{answer}");
    }
}

/// A completion of `messages` with `lloom` as its routing options: the answer's text.
async fn answer_to(addr: SocketAddr, messages: Value, lloom: Value) -> String {
    let (status, answer) = complete(addr, messages, lloom).await;
    assert_eq!(status, 200, "{answer}");
    answer["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
}

/// A conversation's next turn is asked first of the executor that answered it last (whose
/// prompt cache holds the history), whatever the strategy would rank first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversations_next_turn_goes_to_the_executor_that_answered_it_last() {
    let (_validator, bootstrap) = validator().await;
    let dir = tempfile::tempdir().unwrap();
    let _small = executor(&bootstrap, &dir, "Small context.", 1, 1024).await;
    let _large = executor(&bootstrap, &dir, "Large context.", 10, 8192).await;
    let client = scripted::client(&bootstrap, Strategy::Cheapest, 2).await;
    let addr = gateway(client, GatewayConfig::default()).await;

    // The first turn needs the longer context: the dearer executor answers it.
    let opening = json!({"role": "user", "content": "I am Ana. Remember it."});
    let first = answer_to(addr, json!([opening]), json!({"min_context": 4096})).await;
    assert_eq!(first, "Large context.");
    // The next turn asks for nothing of the kind, yet goes where the history is.
    let next = json!([opening, {"role": "assistant", "content": first},
        {"role": "user", "content": "Who am I?"}]);
    assert_eq!(answer_to(addr, next.clone(), Value::Null).await, "Large context.");
    // Unless the request's own limits rule that executor out.
    assert_eq!(answer_to(addr, next, json!({"max_price": 5})).await, "Small context.");
    // Another conversation goes to the cheapest, as the strategy says.
    let other = json!([{"role": "user", "content": "I am Bo."},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Who am I?"}]);
    assert_eq!(answer_to(addr, other, Value::Null).await, "Small context.");
}

//! `Client::chat` sized against executors' contexts (scripted backends that count a token a
//! word): a request too long for one context goes to a longer one, and a chat fitted to the
//! context asks each executor for what its context leaves, asking again for less when the
//! prompt was longer than estimated.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use lloom_client::{AttemptFailure, ChatRequest, ClientConfig, Error, Strategy};
use lloom_core::{ErrorCode, ModelOffer, NodeKey, U256};
use lloom_executor::backend::scripted::Script;

mod scripted;
use scripted::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_long_for_one_context_goes_to_a_longer_one_and_cools_nothing_down() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let (short_key, long_key) = (NodeKey::generate(), NodeKey::generate());
    let short_script = Script { context: Some(64), ..Script::answer(MODEL, "Short.") };
    let short_offer = ModelOffer { context_length: 64, ..offer(1) };
    let data = |key: &NodeKey| dir.path().join(key.address().to_string());
    let short =
        executor_offering(&short_key, &addrs, short_script, short_offer, data(&short_key)).await;
    let long_script = Script::answer(MODEL, "Long.");
    let _long = executor_offering(&long_key, &addrs, long_script, offer(2), data(&long_key)).await;
    // One attempt only: a refusal for the request's size does not use it up.
    let config = ClientConfig { max_attempts: 1, ..ClientConfig::default() }
        .bootstrap(addrs.clone())
        .strategy(Strategy::Cheapest);
    let client = connect(config, 2).await;

    // The cheaper executor's context is too short for 3 prompt tokens plus 62: the longer one
    // answers, and the refusal is reported without a cooldown.
    let long_ask = ChatRequest { max_tokens: 62, ..ask() };
    let receipt = client.chat(long_ask.clone()).await.unwrap().collect().await.unwrap();
    assert_eq!((receipt.executor, receipt.text.as_str()), (long_key.address(), "Long."));
    let refused = &receipt.attempts[0];
    assert_eq!(refused.executor, short_key.address());
    assert!(matches!(
        refused.failure,
        Some(AttemptFailure::Refused { code: ErrorCode::ContextExceeded, .. })
    ));
    assert_eq!(refused.cooldown, None);
    // So the cheaper one still takes what fits it.
    let short_ask = ChatRequest { max_tokens: 8, ..ask() };
    let receipt = client.chat(short_ask).await.unwrap().collect().await.unwrap();
    assert_eq!(receipt.executor, short_key.address());
    assert_eq!(receipt.attempts.len(), 1);

    // Asked only of executors whose context is too short: a typed error naming the longest.
    // More output tokens than an executor's announced context: it is not even asked.
    let refused = || short.server.stats().refused.load(std::sync::atomic::Ordering::Relaxed);
    let refused_before = refused();
    let cheap = lloom_client::RouteFilter {
        max_price_per_input_token: Some(U256::from(1)),
        ..Default::default()
    };
    let err = client
        .chat(ChatRequest { max_tokens: 2000, filter: cheap, ..ask() })
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    match &err {
        Error::ContextExceeded { context_length: 64, max_tokens: 2000, reason, .. } => {
            assert!(reason.contains("more than the context length 64"), "{reason}");
        }
        other => panic!("expected ContextExceeded, got {other:?}"),
    }
    assert!(err.to_string().contains("shorten the prompt or lower max_tokens"), "{err}");
    assert_eq!(refused(), refused_before, "the short executor was not asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fitted_chat_asks_for_what_the_context_leaves_and_less_when_the_prompt_is_longer() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let key = NodeKey::generate();
    let script = Script { context: Some(1024), ..Script::answer(MODEL, "Fits.") };
    let offer = ModelOffer { context_length: 1024, ..offer(1) };
    let executor = executor_offering(&key, &addrs, script, offer, dir.path().join("e")).await;
    let config = ClientConfig { max_attempts: 1, ..ClientConfig::default() }.bootstrap(addrs);
    let client = connect(config, 1).await;
    let refused = || executor.server.stats().refused.load(std::sync::atomic::Ordering::Relaxed);
    let fitted = |prompt: String, max_tokens| ChatRequest {
        max_tokens,
        fit_to_context: true,
        ..ChatRequest::user(MODEL, prompt)
    };

    // 40 words in 80 bytes: assumed 14 + 8 + 64 = 86 tokens (six bytes a token, and the
    // template's), so 938 are asked for, and the 40 + 938 fit.
    let receipt = client.chat(fitted("a ".repeat(40), u32::MAX)).await.unwrap();
    let receipt = receipt.collect().await.unwrap();
    assert_eq!(receipt.text, "Fits.");
    assert_eq!(receipt.request.commitment.maxOutputTokens, 1024 - 86);
    assert_eq!(receipt.request.commitment.maxInputTokens, 86);
    // A cap below the room is asked as is.
    let capped = client.chat(fitted("a ".repeat(40), 7)).await.unwrap().collect().await.unwrap();
    assert_eq!(capped.request.commitment.maxOutputTokens, 7);
    assert_eq!(refused(), 0);

    // 400 words in 800 bytes: 206 assumed, so 818 asked for, and 400 + 818 do not fit. The
    // signed refusal counts the prompt; refused without a cooldown or an attempt used up, it
    // is asked again for exactly the 624 left.
    let receipt = client.chat(fitted("a ".repeat(400), u32::MAX)).await.unwrap();
    let receipt = receipt.collect().await.unwrap();
    assert_eq!(receipt.request.commitment.maxOutputTokens, 1024 - 400);
    assert_eq!(receipt.attempts.len(), 2, "{:?}", receipt.attempts);
    assert!(matches!(
        receipt.attempts[0].failure,
        Some(AttemptFailure::Refused { code: ErrorCode::ContextExceeded, .. })
    ));
    assert_eq!(receipt.attempts[0].cooldown, None);
    assert_eq!(refused(), 1);

    // Near the end of the context: 1,000 words leave 24 tokens, and they are asked for.
    let receipt = client.chat(fitted("a ".repeat(1000), u32::MAX)).await.unwrap();
    let receipt = receipt.collect().await.unwrap();
    assert_eq!(receipt.request.commitment.maxOutputTokens, 24);
    assert_eq!(refused(), 2);

    // 1,100 words leave no room: refused once (counted), then not asked again.
    let err = client.chat(fitted("a ".repeat(1100), u32::MAX)).await.unwrap();
    let err = err.collect().await.unwrap_err();
    match &err {
        Error::ContextExceeded { context_length: 1024, reason, .. } => {
            assert!(
                reason.contains("about 1100 tokens as the executor counted it, leaves no room"),
                "{reason}"
            );
        }
        other => panic!("expected ContextExceeded, got {other:?}"),
    }
    assert_eq!(refused(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_longer_than_the_request_allows_but_served_anyway_is_billed_at_the_limit() {
    // A server behind the HTTP backend with a longer context than the executor announces
    // accepts a prompt past `maxInputTokens`; its count (10) is more than the client signed
    // for (64 - 60 = 4).
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let key = NodeKey::generate();
    let script = Script { input_tokens: 10, ..Script::answer(MODEL, "Served.") };
    let offer = ModelOffer { context_length: 64, ..offer(1) };
    let executor = executor_offering(&key, &addrs, script, offer, dir.path().join("e")).await;
    let client = connect(ClientConfig::default().bootstrap(addrs), 1).await;

    let ask = ChatRequest { max_tokens: 60, ..ask() };
    let receipt = client.chat(ask).await.unwrap().collect().await.unwrap();
    assert_eq!(receipt.text, "Served.");
    assert_eq!(receipt.request.commitment.maxInputTokens, 4);
    assert_eq!(receipt.input_tokens, 4, "billed at the limit the client signed");
    let c = &receipt.request.commitment;
    let expected = c.pricePerInputToken * U256::from(4)
        + c.pricePerOutputToken * U256::from(receipt.output_tokens);
    assert_eq!(receipt.cost, expected);
    let over =
        executor.server.stats().prompts_over_limit.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(over, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fitted_chat_learns_how_densely_the_model_counts_prompts() {
    // 300 words of three bytes ("ab "), one token each: 900 bytes that six bytes a token
    // would take for 222 tokens with the template's.
    let prompt = "ab ".repeat(300);
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let key = NodeKey::generate();
    let script =
        Script { context: Some(1024), input_tokens: 300, ..Script::answer(MODEL, "Dense.") };
    let offer = ModelOffer { context_length: 1024, ..offer(1) };
    let executor = executor_offering(&key, &addrs, script, offer, dir.path().join("e")).await;
    let kept = dir.path().join("client").join("prompt-density.json");
    let config = ClientConfig {
        prompt_density_file: Some(kept.clone()),
        ..ClientConfig::default().bootstrap(addrs)
    };
    let client = connect(config.clone(), 1).await;
    let refused = || executor.server.stats().refused.load(std::sync::atomic::Ordering::Relaxed);
    let fitted = || ChatRequest {
        max_tokens: u32::MAX,
        fit_to_context: true,
        ..ChatRequest::user(MODEL, prompt.clone())
    };

    // The first is refused once (it asked for 802, the count leaves 724), as before.
    let first = client.chat(fitted()).await.unwrap().collect().await.unwrap();
    assert_eq!(first.request.commitment.maxOutputTokens, 724);
    assert_eq!(refused(), 1);
    // Its answer showed 39 tenths of a byte a token beyond the template's 72 tokens; the next
    // prompt is taken at 35: 258 + 72 = 330 tokens, which holds the 300, so it is not refused.
    let second = client.chat(fitted()).await.unwrap().collect().await.unwrap();
    assert_eq!(second.request.commitment.maxOutputTokens, 1024 - 330);
    assert_eq!(second.attempts.len(), 1, "{:?}", second.attempts);
    assert_eq!(refused(), 1);

    // What it learned is in the file already, without a shutdown (a killed gateway loses
    // nothing of it): another client starting from it is not refused either.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !kept.exists() {
        assert!(std::time::Instant::now() < deadline, "the learned densities were not written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let another = connect(config, 1).await;
    let third = another.chat(fitted()).await.unwrap().collect().await.unwrap();
    assert_eq!(third.request.commitment.maxOutputTokens, 1024 - 330);
    assert_eq!(refused(), 1);
}

//! `Client::chat` against real validators and executors (scripted backends): a verified
//! receipt, failover when an executor dies mid-stream, a clear error when all are busy, and
//! a lying executor caught by verification.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lloom_client::{
    AttemptFailure, ChatEvent, ChatRequest, Client, ClientConfig, Error, Receipt, Strategy,
};
use lloom_core::network::test_utils::WAIT;
use lloom_core::network::{Multiaddr, NetworkConfig};
use lloom_core::wire::{content_hash, read_frame, write_frame};
use lloom_core::{
    AnnouncementBody, ErrorCode, ModelOffer, NodeKey, ResponseCommitment, SignedResponse,
    StreamChunk, U256, WireLimits, WireMessage, unix_now,
};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::serve::ServedModel;
use lloom_executor::{Announcer, AnnouncerConfig, ExecutorConfig, ExecutorNode};
use lloom_validator::{Validator, ValidatorConfig};

mod scripted;
use scripted::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_returns_the_streamed_text_and_a_verified_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let (node, key) =
        executor(&addrs, Script::answer(MODEL, "Paris is the capital."), 3, &dir).await;
    let client = client(&addrs, Strategy::Balanced, 1).await;

    let mut stream = client.chat(ask()).await.unwrap();
    let mut streamed = String::new();
    let mut receipt: Option<Receipt> = None;
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            ChatEvent::Attempt { executor } => assert_eq!(executor, key.address()),
            ChatEvent::Text(t) => streamed.push_str(&t),
            ChatEvent::Restart { reason, .. } => panic!("unexpected restart: {reason}"),
            ChatEvent::Done(r) => receipt = Some(*r),
        }
    }
    let receipt = receipt.expect("a receipt");
    assert_eq!(streamed, "Paris is the capital.");
    assert_eq!(receipt.text, streamed);
    assert_eq!(receipt.executor, key.address());
    assert_eq!((receipt.input_tokens, receipt.output_tokens), (10, 4));
    assert_eq!(receipt.cost, U256::from(10 * 3 + 4 * 6));
    assert_eq!(receipt.response.commitment.contentHash, content_hash(&streamed));
    assert_eq!(receipt.request.commitment.client, client.address());
    assert_eq!(receipt.checks.len(), 7);
    // The executor kept the same exchange for settlement.
    let stored = node.server.receipts().get(&receipt.request.digest()).unwrap().unwrap();
    assert_eq!(stored.response, receipt.response);
    // Router learned about it.
    let stats = client.executor_stats().await;
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].1.successes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_answers_are_all_kept_in_the_receipt_store_before_they_return() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let (_node, key) = executor(&addrs, Script::answer(MODEL, "Paris."), 1, &dir).await;
    let path = dir.path().join("client-receipts.redb");
    let store = Arc::new(lloom_client::receipts::ReceiptStore::open(&path).unwrap());
    let config = ClientConfig { receipts: Some(store.clone()), ..ClientConfig::default() }
        .bootstrap(addrs.clone());
    let client = connect(config, 1).await;
    let chats: Vec<_> = (0..24)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.chat(ask()).await?.collect().await })
        })
        .collect();
    let mut digests = Vec::new();
    for chat in chats {
        let receipt = chat.await.unwrap().unwrap();
        // Stored by the time the answer is returned, whichever transaction carried it.
        let kept = store.get(&receipt.request.digest()).unwrap().expect("kept");
        assert_eq!(kept.response, receipt.response);
        assert_eq!(kept.text.as_deref(), Some("Paris."));
        assert_eq!(kept.executor(), key.address());
        digests.push(receipt.request.digest());
    }
    digests.sort();
    digests.dedup();
    assert_eq!(digests.len(), 24);
    assert_eq!(store.len().unwrap(), 24);
    // The writer thread ends with the client; the store then reopens with every receipt.
    drop(client);
    drop(store);
    let reopened = lloom_client::receipts::ReceiptStore::open(&path).unwrap();
    assert_eq!(reopened.len().unwrap(), 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_reuse_one_stream_and_a_stream_the_executor_closed_is_replaced_unseen() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let key = NodeKey::generate();
    let mut config = ExecutorConfig::new(dir.path().join("executor"));
    config.network = NetworkConfig { bootstrap: addrs.clone(), ..NetworkConfig::local() };
    // Idle streams are closed long before the client would stop reusing them (5 s).
    config.serve.request_timeout = Duration::from_millis(300);
    let backend = Arc::new(ScriptedBackend::new(Script::answer(MODEL, "Paris.")));
    let node =
        ExecutorNode::start(&key, vec![ServedModel { offer: offer(1), backend }], config).await;
    let node = node.unwrap();
    let client = client(&addrs, Strategy::Balanced, 1).await;
    let stats = node.server.stats();

    for _ in 0..3 {
        let receipt = client.chat(ask()).await.unwrap().collect().await.unwrap();
        assert_eq!(receipt.text, "Paris.");
    }
    assert_eq!(stats.completed.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(stats.streams_opened.load(std::sync::atomic::Ordering::Relaxed), 1, "one stream");

    // The executor closes the idle stream; the client's next request finds it closed before
    // any answer and goes out on a new stream, to the same executor, as one attempt.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let receipt = client.chat(ask()).await.unwrap().collect().await.unwrap();
    assert_eq!(receipt.text, "Paris.");
    assert_eq!(receipt.attempts.len(), 1, "no failover: {:?}", receipt.attempts);
    assert_eq!(stats.streams_opened.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(stats.dropped_streams.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_killed_mid_stream_is_replaced_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let slow =
        Script { delay: Duration::from_millis(50), ..Script::answer(MODEL, &"tick ".repeat(100)) };
    // The cheap executor is chosen first (strategy `cheapest`) and dies after its first token.
    let (doomed, doomed_key) = executor(&addrs, slow, 1, &dir).await;
    let (_good, good_key) = executor(&addrs, Script::answer(MODEL, "Paris."), 5, &dir).await;
    let client = client(&addrs, Strategy::Cheapest, 2).await;

    let mut stream = client.chat(ask()).await.unwrap();
    let mut doomed = Some(doomed);
    let mut restarted = false;
    let mut receipt = None;
    while let Some(event) = tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        match event.unwrap() {
            ChatEvent::Text(_) => {
                if let Some(node) = doomed.take() {
                    node.shutdown().await.unwrap(); // the executor process goes away
                }
            }
            ChatEvent::Restart { .. } => restarted = true,
            ChatEvent::Done(r) => receipt = Some(*r),
            ChatEvent::Attempt { .. } => {}
        }
    }
    let receipt = receipt.expect("the answer completes on the other executor");
    assert!(restarted, "the user is told the answer restarted");
    assert_eq!(receipt.executor, good_key.address());
    assert_eq!(receipt.text, "Paris.");
    assert_eq!(receipt.attempts.len(), 2);
    assert_eq!(receipt.attempts[0].executor, doomed_key.address());
    assert!(
        matches!(receipt.attempts[0].failure, Some(AttemptFailure::Broken(_))),
        "{:?}",
        receipt.attempts[0].failure
    );
    // The failed executor is cooling down.
    let stats = client.executor_stats().await;
    let doomed_stats = stats.iter().find(|(a, _)| *a == doomed_key.address()).unwrap();
    assert!(doomed_stats.1.cooldown_until.is_some());
}

/// The cheapest executor: 100 tokens 20 ms apart, with a signed checkpoint every 4.
async fn ticking_executor(
    bootstrap: &[Multiaddr],
    dir: &tempfile::TempDir,
) -> (ExecutorNode, NodeKey) {
    let slow =
        Script { delay: Duration::from_millis(20), ..Script::answer(MODEL, &"tick ".repeat(100)) };
    let key = NodeKey::generate();
    let mut config = ExecutorConfig::new(dir.path().join("ticking"));
    config.network = NetworkConfig { bootstrap: bootstrap.to_vec(), ..NetworkConfig::local() };
    config.serve.checkpoint_every = 4;
    let model = ServedModel { offer: offer(1), backend: Arc::new(ScriptedBackend::new(slow)) };
    (ExecutorNode::start(&key, vec![model], config).await.unwrap(), key)
}

/// A client (strategy `cheapest`) keeping its receipts in `dir`, once it sees `count` executors.
async fn client_with_receipts(
    bootstrap: &[Multiaddr],
    dir: &tempfile::TempDir,
    count: usize,
) -> (Client, Arc<lloom_client::receipts::ReceiptStore>) {
    let path = dir.path().join("client-receipts.redb");
    let store = Arc::new(lloom_client::receipts::ReceiptStore::open(&path).unwrap());
    let config = ClientConfig { receipts: Some(store.clone()), ..ClientConfig::default() }
        .bootstrap(bootstrap.to_vec())
        .strategy(Strategy::Cheapest);
    (connect(config, count).await, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_streams_checkpoint_is_kept_even_when_another_executor_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let (doomed, doomed_key) = ticking_executor(&addrs, &dir).await;
    let (_good, good_key) = executor(&addrs, Script::answer(MODEL, "Paris."), 5, &dir).await;
    let (client, store) = client_with_receipts(&addrs, &dir, 2).await;

    let mut stream = client.chat(ask()).await.unwrap();
    let (mut doomed, mut texts, mut restart_cost, mut receipt) = (Some(doomed), 0, None, None);
    while let Some(event) = tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        match event.unwrap() {
            ChatEvent::Text(_) => {
                texts += 1;
                if texts == 10
                    && let Some(node) = doomed.take()
                {
                    node.shutdown().await.unwrap();
                }
            }
            ChatEvent::Restart { cost, .. } => restart_cost = Some(cost),
            ChatEvent::Done(r) => receipt = Some(*r),
            ChatEvent::Attempt { .. } => {}
        }
    }
    let receipt = receipt.expect("the answer completes on the other executor");
    assert_eq!(receipt.executor, good_key.address());
    // What the first executor streamed before it died is kept beside the answer: it can settle
    // its checkpoint, and the user is told what that costs.
    let cost = restart_cost.expect("the user is told the answer restarted");
    let kept = store.latest(10).unwrap();
    assert_eq!(kept.len(), 2, "the checkpoint and the answer");
    let checkpoint = kept.iter().find(|r| r.executor() == doomed_key.address()).unwrap();
    let c = &checkpoint.response.commitment;
    assert!(c.outputTokens >= 8 && c.outputTokens % 4 == 0, "{}", c.outputTokens);
    assert_eq!(checkpoint.text, None);
    assert_eq!(checkpoint.cost(), cost);
    assert_eq!(cost, U256::from(c.inputTokens + 2 * c.outputTokens));
    assert_ne!(checkpoint.digest(), receipt.request.digest(), "each attempt has its own nonce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_cancelled_mid_stream_keeps_and_reports_its_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let (_node, key) = ticking_executor(&addrs, &dir).await;
    let (client, store) = client_with_receipts(&addrs, &dir, 1).await;

    let mut stream = client.chat(ask()).await.unwrap();
    let mut texts = 0;
    while texts < 10 {
        if let ChatEvent::Text(_) =
            tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap().unwrap()
        {
            texts += 1;
        }
    }
    assert!(stream.cost() > U256::ZERO, "a checkpoint came after 4 and 8 tokens");
    let cost = stream.cancel().await;
    // The executor can settle its last checkpoint: the client keeps it, and says what it costs.
    let deadline = Instant::now() + WAIT;
    let kept = loop {
        if let Some(kept) = store.latest(1).unwrap().pop() {
            break kept;
        }
        assert!(Instant::now() < deadline, "the checkpoint was never kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let c = &kept.response.commitment;
    assert_eq!(kept.text, None);
    assert!(c.outputTokens >= 8 && c.outputTokens % 4 == 0, "{}", c.outputTokens);
    assert_eq!(kept.cost(), cost);
    assert_eq!(cost, U256::from(c.inputTokens + 2 * c.outputTokens));
    assert_eq!(kept.executor(), key.address());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_executors_busy_is_a_clear_error_naming_the_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let full = Script { capacity: 0, ..Script::answer(MODEL, "never") };
    let (_a, _) = executor(&addrs, full.clone(), 1, &dir).await;
    let (_b, _) = executor(&addrs, full, 2, &dir).await;
    let client = client(&addrs, Strategy::Balanced, 2).await;
    let err = client.chat(ask()).await.unwrap().collect().await.unwrap_err();
    assert!(
        matches!(err, Error::AllBusy { retry_after } if retry_after == Duration::from_secs(1)),
        "{err:?}"
    );
    assert!(err.to_string().contains("retry after 1 s"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_names_the_models_on_offer() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let (_e, _) = executor(&addrs, Script::answer(MODEL, "x"), 1, &dir).await;
    let client = client(&addrs, Strategy::Balanced, 1).await;
    let err = client.chat(ChatRequest::user("gpt-17", "hi")).await.unwrap_err();
    assert!(err.to_string().contains("no executor serves `gpt-17`"), "{err}");
    assert!(err.to_string().contains(MODEL), "{err}");
    let zero = ChatRequest { max_tokens: 0, ..ask() };
    assert!(matches!(client.chat(zero).await.unwrap_err(), Error::InvalidRequest(_)));
}

/// An executor that streams `streamed` but signs the hash of `signed_as`, the cheapest on
/// offer.
async fn lying_executor(
    bootstrap: &[Multiaddr],
    streamed: &'static str,
    signed_as: &'static str,
) -> (NodeKey, Announcer) {
    let node = lloom_core::network::test_utils::TestNode::spawn_with(NetworkConfig {
        bootstrap: bootstrap.to_vec(),
        ..NetworkConfig::local()
    })
    .await
    .unwrap();
    let key = node.key.clone();
    let handle = node.handle.clone();
    let listen_addrs =
        handle.listen_addrs().await.unwrap().iter().map(ToString::to_string).collect();
    let mut incoming = node.handle.accept_request_streams().unwrap();
    let signer = key.clone();
    tokio::spawn(async move {
        let _node = node; // keep the network alive
        while let Some((_, mut stream)) = incoming.next().await {
            let limits = WireLimits::default();
            let Ok(Some(WireMessage::Request(request))) = read_frame(&mut stream, &limits).await
            else {
                continue;
            };
            let chunk = StreamChunk { index: 0, text: streamed.into() };
            write_frame(&mut stream, &WireMessage::Chunk(chunk), &limits).await.unwrap();
            let c = &request.commitment;
            let commitment = ResponseCommitment {
                requestDigest: request.digest(),
                client: c.client,
                executor: c.executor,
                model: c.model.clone(),
                contentHash: content_hash(signed_as),
                inputTokens: 1,
                outputTokens: 1,
                totalCost: c.pricePerInputToken + c.pricePerOutputToken,
                finishReason: 0,
                timestamp: unix_now(),
            };
            let response = SignedResponse::sign(&signer, request.domain, commitment).unwrap();
            let _ = write_frame(&mut stream, &WireMessage::Response(response), &limits).await;
        }
    });
    let body = AnnouncementBody { offers: vec![offer(1)], load: Default::default(), listen_addrs };
    let announcer = Announcer::spawn(key.clone(), handle, body, AnnouncerConfig::default());
    (key, announcer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_executor_is_caught_penalised_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let (liar, _announcer) = lying_executor(&addrs, "Paris", "London").await;
    let (_honest, honest_key) = executor(&addrs, Script::answer(MODEL, "Paris."), 5, &dir).await;
    let client = client(&addrs, Strategy::Cheapest, 2).await;

    let receipt = client.chat(ask()).await.unwrap().collect().await.unwrap();
    assert_eq!(receipt.executor, honest_key.address());
    let first = &receipt.attempts[0];
    assert_eq!(first.executor, liar.address());
    let Some(AttemptFailure::Verification(why)) = &first.failure else {
        panic!("expected a verification failure, got {:?}", first.failure)
    };
    assert!(why.contains("content hash"), "the failed check is named: {why}");
    let stats = client.executor_stats().await;
    let liar_stats = stats.iter().find(|(a, _)| *a == liar.address()).unwrap();
    assert_eq!(liar_stats.1.failures, 1);
    assert!(liar_stats.1.cooldown_until.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prose_where_json_was_asked_for_is_refused_or_rejected_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    // The cheapest signs prose as its answer; the next one's backend ignores the format (as
    // one that drops `response_format` would), which its executor catches before signing.
    let (liar, _announcer) = lying_executor(&addrs, "Paris.", "Paris.").await;
    let (_prose, prose_key) = executor(&addrs, Script::answer(MODEL, "Paris."), 3, &dir).await;
    let json = Script::answer(MODEL, r#"{"capital": "Paris"}"#);
    let (_json, json_key) = executor(&addrs, json, 5, &dir).await;
    let client = client(&addrs, Strategy::Cheapest, 3).await;

    let mut request = ask();
    request.sampling.format = lloom_core::OutputFormat::JsonObject;
    let receipt = client.chat(request).await.unwrap().collect().await.unwrap();
    assert_eq!(
        (receipt.executor, receipt.text.as_str()),
        (json_key.address(), r#"{"capital": "Paris"}"#)
    );
    assert_eq!(receipt.checks.last(), Some(&lloom_client::FORMAT_CHECK));
    let [lied, refused, _] = &receipt.attempts[..] else { panic!("{:?}", receipt.attempts) };
    assert_eq!(lied.executor, liar.address());
    let Some(AttemptFailure::Verification(why)) = &lied.failure else {
        panic!("expected a verification failure, got {:?}", lied.failure)
    };
    assert!(why.contains("not a JSON object"), "the failed check is named: {why}");
    assert_eq!(refused.executor, prose_key.address());
    let Some(AttemptFailure::Refused { code: ErrorCode::BackendFailure, message, .. }) =
        &refused.failure
    else {
        panic!("expected a signed backend failure, got {:?}", refused.failure)
    };
    assert!(message.contains("not a JSON object"), "{message}");
    // Free text asks for no such check.
    let receipt = client.chat(ask()).await.unwrap().collect().await.unwrap();
    assert_eq!(receipt.checks.len(), lloom_client::RESPONSE_CHECKS.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_validator_down_known_executors_still_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (validator, addrs) = validator().await;
    let (_node, key) = executor(&addrs, Script::answer(MODEL, "Paris."), 3, &dir).await;
    let config = ClientConfig { directory_ttl: Duration::ZERO, ..ClientConfig::default() }
        .bootstrap(addrs.clone());
    let client = connect(config, 1).await;
    validator.shutdown().await;
    assert!(client.refresh().await.is_err(), "the validator is gone");
    let receipt = client.chat(ask()).await.unwrap().collect().await.unwrap();
    assert_eq!((receipt.executor, receipt.text.as_str()), (key.address(), "Paris."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_no_registry_listed_yet_is_found_through_the_dht() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let (_known, _) = executor(&addrs, Script::answer(MODEL, "Paris."), 3, &dir).await;
    let mut config = ClientConfig::default().bootstrap(addrs.clone());
    config.directory_ttl = Duration::from_secs(3600);
    let client = Client::connect(NodeKey::generate(), config).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while client.refresh().await.unwrap() < 1 {
        assert!(Instant::now() < deadline, "the first executor never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A second executor, with a model the client's (fresh) directory has never seen.
    let late_key = NodeKey::generate();
    let mut late_config = ExecutorConfig::new(dir.path().join("late"));
    late_config.network = NetworkConfig { bootstrap: addrs, ..NetworkConfig::local() };
    let late_offer = ModelOffer { model: "late-model".into(), ..offer(4) };
    let late_script = Script::answer("late-model", "Found through the DHT.");
    let late =
        ServedModel { offer: late_offer, backend: Arc::new(ScriptedBackend::new(late_script)) };
    let _late = ExecutorNode::start(&late_key, vec![late], late_config).await.unwrap();

    // The client does not refresh its directory; chat looks the model up in the DHT.
    let request = ChatRequest { timeout: WAIT, ..ChatRequest::user("late-model", "Where?") };
    let receipt = loop {
        match client.chat(request.clone()).await {
            Ok(stream) => break stream.collect().await.unwrap(),
            Err(Error::NoExecutor { .. }) if Instant::now() < deadline + WAIT => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    };
    assert_eq!(receipt.executor, late_key.address());
    assert_eq!(receipt.text, "Found through the DHT.");
    assert_eq!(receipt.cost, U256::from(10 * 4 + 4 * 8));

    // A model nobody provides is still a clear error, after a bounded lookup.
    let started = Instant::now();
    let missing = ChatRequest { timeout: WAIT, ..ChatRequest::user("nobody-serves-this", "?") };
    match client.chat(missing).await {
        Err(Error::NoExecutor { available, .. }) => {
            assert!(available.contains(&"late-model".to_owned()), "{available:?}");
        }
        other => panic!("expected NoExecutor, got {:?}", other.map(|_| ())),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_found_through_the_dht_stays_known_across_refreshes() {
    let dir = tempfile::tempdir().unwrap();
    // A validator with room for one executor: it never lists the second.
    let config = ValidatorConfig {
        network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
        registry: lloom_validator::RegistryConfig {
            max_executors: 1,
            ..lloom_validator::RegistryConfig::default()
        },
        ..ValidatorConfig::default()
    };
    let validator = Validator::spawn(&NodeKey::generate(), config).await.unwrap();
    let addrs = validator.listen_addrs().await.unwrap();
    let (_listed, _) = executor(&addrs, Script::answer(MODEL, "Paris."), 3, &dir).await;
    let client = connect(ClientConfig::default().bootstrap(addrs.clone()), 1).await;

    let unlisted_key = NodeKey::generate();
    let mut unlisted_config = ExecutorConfig::new(dir.path().join("unlisted"));
    unlisted_config.network = NetworkConfig { bootstrap: addrs, ..NetworkConfig::local() };
    let unlisted_offer = ModelOffer { model: "unlisted-model".into(), ..offer(4) };
    let script = Script::answer("unlisted-model", "Found through the DHT.");
    let unlisted =
        ServedModel { offer: unlisted_offer, backend: Arc::new(ScriptedBackend::new(script)) };
    let unlisted_node =
        ExecutorNode::start(&unlisted_key, vec![unlisted], unlisted_config).await.unwrap();
    let request = ChatRequest { timeout: WAIT, ..ChatRequest::user("unlisted-model", "Where?") };
    let deadline = Instant::now() + WAIT;
    let first = loop {
        match client.chat(request.clone()).await {
            Ok(stream) => break stream.collect().await.unwrap(),
            Err(Error::NoExecutor { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    };
    assert_eq!(first.executor, unlisted_key.address());

    // The validator still lists one executor; the client's refreshed directory keeps both.
    assert_eq!(client.refresh().await.unwrap(), 2, "the DHT find was dropped by the refresh");
    let models: Vec<String> = client.models().await.unwrap().into_iter().map(|m| m.model).collect();
    assert!(models.contains(&"unlisted-model".to_owned()), "{models:?}");
    let receipt = client.chat(request.clone()).await.unwrap().collect().await.unwrap();
    assert_eq!(receipt.executor, unlisted_key.address());

    // It withdraws, in the DHT too. The client's directory still lists it: one refused dial,
    // and it is no longer carried; the DHT then holds its withdrawal, not its offers, so the
    // model is unavailable now (once on offer), not served by a ghost.
    unlisted_node.shutdown().await.unwrap();
    let err = client.chat(request.clone()).await.unwrap().collect().await.unwrap_err();
    assert!(matches!(err, Error::AllFailed { .. }), "{err:?}");
    assert_eq!(client.refresh().await.unwrap(), 1, "no longer carried");
    match client.chat(request).await.map(|_| ()) {
        Err(Error::NoExecutor { last_offered_secs: Some(_), .. }) => {}
        other => panic!("expected the model to be unavailable now: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_validator_at_all_an_executor_reached_directly_describes_itself() {
    let dir = tempfile::tempdir().unwrap();
    // No validator: the executor bootstraps from nobody.
    let (node, key) = executor(&[], Script::answer(MODEL, "Paris."), 3, &dir).await;
    let executor_addrs = node.listen_addrs().await.unwrap();
    let config = ClientConfig::default().bootstrap(executor_addrs);
    let client = Client::connect(NodeKey::generate(), config).await.unwrap();
    // The executor answers the registry query with its own signed announcement (once it has
    // signed the first one).
    let deadline = Instant::now() + WAIT;
    while client.refresh().await.unwrap_or(0) < 1 {
        assert!(Instant::now() < deadline, "the executor never described itself");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let models = client.models().await.unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!((models[0].model.as_str(), models[0].executors), (MODEL, 1));
    let receipt = client.chat(ask()).await.unwrap().collect().await.unwrap();
    assert_eq!((receipt.executor, receipt.text.as_str()), (key.address(), "Paris."));
}

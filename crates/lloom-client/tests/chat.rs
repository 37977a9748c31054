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
    AnnouncementBody, ModelOffer, NodeKey, ResponseCommitment, SignedResponse, StreamChunk, U256,
    WireLimits, WireMessage, unix_now,
};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::serve::ServedModel;
use lloom_executor::{Announcer, AnnouncerConfig, ExecutorConfig, ExecutorNode};
use lloom_validator::{Validator, ValidatorConfig};

const MODEL: &str = "scripted";

fn offer(price: u64) -> ModelOffer {
    ModelOffer {
        model: MODEL.into(),
        context_length: 1024,
        price_per_input_token: U256::from(price),
        price_per_output_token: U256::from(price * 2),
        weights_sha256: None,
        quantization: None,
        capabilities: vec![],
    }
}

async fn validator() -> (Validator, Vec<Multiaddr>) {
    let config = ValidatorConfig {
        network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
        ..ValidatorConfig::default()
    };
    let v = Validator::spawn(&NodeKey::generate(), config).await.unwrap();
    let addrs = v.listen_addrs().await.unwrap();
    (v, addrs)
}

async fn executor(
    bootstrap: &[Multiaddr],
    script: Script,
    price: u64,
    dir: &tempfile::TempDir,
) -> (ExecutorNode, NodeKey) {
    let key = NodeKey::generate();
    let data = dir.path().join(key.address().to_string());
    (executor_as(&key, bootstrap, script, price, data).await, key)
}

/// Starts an executor with `key`, keeping its data in `data`.
async fn executor_as(
    key: &NodeKey,
    bootstrap: &[Multiaddr],
    script: Script,
    price: u64,
    data: std::path::PathBuf,
) -> ExecutorNode {
    let mut config = ExecutorConfig::new(data);
    config.network = NetworkConfig { bootstrap: bootstrap.to_vec(), ..NetworkConfig::local() };
    let model =
        ServedModel { offer: offer(price), backend: Arc::new(ScriptedBackend::new(script)) };
    ExecutorNode::start(key, vec![model], config).await.unwrap()
}

/// Connects a client and waits until it sees `count` executors.
async fn client(bootstrap: &[Multiaddr], strategy: Strategy, count: usize) -> Client {
    let config = ClientConfig::default().bootstrap(bootstrap.to_vec()).strategy(strategy);
    connect(config, count).await
}

/// Connects a client with `config` and waits until it sees `count` executors.
async fn connect(config: ClientConfig, count: usize) -> Client {
    let client = Client::connect(NodeKey::generate(), config).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while client.refresh().await.unwrap() < count {
        assert!(Instant::now() < deadline, "executors did not appear in the registry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
}

fn ask() -> ChatRequest {
    ChatRequest { timeout: WAIT, ..ChatRequest::user(MODEL, "Capital of France?") }
}

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

/// The TCP ports in `addrs`, on loopback.
fn tcp_ports(addrs: &[Multiaddr]) -> Vec<std::net::SocketAddr> {
    use lloom_core::network::Protocol;
    let port = |a: &Multiaddr| {
        a.iter().find_map(|p| if let Protocol::Tcp(n) = p { Some(n) } else { None })
    };
    addrs.iter().filter_map(port).map(|n| std::net::SocketAddr::from(([127, 0, 0, 1], n))).collect()
}

/// Shuts `node` down and waits until its ports refuse connections and `client` saw its
/// connection (if any) close.
async fn stop_executor(node: ExecutorNode, key: &NodeKey, client: &Client) {
    let ports = tcp_ports(&node.listen_addrs().await.unwrap());
    assert!(!ports.is_empty());
    node.shutdown().await.unwrap();
    let deadline = Instant::now() + WAIT;
    while ports.iter().any(|p| std::net::TcpStream::connect(p).is_ok()) {
        assert!(Instant::now() < deadline, "the executor's listener never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while client.network().is_connected(&key.peer_id()) {
        assert!(Instant::now() < deadline, "the client never saw the connection close");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client whose directory is fetched once (its TTL outlasts the test) and whose attempts
/// may wait for a first frame far longer than a request may take: an attempt that waited on
/// a dead executor's address until its idle timeout would leave no time for another.
async fn client_that_keeps_its_directory(bootstrap: &[Multiaddr], count: usize) -> Client {
    let config =
        ClientConfig { idle_timeout: WAIT * 4, directory_ttl: WAIT * 4, ..ClientConfig::default() }
            .bootstrap(bootstrap.to_vec())
            .strategy(Strategy::Cheapest);
    connect(config, count).await
}

fn assert_failed_dial(failure: Option<&AttemptFailure>) {
    match failure {
        Some(AttemptFailure::Unreachable(why)) => assert!(why.contains("dial failed"), "{why}"),
        other => panic!("expected a failed dial: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_that_went_away_is_passed_over_as_soon_as_its_dial_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    // The cheap executor is chosen first (strategy `cheapest`) but is gone by the time of the
    // request; the client still lists it.
    let (gone, gone_key) = executor(&addrs, Script::answer(MODEL, "never"), 1, &dir).await;
    let (_good, good_key) = executor(&addrs, Script::answer(MODEL, "Paris."), 5, &dir).await;
    let client = client_that_keeps_its_directory(&addrs, 2).await;
    stop_executor(gone, &gone_key, &client).await;

    let receipt = client.chat(ask()).await.unwrap().collect().await.unwrap();
    assert_eq!(receipt.executor, good_key.address());
    assert_eq!(receipt.text, "Paris.");
    assert_eq!(receipt.attempts.len(), 2, "{:?}", receipt.attempts);
    assert_eq!(receipt.attempts[0].executor, gone_key.address());
    assert_failed_dial(receipt.attempts[0].failure.as_ref());
    assert!(receipt.attempts[0].cooldown.is_some(), "it is cooled down");
    let json = lloom_client::report::receipt_json(&receipt);
    assert_eq!(json["attempts"][0]["cooldown_secs"], 5.0, "{json}");
}

/// An executor a client listed that restarted on other ports (with `script` there), once the
/// validator lists the new ports; the client's directory still has the old ones.
async fn moved_executor(
    addrs: &[Multiaddr],
    dir: &tempfile::TempDir,
    script: Script,
) -> (NodeKey, ExecutorNode, Client) {
    let key = NodeKey::generate();
    let answer = Script::answer(MODEL, "Paris.");
    let before = executor_as(&key, addrs, answer, 1, dir.path().join("before")).await;
    let client = client_that_keeps_its_directory(addrs, 1).await;
    stop_executor(before, &key, &client).await;
    let after = executor_as(&key, addrs, script, 1, dir.path().join("after")).await;
    let now_at = tcp_ports(&after.listen_addrs().await.unwrap());
    let observer = client_that_keeps_its_directory(addrs, 0).await;
    let deadline = Instant::now() + WAIT;
    loop {
        observer.refresh().await.unwrap();
        let listed = observer.take_directory().await.candidates(MODEL);
        if listed.iter().any(|c| c.address == key.address() && tcp_ports(&c.addrs) == now_at) {
            break;
        }
        assert!(Instant::now() < deadline, "the validator never listed the new addresses");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (key, after, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_that_restarted_elsewhere_is_reached_where_it_announces_itself_now() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let (key, _after, client) = moved_executor(&addrs, &dir, Script::answer(MODEL, "Paris.")).await;

    // The old ports' dial fails, the validators are asked again, and the executor is tried
    // where it is now, not cooled down.
    let receipt = client.chat(ask()).await.unwrap().collect().await.unwrap();
    assert_eq!((receipt.executor, receipt.text.as_str()), (key.address(), "Paris."));
    assert_eq!(receipt.attempts.len(), 2, "{:?}", receipt.attempts);
    assert_failed_dial(receipt.attempts[0].failure.as_ref());
    assert_eq!(receipt.attempts[0].cooldown, None);
    assert_eq!(receipt.attempts[1].failure, None);
    let shown = lloom_client::report::render_receipt(&receipt, true);
    assert!(shown.contains("it had moved: tried again where it announces itself now"), "{shown}");
    let json = lloom_client::report::receipt_json(&receipt);
    assert!(json["attempts"][0]["cooldown_secs"].is_null(), "{json}");
    let stats = client.executor_stats().await;
    let (_, stats) = stats.iter().find(|(a, _)| *a == key.address()).unwrap();
    assert_eq!((stats.failures, stats.cooldown_until), (0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_busy_where_it_moved_to_is_reported_busy() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let full = Script { capacity: 0, ..Script::answer(MODEL, "never") };
    let (_key, _after, client) = moved_executor(&addrs, &dir, full).await;
    let err = client.chat(ask()).await.unwrap().collect().await.unwrap_err();
    assert!(matches!(err, Error::AllBusy { retry_after_secs: 1 }), "{err:?}");
}

/// An executor of `model` at 1 wei a token whose announced address accepts connections and
/// says nothing (every dial to it hangs in its handshake); returns what keeps it up.
async fn silent_executor(
    bootstrap: &[Multiaddr],
    model: &str,
) -> (Announcer, tokio::task::JoinHandle<()>) {
    let node = lloom_core::network::test_utils::TestNode::spawn_with(NetworkConfig {
        bootstrap: bootstrap.to_vec(),
        ..NetworkConfig::local()
    })
    .await
    .unwrap();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("/ip4/127.0.0.1/tcp/{}", silent.local_addr().unwrap().port());
    let (key, handle) = (node.key.clone(), node.handle.clone());
    let held = tokio::spawn(async move {
        let _node = node;
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let offers = vec![ModelOffer { model: model.into(), ..offer(1) }];
    let body = AnnouncementBody { offers, load: Default::default(), listen_addrs: vec![addr] };
    (Announcer::spawn(key, handle, body, AnnouncerConfig::default()), held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_that_hangs_holds_up_no_request_to_another_executor() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let (_silent, held) = silent_executor(&addrs, "quiet").await;
    let (_good, good_key) = executor(&addrs, Script::answer(MODEL, "Paris."), 1, &dir).await;
    let client = client_that_keeps_its_directory(&addrs, 2).await;

    let quiet = ChatRequest { timeout: WAIT, ..ChatRequest::user("quiet", "Anyone there?") };
    let waiting = client.clone();
    let hung = tokio::spawn(async move { waiting.chat(quiet).await?.collect().await });
    tokio::time::sleep(Duration::from_millis(100)).await; // its dial is under way
    let receipt = client.chat(ask()).await.unwrap().collect().await.unwrap();
    assert_eq!((receipt.executor, receipt.text.as_str()), (good_key.address(), "Paris."));
    assert!(!hung.is_finished(), "the request to the silent executor is still dialling");
    hung.abort();
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_that_hangs_fails_over_after_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    // The silent executor is the cheapest; the answer must come from the other one well
    // within the request's 5 s, long before libp2p would give the handshake up by itself.
    let (_silent, held) = silent_executor(&addrs, MODEL).await;
    let (_good, good_key) = executor(&addrs, Script::answer(MODEL, "Paris."), 5, &dir).await;
    let config = ClientConfig {
        idle_timeout: WAIT * 4,
        connect_timeout: Duration::from_secs(1),
        ..ClientConfig::default()
    }
    .bootstrap(addrs.clone())
    .strategy(Strategy::Cheapest);
    let client = connect(config, 2).await;
    let request = ChatRequest { timeout: Duration::from_secs(5), ..ask() };
    let receipt = client.chat(request).await.unwrap().collect().await.unwrap();
    assert_eq!((receipt.executor, receipt.text.as_str()), (good_key.address(), "Paris."));
    match &receipt.attempts[0].failure {
        Some(AttemptFailure::Unreachable(why)) => {
            assert!(why.contains("no connection within 1s"), "{why}");
        }
        other => panic!("expected the connect timeout: {other:?}"),
    }
    held.abort();
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
    assert!(matches!(err, Error::AllBusy { retry_after_secs: 1 }), "{err:?}");
    assert!(err.to_string().contains("retry after 1s"), "{err}");
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

/// An executor that streams "Paris" but signs the hash of another text.
async fn lying_executor(bootstrap: &[Multiaddr]) -> (NodeKey, Announcer) {
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
            let chunk = StreamChunk { index: 0, text: "Paris".into() };
            write_frame(&mut stream, &WireMessage::Chunk(chunk), &limits).await.unwrap();
            let c = &request.commitment;
            let commitment = ResponseCommitment {
                requestDigest: request.digest(),
                client: c.client,
                executor: c.executor,
                model: c.model.clone(),
                contentHash: content_hash("London"),
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
    let (liar, _announcer) = lying_executor(&addrs).await;
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
    let _unlisted =
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
    let receipt = client.chat(request).await.unwrap().collect().await.unwrap();
    assert_eq!(receipt.executor, unlisted_key.address());
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

//! The request server over real libp2p streams, with a scripted backend: streamed chunks,
//! signed checkpoints and responses, the receipt store, and a signed error for every rule.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use lloom_core::network::test_utils::{TestNode, WAIT};
use lloom_core::network::{NetworkConfig, Stream};
use lloom_core::verify::{verify_checkpoint, verify_error, verify_response};
use lloom_core::wire::{read_frame, request_hash, write_frame};
use lloom_core::{
    ChatMessage, ErrorCode, FinishReason, ModelOffer, NodeKey, ReplayStore, RequestBody,
    RequestCommitment, Role, SamplingParams, SignedRequest, U256, VerifyPolicy, WireLimits,
    WireMessage, unix_now,
};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::metrics::ExecutorMetrics;
use lloom_executor::serve::{RateLimits, ReceiptStore, ServeConfig, ServedModel, Server};

const MODEL: &str = "scripted";
const ANSWER: &str = "The capital of France is Paris , of course .";

struct Rig {
    executor: TestNode,
    client: TestNode,
    server: Server,
    backend: Arc<ScriptedBackend>,
    accept: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

fn offer() -> ModelOffer {
    ModelOffer {
        model: MODEL.into(),
        context_length: 1024,
        price_per_input_token: U256::from(3),
        price_per_output_token: U256::from(5),
        weights_sha256: None,
        quantization: None,
        capabilities: vec![],
    }
}

async fn server_on(
    executor: &TestNode,
    backend: Arc<ScriptedBackend>,
    config: ServeConfig,
    dir: &std::path::Path,
) -> (Server, tokio::task::JoinHandle<()>) {
    let model = ServedModel { offer: offer(), backend };
    let server = Server::new(
        executor.key.clone(),
        config,
        vec![model],
        ReplayStore::open(&dir.join("replay.redb")).unwrap(),
        ReceiptStore::open(&dir.join("receipts.redb")).unwrap(),
    )
    .unwrap();
    let accept = server.spawn(&executor.handle).unwrap();
    (server, accept)
}

async fn rig(script: Script, config: ServeConfig) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let executor = TestNode::spawn_with(NetworkConfig::local()).await.unwrap();
    let backend = Arc::new(ScriptedBackend::new(script));
    let (server, accept) = server_on(&executor, backend.clone(), config, dir.path()).await;
    let client = TestNode::spawn_with(NetworkConfig {
        bootstrap: vec![executor.addr().await.unwrap()],
        ..NetworkConfig::local()
    })
    .await
    .unwrap();
    Rig { executor, client, server, backend, accept, dir }
}

fn config(checkpoint_every: u64) -> ServeConfig {
    ServeConfig { checkpoint_every, ..ServeConfig::default() }
}

fn commitment(client: &NodeKey, executor: &NodeKey, body: &RequestBody) -> RequestCommitment {
    RequestCommitment {
        client: client.address(),
        executor: executor.address(),
        model: MODEL.into(),
        requestHash: request_hash(body),
        maxInputTokens: 512,
        maxOutputTokens: 64,
        pricePerInputToken: U256::from(3),
        pricePerOutputToken: U256::from(5),
        nonce: 1,
        deadline: unix_now() + 60,
    }
}

fn body() -> RequestBody {
    RequestBody {
        messages: vec![ChatMessage { role: Role::User, content: "Capital of France?".into() }],
        sampling: SamplingParams::default(),
    }
}

fn signed(rig: &Rig, edit: impl FnOnce(&mut RequestCommitment)) -> SignedRequest {
    let body = body();
    let mut c = commitment(&rig.client.key, &rig.executor.key, &body);
    edit(&mut c);
    SignedRequest::sign(&rig.client.key, Default::default(), c, body).unwrap()
}

async fn open(rig: &Rig) -> Stream {
    let deadline = Instant::now() + WAIT;
    loop {
        match rig.client.handle.open_request_stream(rig.executor.key.peer_id()).await {
            Ok(stream) => return stream,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying stream open: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot open a stream: {e}"),
        }
    }
}

/// Sends `request` on a new stream, closes its sending side (no further request), and reads
/// every frame until the executor closes the stream.
async fn exchange(rig: &Rig, request: &SignedRequest) -> Vec<WireMessage> {
    let mut stream = open(rig).await;
    let limits = WireLimits::default();
    write_frame(&mut stream, &WireMessage::Request(request.clone()), &limits).await.unwrap();
    stream.close().await.unwrap();
    let mut frames = Vec::new();
    while let Some(frame) =
        tokio::time::timeout(WAIT, read_frame(&mut stream, &limits)).await.unwrap().unwrap()
    {
        frames.push(frame);
    }
    frames
}

fn the_error(frames: &[WireMessage]) -> &lloom_core::SignedError {
    match frames {
        [WireMessage::Error(e)] => e,
        other => panic!("expected exactly one signed error, got {other:?}"),
    }
}

#[tokio::test]
async fn streams_chunks_and_signed_checkpoints_then_a_stored_signed_response() {
    let rig = rig(Script::answer(MODEL, ANSWER), config(4)).await;
    let request = signed(&rig, |_| {});
    let frames = exchange(&rig, &request).await;

    let policy = VerifyPolicy::default();
    let peer = rig.executor.key.peer_id();
    let mut text = String::new();
    let (mut chunks, mut checkpoints) = (0, Vec::new());
    let mut response = None;
    for frame in &frames {
        match frame {
            WireMessage::Chunk(c) => {
                assert_eq!(c.index, chunks, "chunks arrive in order");
                chunks += 1;
                text.push_str(&c.text);
            }
            WireMessage::Checkpoint(cp) => {
                verify_checkpoint(cp, &request, &text, Some(&peer), &policy, unix_now()).unwrap();
                checkpoints.push(cp.commitment.outputTokens);
            }
            WireMessage::Response(r) => response = Some(r.clone()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(text, ANSWER);
    assert_eq!(checkpoints, vec![4, 8], "a checkpoint every 4 tokens");
    let response = response.expect("a final response");
    verify_response(&response, &request, &text, Some(&peer), &policy, unix_now()).unwrap();
    let c = &response.commitment;
    assert_eq!((c.inputTokens, c.outputTokens), (10, 10));
    assert_eq!(c.totalCost, U256::from(10 * 3 + 10 * 5));
    assert_eq!(c.finishReason, FinishReason::Stop.code());

    let stored = rig.server.receipts().get(&request.digest()).unwrap().expect("stored receipt");
    assert_eq!((stored.request, stored.response), (request, response));
    assert_eq!(rig.server.receipts().counts().unwrap(), (1, 1));
    assert_eq!(rig.server.stats().completed.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn every_rule_failure_is_a_signed_error_naming_the_rule() {
    let rig = rig(Script::answer(MODEL, ANSWER), config(0)).await;
    let other = NodeKey::generate();
    let cases: Vec<(&str, SignedRequest, ErrorCode, &str)> = vec![
        (
            "another executor",
            signed(&rig, |c| c.executor = other.address()),
            ErrorCode::InvalidRequest,
            "addressed to executor",
        ),
        (
            "unknown model",
            signed(&rig, |c| c.model = "gpt-17".into()),
            ErrorCode::UnknownModel,
            "served: scripted",
        ),
        (
            "price too low",
            signed(&rig, |c| c.pricePerOutputToken = U256::from(4)),
            ErrorCode::PriceTooLow,
            "asks 3/5",
        ),
        (
            "deadline passed",
            signed(&rig, |c| c.deadline = unix_now() - 5),
            ErrorCode::DeadlineExceeded,
            "has passed",
        ),
        (
            "no output tokens",
            signed(&rig, |c| c.maxOutputTokens = 0),
            ErrorCode::InvalidRequest,
            "maxOutputTokens 0",
        ),
        (
            "body does not match its hash",
            {
                let mut r = signed(&rig, |_| {});
                r.body.messages[0].content = "something else".into();
                r
            },
            ErrorCode::InvalidRequest,
            "request hash",
        ),
        (
            "signed by a key other than the sender's",
            {
                let body = body();
                let mut c = commitment(&other, &rig.executor.key, &body);
                c.nonce = 99;
                SignedRequest::sign(&other, Default::default(), c, body).unwrap()
            },
            ErrorCode::InvalidRequest,
            "is not the sending peer",
        ),
        (
            "another chain",
            {
                let body = body();
                let c = commitment(&rig.client.key, &rig.executor.key, &body);
                let domain = lloom_core::DomainConfig { chain_id: 1, ..Default::default() };
                SignedRequest::sign(&rig.client.key, domain, c, body).unwrap()
            },
            ErrorCode::InvalidRequest,
            "wrong EIP-712 domain",
        ),
    ];
    let policy = VerifyPolicy::default();
    for (name, request, code, needle) in cases {
        let frames = exchange(&rig, &request).await;
        let error = the_error(&frames);
        verify_error(
            error,
            &request.digest(),
            Some(&rig.executor.key.peer_id()),
            &policy,
            unix_now(),
        )
        .unwrap_or_else(|e| panic!("{name}: the error notice must verify: {e}"));
        assert_eq!(ErrorCode::from_code(error.commitment.code), code, "{name}");
        assert!(
            error.commitment.message.to_lowercase().contains(&needle.to_lowercase()),
            "{name}: {:?} should mention {needle:?}",
            error.commitment.message
        );
    }
    assert_eq!(rig.backend.running(), 0, "no refused request reached the backend");
    assert_eq!(rig.server.receipts().counts().unwrap(), (0, 0));
}

#[tokio::test]
async fn a_replayed_nonce_is_refused_even_after_a_restart() {
    let rig = rig(Script::answer(MODEL, ANSWER), config(0)).await;
    let request = signed(&rig, |c| c.nonce = 7);
    assert!(matches!(exchange(&rig, &request).await.last(), Some(WireMessage::Response(_))));
    let again = exchange(&rig, &request).await;
    assert_eq!(ErrorCode::from_code(the_error(&again).commitment.code), ErrorCode::NonceReplayed);

    // Stop the server: the store is closed, and reopened as a restarted executor would.
    let Rig { server, accept, dir, client, .. } = rig;
    accept.abort();
    let _ = accept.await;
    drop(server);
    let reopened = ReplayStore::open(&dir.path().join("replay.redb")).unwrap();
    assert!(reopened.contains(client.key.address(), 7).unwrap(), "the nonce survived");
}

#[tokio::test]
async fn an_answered_request_is_refused_after_a_crash_that_lost_its_nonce() {
    // Nonce syncs are deferred as long as allowed (a minute, far longer than this test), and
    // the restarted executor gets an empty nonce store (what a crash before the sync leaves):
    // the durable receipt still refuses the replay.
    let interval = lloom_executor::serve::MAX_NONCE_SYNC_INTERVAL;
    let config = ServeConfig { nonce_sync_interval: interval, ..config(0) };
    let rig = rig(Script::answer(MODEL, ANSWER), config.clone()).await;
    let request = signed(&rig, |c| c.nonce = 9);
    assert!(matches!(exchange(&rig, &request).await.last(), Some(WireMessage::Response(_))));

    let Rig { executor, client, server, backend, accept, dir } = rig;
    accept.abort();
    let _ = accept.await;
    drop(server);
    std::fs::remove_file(dir.path().join("replay.redb")).unwrap();
    let (server, accept) = server_on(&executor, backend.clone(), config, dir.path()).await;
    let rig = Rig { executor, client, server, backend, accept, dir };
    let again = exchange(&rig, &request).await;
    let error = the_error(&again);
    assert_eq!(ErrorCode::from_code(error.commitment.code), ErrorCode::NonceReplayed);
    assert!(error.commitment.message.contains("nonce"), "{}", error.commitment.message);
    assert_eq!(rig.server.stats().completed.load(Ordering::Relaxed), 0, "nothing was served");
    assert_eq!(rig.server.receipts().counts().unwrap(), (1, 1), "still one receipt");
}

/// A request replayed while the first copy is still being served has no receipt yet: the
/// nonce rule alone refuses it, whether the nonce store holds nonces in memory or syncs each.
#[tokio::test]
async fn a_request_replayed_while_in_flight_is_refused_by_the_nonce_rule() {
    for interval in [Duration::from_secs(1), Duration::ZERO] {
        let script = Script {
            delay: Duration::from_millis(20),
            ..Script::answer(MODEL, &"word ".repeat(20))
        };
        let config = ServeConfig { nonce_sync_interval: interval, ..config(0) };
        let rig = rig(script, config).await;
        let request = signed(&rig, |c| c.nonce = 11);
        let mut first = open(&rig).await;
        let limits = WireLimits::default();
        write_frame(&mut first, &WireMessage::Request(request.clone()), &limits).await.unwrap();
        let chunk = read_frame(&mut first, &limits).await.unwrap();
        assert!(matches!(chunk, Some(WireMessage::Chunk(_))), "{interval:?}: {chunk:?}");

        let again = exchange(&rig, &request).await;
        let error = the_error(&again);
        assert_eq!(ErrorCode::from_code(error.commitment.code), ErrorCode::NonceReplayed);
        assert!(!rig.server.receipts().contains(&request.digest()).unwrap(), "no receipt yet");
        // The first copy is still served to its end.
        let mut last = None;
        while let Some(frame) =
            tokio::time::timeout(WAIT, read_frame(&mut first, &limits)).await.unwrap().unwrap()
        {
            let done = matches!(frame, WireMessage::Response(_));
            last = Some(frame);
            if done {
                break;
            }
        }
        assert!(matches!(last, Some(WireMessage::Response(_))), "{interval:?}: {last:?}");
    }
}

#[tokio::test]
async fn garbage_and_oversized_frames_close_the_stream_without_an_answer() {
    let rig = rig(Script::answer(MODEL, ANSWER), config(0)).await;
    for bytes in [vec![0, 0, 0, 3, 1, 0xff, 0xff], u32::MAX.to_be_bytes().to_vec(), vec![1, 2]] {
        let mut stream = open(&rig).await;
        stream.write_all(&bytes).await.unwrap();
        stream.flush().await.unwrap();
        if bytes.len() == 2 {
            stream.close().await.unwrap(); // a truncated header, then EOF
        }
        let mut rest = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await.unwrap();
        assert!(read.is_err() || rest.is_empty(), "no answer to {bytes:?}");
    }
    assert_eq!(rig.server.stats().dropped_streams.load(Ordering::Relaxed), 3);
    // The server still serves well-formed requests.
    let frames = exchange(&rig, &signed(&rig, |_| {})).await;
    assert!(matches!(frames.last(), Some(WireMessage::Response(_))));
}

/// Sends `request` on `stream` and reads the frames of its answer, up to the response or error.
async fn exchange_on(stream: &mut Stream, request: &SignedRequest) -> Vec<WireMessage> {
    let limits = WireLimits::default();
    write_frame(stream, &WireMessage::Request(request.clone()), &limits).await.unwrap();
    let mut frames = Vec::new();
    loop {
        let frame = tokio::time::timeout(WAIT, read_frame(stream, &limits)).await.unwrap().unwrap();
        let frame = frame.expect("the stream stays open until the answer is complete");
        let last = matches!(frame, WireMessage::Response(_) | WireMessage::Error(_));
        frames.push(frame);
        if last {
            return frames;
        }
    }
}

#[tokio::test]
async fn one_stream_carries_exchange_after_exchange_refusals_included() {
    let rig = rig(Script::answer(MODEL, ANSWER), config(4)).await;
    let mut stream = open(&rig).await;
    let peer = rig.executor.key.peer_id();
    let policy = VerifyPolicy::default();
    for nonce in 1..=3 {
        let request = signed(&rig, |c| c.nonce = nonce);
        let frames = exchange_on(&mut stream, &request).await;
        let text: String = frames
            .iter()
            .filter_map(|f| match f {
                WireMessage::Chunk(c) => Some(c.text.as_str()),
                _ => None,
            })
            .collect();
        let Some(WireMessage::Response(response)) = frames.last() else { panic!("{frames:?}") };
        verify_response(response, &request, &text, Some(&peer), &policy, unix_now()).unwrap();
    }
    // A refused request (a replay) ends its exchange, not the stream.
    let replay = exchange_on(&mut stream, &signed(&rig, |c| c.nonce = 2)).await;
    assert_eq!(ErrorCode::from_code(the_error(&replay).commitment.code), ErrorCode::NonceReplayed);
    let request = signed(&rig, |c| c.nonce = 4);
    assert!(matches!(
        exchange_on(&mut stream, &request).await.last(),
        Some(WireMessage::Response(_))
    ));
    stream.close().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty(), "the executor closes its side once the client closed");

    let stats = rig.server.stats();
    assert_eq!(stats.streams_opened.load(Ordering::Relaxed), 1);
    assert_eq!(stats.completed.load(Ordering::Relaxed), 4);
    assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
    assert_eq!(stats.dropped_streams.load(Ordering::Relaxed), 0);
    assert_eq!(rig.server.receipts().counts().unwrap(), (4, 4));
}

#[tokio::test]
async fn a_stream_idle_past_the_request_timeout_is_closed_without_counting_as_dropped() {
    let config = ServeConfig { request_timeout: Duration::from_millis(300), ..config(0) };
    let rig = rig(Script::answer(MODEL, ANSWER), config).await;
    let mut stream = open(&rig).await;
    let frames = exchange_on(&mut stream, &signed(&rig, |_| {})).await;
    assert!(matches!(frames.last(), Some(WireMessage::Response(_))));
    let mut rest = Vec::new();
    let started = Instant::now();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await.unwrap();
    assert!(read.is_err() || rest.is_empty(), "nothing more is sent");
    assert!(started.elapsed() >= Duration::from_millis(200), "closed only once idle");
    assert_eq!(rig.server.stats().dropped_streams.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn idle_streams_are_closed_to_make_room_when_every_slot_is_taken() {
    let rig = rig(Script::answer(MODEL, ANSWER), ServeConfig { max_streams: 2, ..config(0) }).await;
    let limits = WireLimits::default();
    // One stream idle after an exchange and one just opened, whose request is on its way,
    // hold both slots.
    let mut idle = open(&rig).await;
    let frames = exchange_on(&mut idle, &signed(&rig, |c| c.nonce = 1)).await;
    assert!(matches!(frames.last(), Some(WireMessage::Response(_))));
    let mut fresh = open(&rig).await;
    let deadline = Instant::now() + WAIT;
    while rig.server.stats().streams_opened.load(Ordering::Relaxed) < 2 {
        assert!(Instant::now() < deadline, "the fresh stream was not accepted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A third stream finds no slot: it is closed unread, and the idle one is reclaimed.
    let mut third = open(&rig).await;
    let request = signed(&rig, |c| c.nonce = 3);
    let _ = write_frame(&mut third, &WireMessage::Request(request.clone()), &limits).await;
    let refused = tokio::time::timeout(WAIT, read_frame(&mut third, &limits)).await.unwrap();
    assert!(matches!(refused, Ok(None) | Err(_)), "no answer on a stream beyond the limit");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, idle.read_to_end(&mut rest)).await.unwrap();
    assert!(read.is_err() || rest.is_empty(), "the idle stream was closed");
    assert_eq!(rig.server.stats().idle_streams_reclaimed.load(Ordering::Relaxed), 1);
    // The fresh stream kept its slot: its request is served.
    let frames = exchange_on(&mut fresh, &signed(&rig, |c| c.nonce = 2)).await;
    assert!(matches!(frames.last(), Some(WireMessage::Response(_))));
    // The retry (what a client does with a stream closed before any answer) is served.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut retry = open(&rig).await;
        let _ = write_frame(&mut retry, &WireMessage::Request(request.clone()), &limits).await;
        match tokio::time::timeout(WAIT, read_frame(&mut retry, &limits)).await.unwrap() {
            Ok(Some(_)) => break,
            _ => assert!(Instant::now() < deadline, "the retry was never served"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_full_backend_answers_a_signed_busy_with_retry_after() {
    let script = Script { capacity: 0, ..Script::answer(MODEL, ANSWER) };
    let rig = rig(script, config(0)).await;
    let request = signed(&rig, |_| {});
    let frames = exchange(&rig, &request).await;
    let error = the_error(&frames);
    assert_eq!(ErrorCode::from_code(error.commitment.code), ErrorCode::Busy);
    assert_eq!(error.commitment.retryAfterSecs, 1);
    assert_eq!(rig.server.stats().busy.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_request_longer_than_the_context_is_refused_signed_before_any_work() {
    let script = Script { context: Some(8), ..Script::answer(MODEL, ANSWER) };
    let rig = rig(script, config(0)).await;
    let request = signed(&rig, |c| {
        c.nonce = 5;
        c.maxOutputTokens = 100;
    });
    let frames = exchange(&rig, &request).await;
    assert_eq!(frames.len(), 1, "nothing streamed: {frames:?}");
    let error = the_error(&frames);
    let peer = rig.executor.key.peer_id();
    verify_error(error, &request.digest(), Some(&peer), &VerifyPolicy::default(), unix_now())
        .unwrap();
    assert_eq!(ErrorCode::from_code(error.commitment.code), ErrorCode::ContextExceeded);
    assert!(error.commitment.message.contains("exceeds the 8 tokens of context"));
    assert_eq!(error.commitment.retryAfterSecs, 0);
    assert_eq!(rig.server.receipts().get(&request.digest()).unwrap(), None, "nothing to settle");
    // More output tokens than the announced context (1,024 here) is refused the same way by
    // the admission rules, before the backend is asked.
    let beyond = signed(&rig, |c| {
        c.nonce = 6;
        c.maxOutputTokens = 5000;
    });
    let error = the_error(&exchange(&rig, &beyond).await).clone();
    assert_eq!(ErrorCode::from_code(error.commitment.code), ErrorCode::ContextExceeded);
    assert!(error.commitment.message.contains("more than the context length"));
    // A request that fits is served.
    let shorter = signed(&rig, |c| {
        c.nonce = 7;
        c.maxOutputTokens = 2;
    });
    let frames = exchange(&rig, &shorter).await;
    assert!(matches!(frames.last(), Some(WireMessage::Response(_))), "{frames:?}");
}

#[tokio::test]
async fn rate_limited_clients_are_told_when_to_come_back() {
    let limits = RateLimits { requests_per_minute: Some(1), ..RateLimits::default() };
    let rig = rig(
        Script::answer(MODEL, ANSWER),
        ServeConfig { rate_limits: limits, checkpoint_every: 0, ..ServeConfig::default() },
    )
    .await;
    assert!(matches!(
        exchange(&rig, &signed(&rig, |c| c.nonce = 1)).await.last(),
        Some(WireMessage::Response(_))
    ));
    let frames = exchange(&rig, &signed(&rig, |c| c.nonce = 2)).await;
    let error = the_error(&frames);
    assert_eq!(ErrorCode::from_code(error.commitment.code), ErrorCode::RateLimited);
    assert!(error.commitment.retryAfterSecs >= 1 && error.commitment.retryAfterSecs <= 60);
}

#[tokio::test]
async fn a_client_that_goes_away_stops_the_generation() {
    let script =
        Script { delay: Duration::from_millis(20), ..Script::answer(MODEL, &"word ".repeat(200)) };
    let rig = rig(script, config(0)).await;
    let mut stream = open(&rig).await;
    let limits = WireLimits::default();
    let request = signed(&rig, |c| c.maxOutputTokens = 500);
    write_frame(&mut stream, &WireMessage::Request(request), &limits).await.unwrap();
    let first = read_frame(&mut stream, &limits).await.unwrap();
    assert!(matches!(first, Some(WireMessage::Chunk(_))));
    drop(stream);
    let deadline = Instant::now() + WAIT;
    while rig.backend.cancelled.load(Ordering::SeqCst) == 0 || rig.backend.running() > 0 {
        assert!(Instant::now() < deadline, "generation was not cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rig.server.stats().in_flight.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_draining_server_finishes_the_requests_in_flight_and_refuses_new_ones_signed() {
    let script = Script {
        delay: Duration::from_millis(20),
        ..Script::answer(MODEL, &["word"; 15].join(" "))
    };
    let rig = rig(script, config(0)).await;
    let limits = WireLimits::default();
    let mut stream = open(&rig).await;
    let running = signed(&rig, |c| c.nonce = 1);
    write_frame(&mut stream, &WireMessage::Request(running.clone()), &limits).await.unwrap();
    let first = read_frame(&mut stream, &limits).await.unwrap();
    assert!(matches!(first, Some(WireMessage::Chunk(_))), "{first:?}");
    assert_eq!(rig.server.offers().len(), 1);
    let metrics = ExecutorMetrics {
        server: rig.server.clone(),
        pool: None,
        free_memory: None,
        network: None,
    };
    assert!(metrics.render(None).contains("lloom_executor_draining 0\n"));
    assert_eq!(metrics.health().0.as_u16(), 200);

    rig.server.start_draining();
    assert!(rig.server.is_draining());
    assert!(rig.server.offers().is_empty(), "nothing is offered while draining");
    assert!(metrics.render(None).contains("lloom_executor_draining 1\n"));
    let (status, health) = metrics.health();
    assert_eq!((status.as_u16(), &health["status"]), (503, &serde_json::json!("draining")));
    // Still running: waiting a moment gives up with it counted.
    assert_eq!(rig.server.wait_idle(Duration::from_millis(50)).await, 1);
    // A new request, on a stream of its own, is refused with a signed Busy saying why.
    let late = signed(&rig, |c| c.nonce = 2);
    let frames = exchange(&rig, &late).await;
    let error = the_error(&frames);
    let peer = rig.executor.key.peer_id();
    verify_error(error, &late.digest(), Some(&peer), &VerifyPolicy::default(), unix_now()).unwrap();
    assert_eq!(ErrorCode::from_code(error.commitment.code), ErrorCode::Busy);
    assert!(error.commitment.message.contains("shutting down"), "{}", error.commitment.message);
    assert_eq!(error.commitment.retryAfterSecs, 60);

    // The request in flight streams to its signed, stored final response.
    let mut last = None;
    while let Some(frame) =
        tokio::time::timeout(WAIT, read_frame(&mut stream, &limits)).await.unwrap().unwrap()
    {
        let done = matches!(frame, WireMessage::Response(_));
        last = Some(frame);
        if done {
            break;
        }
    }
    let Some(WireMessage::Response(response)) = last else { panic!("{last:?}") };
    assert_eq!(response.commitment.outputTokens, 15);
    assert!(rig.server.receipts().get(&running.digest()).unwrap().is_some());
    assert_eq!(rig.server.wait_idle(WAIT).await, 0);
    // The next request on the same stream is refused too.
    let again = signed(&rig, |c| c.nonce = 3);
    write_frame(&mut stream, &WireMessage::Request(again), &limits).await.unwrap();
    let refused = read_frame(&mut stream, &limits).await.unwrap();
    let Some(WireMessage::Error(error)) = refused else { panic!("{refused:?}") };
    assert_eq!(ErrorCode::from_code(error.commitment.code), ErrorCode::Busy);
    assert_eq!(rig.server.stats().busy.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_backend_failure_is_signed_and_the_last_checkpoint_is_kept_as_a_receipt() {
    let script = Script { fail_after: Some(5), ..Script::answer(MODEL, ANSWER) };
    let rig = rig(script, config(2)).await;
    let request = signed(&rig, |_| {});
    let frames = exchange(&rig, &request).await;
    let Some(WireMessage::Error(error)) = frames.last() else { panic!("{frames:?}") };
    assert_eq!(ErrorCode::from_code(error.commitment.code), ErrorCode::BackendFailure);
    let kept = rig.server.receipts().get(&request.digest()).unwrap().expect("checkpoint receipt");
    assert_eq!(kept.response.commitment.finishReason, FinishReason::Partial.code());
    assert_eq!(kept.response.commitment.outputTokens, 4);
}

#[tokio::test]
async fn an_answer_in_another_shape_than_the_json_asked_for_is_neither_signed_nor_stored() {
    // The scripted backend answers prose whatever the format, as a backend that ignores
    // `response_format` would.
    let rig = rig(Script::answer(MODEL, ANSWER), config(4)).await;
    let mut body = body();
    body.sampling.format = lloom_core::OutputFormat::JsonObject;
    let c = commitment(&rig.client.key, &rig.executor.key, &body);
    let request = SignedRequest::sign(&rig.client.key, Default::default(), c, body).unwrap();
    let frames = exchange(&rig, &request).await;
    assert!(!frames.iter().any(|f| matches!(f, WireMessage::Response(_))), "{frames:?}");
    let Some(WireMessage::Error(error)) = frames.last() else { panic!("{frames:?}") };
    let peer = rig.executor.key.peer_id();
    let policy = VerifyPolicy::default();
    verify_error(error, &request.digest(), Some(&peer), &policy, unix_now()).unwrap();
    assert_eq!(ErrorCode::from_code(error.commitment.code), ErrorCode::BackendFailure);
    assert!(error.commitment.message.contains("not a JSON object"), "{}", error.commitment.message);
    // Nothing to settle: neither the answer nor its checkpoints were kept.
    assert_eq!(rig.server.receipts().get(&request.digest()).unwrap(), None);
    assert_eq!(rig.server.stats().off_format.load(Ordering::Relaxed), 1);
    assert_eq!(rig.server.stats().completed.load(Ordering::Relaxed), 0);

    // The same answer where free text was asked for is signed and stored as ever.
    let request = signed(&rig, |c| c.nonce = 2);
    let frames = exchange(&rig, &request).await;
    assert!(matches!(frames.last(), Some(WireMessage::Response(_))), "{frames:?}");
}

/// A server with no models and its stores in `dir`, or the refusal of `config`.
fn server_in(dir: &std::path::Path, config: ServeConfig) -> lloom_executor::Result<Server> {
    Server::new(
        NodeKey::generate(),
        config,
        vec![],
        ReplayStore::open(&dir.join("replay.redb")).unwrap(),
        ReceiptStore::open(&dir.join("receipts.redb")).unwrap(),
    )
}

#[test]
fn a_nonce_sync_interval_above_a_minute_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let make = |interval| {
        server_in(
            dir.path(),
            ServeConfig { nonce_sync_interval: interval, ..ServeConfig::default() },
        )
    };
    let Err(refused) = make(Duration::from_secs(61)) else { panic!("61 s must be refused") };
    let refused = refused.to_string();
    assert!(refused.contains("nonce_sync_ms 61000") && refused.contains("60000"), "{refused}");
    drop(make(lloom_executor::serve::MAX_NONCE_SYNC_INTERVAL).expect("60 s is accepted"));
}

#[test]
fn a_commit_delay_above_100_ms_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let make = |delay| {
        server_in(dir.path(), ServeConfig { commit_delay: delay, ..ServeConfig::default() })
    };
    let Err(refused) = make(Duration::from_millis(101)) else { panic!("101 ms must be refused") };
    let refused = refused.to_string();
    assert!(refused.contains("commit_delay_us 101000") && refused.contains("100000"), "{refused}");
    drop(make(lloom_executor::serve::MAX_COMMIT_DELAY).expect("100 ms is accepted"));
}

//! The request server over real libp2p streams, with a scripted backend: streamed chunks,
//! signed checkpoints and responses, the receipt store, and a signed error for every rule.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod serve_rig;
use serve_rig::*;

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

#[tokio::test]
async fn a_full_backend_answers_a_signed_busy_with_retry_after() {
    let script = Script { capacity: 0, ..Script::answer(MODEL, ANSWER) };
    let rig = rig(script, config(0)).await;
    let request = signed(&rig, |_| {});
    let frames = exchange(&rig, &request).await;
    let error = the_error(&frames);
    assert_eq!(ErrorCode::from_code(error.commitment.code), ErrorCode::Busy);
    assert_eq!(error.commitment.retryAfterMillis, 1_000, "nothing timed yet: a second");
    assert_eq!(rig.server.stats().busy.load(Ordering::Relaxed), 1);
}

/// The retry-after (ms) of the Busy answer an executor gives once one answer (its tokens `delay`
/// apart) was timed and `slots` requests hold every slot of its backend.
async fn retry_after_with_every_slot_taken(delay: Duration, slots: u64) -> u64 {
    let capacity = usize::try_from(slots).unwrap();
    let script = Script { delay, capacity, ..Script::answer(MODEL, ANSWER) };
    let rig = rig(script, config(0)).await;
    let frames = exchange(&rig, &signed(&rig, |c| c.nonce = 1)).await;
    assert!(matches!(frames.last(), Some(WireMessage::Response(_))), "{frames:?}");

    let limits = WireLimits::default();
    let mut running = Vec::new();
    for nonce in 2..2 + slots {
        let mut stream = open(&rig).await;
        let taking = WireMessage::Request(signed(&rig, |c| c.nonce = nonce));
        write_frame(&mut stream, &taking, &limits).await.unwrap();
        let chunk = read_frame(&mut stream, &limits).await.unwrap();
        assert!(matches!(chunk, Some(WireMessage::Chunk(_))), "{chunk:?}");
        running.push(stream);
    }
    let refused = exchange(&rig, &signed(&rig, |c| c.nonce = 2 + slots)).await;
    let error = the_error(&refused);
    assert_eq!(ErrorCode::from_code(error.commitment.code), ErrorCode::Busy);
    error.commitment.retryAfterMillis
}

/// The retry-after of a Busy answer follows how long the model's answers take here (at least
/// the configured floor): a client asked to come back after one answer's time finds a slot.
#[tokio::test]
async fn a_busy_answer_asks_to_come_back_after_about_one_answers_time() {
    // One slot, answers of about 1 s (ten gaps of 100 ms between the tokens).
    let wait = retry_after_with_every_slot_taken(Duration::from_millis(100), 1).await;
    assert!((1_000..=3_000).contains(&wait), "an answer takes about 1 s here: {wait} ms");
}

/// With several answers under way, one ends sooner than a whole answer's time (Little's law):
/// the retry-after is the answer time divided by them.
#[tokio::test]
async fn a_busy_answer_with_four_answers_under_way_asks_for_a_quarter_of_an_answers_time() {
    // Four slots, answers of about 2 s: one ends every 0.5 s.
    let wait = retry_after_with_every_slot_taken(Duration::from_millis(200), 4).await;
    assert!((500..=1_000).contains(&wait), "a quarter of about 2 s, not all of it: {wait} ms");
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
    assert_eq!(error.commitment.retryAfterMillis, 0);
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
    // One request a minute: the next one fits a minute after the first, to the millisecond.
    let wait = error.commitment.retryAfterMillis;
    assert!((50_000..=60_000).contains(&wait), "{wait} ms");
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

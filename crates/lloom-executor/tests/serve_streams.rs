//! The request server's streams over real libp2p, with a scripted backend: one stream carries
//! exchange after exchange, idle streams are closed (after the request timeout, or to make
//! room), and a draining server finishes what it serves while refusing new requests signed.
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
    assert_eq!(error.commitment.retryAfterMillis, 60_000);

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

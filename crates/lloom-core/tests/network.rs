//! Real libp2p nodes in one process, on loopback with mDNS off: gossip announcements are
//! verified (forged, unsigned and oversized ones rejected and counted), registry queries round
//! trip, and request streams carry frames in order and cut off oversized ones.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use lloom_core::network::NetworkEvent;
use lloom_core::network::test_utils::{TestNode, WAIT};
use lloom_core::registry_query::{ExecutorInfo, RegistryRequest, RegistryResponse};
use lloom_core::wire::{read_frame, write_frame};
use lloom_core::{
    AnnouncementBody, DomainConfig, Error, ExecutorLoad, ModelOffer, NodeKey, SignedAnnouncement,
    StreamChunk, U256, WireLimits, WireMessage, unix_now,
};

fn body(model: &str) -> AnnouncementBody {
    AnnouncementBody {
        offers: vec![ModelOffer {
            model: model.into(),
            context_length: 2048,
            price_per_input_token: U256::from(1u64),
            price_per_output_token: U256::from(2u64),
            weights_sha256: None,
            quantization: None,
            capabilities: vec!["chat".into()],
        }],
        load: ExecutorLoad::default(),
        listen_addrs: vec![],
    }
}

fn announcement(key: &NodeKey, sequence: u64, model: &str) -> SignedAnnouncement {
    SignedAnnouncement::sign(key, DomainConfig::default(), sequence, unix_now(), body(model), false)
        .unwrap()
}

/// A validator-like node and an executor-like node bootstrapped from it, with the executor
/// knowing that the validator listens on the announcement topic.
async fn pair() -> (TestNode, TestNode) {
    let validator = TestNode::spawn(true, vec![]).await.unwrap();
    let addr = validator.addr().await.unwrap();
    let mut executor = TestNode::spawn(false, vec![addr]).await.unwrap();
    let validator_id = validator.key.peer_id();
    executor
        .wait_for(|e| matches!(e, NetworkEvent::Subscribed(p) if p == validator_id).then_some(()))
        .await
        .unwrap();
    (validator, executor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_are_verified_and_bad_ones_counted() {
    let (mut validator, executor) = pair().await;
    let stranger = NodeKey::generate();

    // Forged: a valid announcement of another key, published by the executor.
    executor.handle.publish_announcement(announcement(&stranger, 1, "forged")).await.unwrap();
    // Unsigned: bytes that are no announcement at all.
    executor.handle.publish_raw_gossip(b"\x01not an announcement".to_vec()).await.unwrap();
    // Oversized for the receiver: over the announcement limit, under gossip's transport cap.
    let mut big = body("big");
    big.offers = vec![big.offers[0].clone(); 65];
    let oversized =
        SignedAnnouncement::sign(&executor.key, DomainConfig::default(), 2, unix_now(), big, false)
            .unwrap();
    executor.handle.publish_raw_gossip(oversized.encode()).await.unwrap();
    // Honest: published last, so when it arrives the others have been processed (in order).
    executor.handle.publish_announcement(announcement(&executor.key, 3, "smol")).await.unwrap();

    let executor_id = executor.key.peer_id();
    let (source, ann) = validator
        .wait_for(|e| match e {
            NetworkEvent::Announcement { source, announcement } => Some((source, announcement)),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(source, executor_id);
    assert_eq!(ann.executor(), executor.key.address());
    assert_eq!(ann.body.offers[0].model, "smol", "only the honest announcement is delivered");

    let stats = validator.handle.stats().await.unwrap();
    assert_eq!(stats.announcements_accepted, 1);
    assert_eq!(stats.announcements_forged, 1, "{stats:?}");
    assert_eq!(stats.announcements_malformed, 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_query_round_trip() {
    let (mut validator, executor) = pair().await;
    let ann = announcement(&executor.key, 1, "smol");
    let answer = ann.clone();
    let responder_handle = validator.handle.clone();
    let serve = tokio::spawn(async move {
        let (peer, request, responder) = validator
            .wait_for(|e| match e {
                NetworkEvent::RegistryQuery { peer, request, responder } => {
                    Some((peer, request, responder))
                }
                _ => None,
            })
            .await
            .unwrap();
        let info = ExecutorInfo { announcement: answer, peer_id: peer.to_string(), last_seen: 1 };
        let response = RegistryResponse::Executor(Some(Box::new(info)));
        responder_handle.respond_registry(responder, response).await.unwrap();
        // Keep the validator (and its swarm) alive until the caller has the answer.
        (peer, request, validator)
    });
    let request = RegistryRequest::Executor { executor: executor.key.address() };
    let response = executor
        .handle
        .query_registry(validator_peer(&executor).await, request.clone())
        .await
        .unwrap();
    let (asker, received, _validator) = serve.await.unwrap();
    assert_eq!(asker, executor.key.peer_id());
    assert_eq!(received, request);
    match response {
        RegistryResponse::Executor(Some(info)) => assert_eq!(info.announcement, ann),
        other => panic!("unexpected {other:?}"),
    }
}

async fn validator_peer(node: &TestNode) -> lloom_core::PeerId {
    node.handle.connected_peers().await.unwrap()[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_to_a_peer_that_does_not_answer_fails_cleanly() {
    let (validator, executor) = pair().await;
    // The validator's events are never read: its responders are dropped with the queue full or
    // the node shut down. Stop it and the query must fail, not hang.
    let peer = validator.key.peer_id();
    validator.task.abort();
    drop(validator);
    let result = tokio::time::timeout(
        WAIT,
        executor.handle.query_registry(peer, RegistryRequest::Snapshot { cursor: None, limit: 1 }),
    )
    .await
    .expect("query must end within its timeout");
    assert!(matches!(result, Err(Error::RegistryQueryFailed(_))), "{result:?}");
}

/// Stops `node`'s event loop (its swarm and listeners go with it) and waits until it ended.
async fn stop(node: TestNode) {
    let TestNode { handle, events, task, .. } = node;
    drop((handle, events));
    tokio::time::timeout(WAIT, task).await.expect("the event loop stops").unwrap();
}

/// Waits for `node` to see its first connection to `peer` (`up`) or its last one close.
async fn wait_link(node: &mut TestNode, peer: lloom_core::PeerId, up: bool) {
    node.wait_for(|e| match e {
        NetworkEvent::PeerConnected(p) if up && p == peer => Some(()),
        NetworkEvent::PeerDisconnected(p) if !up && p == peer => Some(()),
        _ => None,
    })
    .await
    .unwrap_or_else(|e| panic!("never {}: {e}", if up { "connected" } else { "disconnected" }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_its_bootstrap_peers_connected() {
    // A validator that starts after the node: the node's first dial is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let validator_key = NodeKey::generate();
    let validator_id = validator_key.peer_id();
    let bootstrap = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{validator_id}").parse().unwrap();
    let mut node = TestNode::spawn(false, vec![bootstrap]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!node.handle.is_connected(&validator_id));
    let stats = node.handle.stats().await.unwrap();
    assert_eq!((stats.bootstrap_peers, stats.bootstrap_connected), (1, 0));
    let config = lloom_core::network::NetworkConfig {
        server_mode: true,
        listen_addrs: vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()],
        ..lloom_core::network::NetworkConfig::local()
    };
    let (validator, _events, event_loop) =
        lloom_core::network::start(&validator_key, config, lloom_core::VerifyPolicy::default())
            .await
            .unwrap();
    tokio::spawn(event_loop.run());
    wait_link(&mut node, validator_id, true).await;

    // The validator closes the connection (a restart, a network gone for a moment): the node
    // dials it again.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !validator.is_connected(&node.key.peer_id()) {
        assert!(tokio::time::Instant::now() < deadline, "the validator never saw the node");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(validator.disconnect(node.key.peer_id()).await.unwrap());
    wait_link(&mut node, validator_id, false).await;
    wait_link(&mut node, validator_id, true).await;
    assert!(node.handle.is_connected(&validator_id));
    let stats = node.handle.stats().await.unwrap();
    assert_eq!((stats.bootstrap_peers, stats.bootstrap_connected), (1, 1));
    assert!(stats.redials >= 1, "the dial after the close was a redial: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_answers_with_the_outcome_of_its_dial() {
    let dialer = TestNode::spawn(false, vec![]).await.unwrap();
    let live = TestNode::spawn(false, vec![]).await.unwrap();
    let (live_peer, live_addr) = (live.key.peer_id(), live.addr().await.unwrap());
    let connect = |peer, addrs| tokio::time::timeout(WAIT, dialer.handle.connect(peer, addrs));

    // A live peer: connected by the time `connect` returns; again: answered from that connection.
    connect(live_peer, vec![live_addr.clone()]).await.unwrap().unwrap();
    assert!(dialer.handle.is_connected(&live_peer));
    connect(live_peer, vec![]).await.unwrap().unwrap();

    // A peer that went away: its address refuses the dial, which is the answer (no timeout).
    let gone = TestNode::spawn(false, vec![]).await.unwrap();
    let (gone_peer, gone_addr) = (gone.key.peer_id(), gone.addr().await.unwrap());
    stop(gone).await;
    let refused = connect(gone_peer, vec![gone_addr.clone()]).await.expect("an answer, not a hang");
    let Err(Error::Dial(why)) = refused else { panic!("{refused:?}") };
    let transport: String = gone_addr.to_string().split("/p2p/").next().unwrap().to_owned();
    assert!(why.to_string().contains(&transport), "names the address: {why}");
    assert!(why.to_string().to_lowercase().contains("connection refused"), "and why: {why}");
    assert!(!dialer.handle.is_connected(&gone_peer));

    // Bad input: no address known for the peer, or an address of another peer.
    let stranger = NodeKey::generate().peer_id();
    let nowhere = connect(stranger, vec![]).await.unwrap();
    assert!(matches!(nowhere, Err(Error::Dial(_))), "{nowhere:?}");
    let elsewhere = connect(stranger, vec![live_addr]).await.unwrap();
    assert!(matches!(elsewhere, Err(Error::Dial(_))), "{elsewhere:?}");
    assert!(!dialer.handle.is_connected(&stranger));

    // `disconnect` closes the connections to a peer, and says when there were none.
    assert!(dialer.handle.disconnect(live_peer).await.unwrap());
    let deadline = tokio::time::Instant::now() + WAIT;
    while dialer.handle.is_connected(&live_peer) {
        assert!(tokio::time::Instant::now() < deadline, "the connection never closed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!dialer.handle.disconnect(stranger).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_that_hangs_holds_up_only_the_callers_of_its_own_peer() {
    let dialer = TestNode::spawn(false, vec![]).await.unwrap();
    // A "peer" whose port accepts connections and then says nothing: the dial hangs in its
    // handshake until the transport gives up.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let hung_peer = NodeKey::generate().peer_id();
    let hung_addr: lloom_core::network::Multiaddr =
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let handle = dialer.handle.clone();
    let hung = tokio::spawn(async move { handle.connect(hung_peer, vec![hung_addr]).await });

    // Meanwhile several callers connect to a live peer, concurrently: all connected.
    let live = TestNode::spawn(false, vec![]).await.unwrap();
    let (live_peer, live_addr) = (live.key.peer_id(), live.addr().await.unwrap());
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let handle = dialer.handle.clone();
            let addr = live_addr.clone();
            tokio::spawn(async move { handle.connect(live_peer, vec![addr]).await })
        })
        .collect();
    for caller in callers {
        tokio::time::timeout(WAIT, caller).await.expect("not held up").unwrap().unwrap();
    }
    assert!(dialer.handle.is_connected(&live_peer));
    assert!(!hung.is_finished(), "the silent peer's dial is still under way");
    hung.abort();
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_chunks_arrive_complete_and_in_order() {
    let (validator, executor) = pair().await;
    let limits = WireLimits::default();
    let mut incoming = validator.handle.accept_request_streams().unwrap();
    const N: u32 = 200;
    let reader = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.unwrap();
        let mut texts = Vec::new();
        while let Some(msg) = read_frame(&mut stream, &limits).await.unwrap() {
            match msg {
                WireMessage::Chunk(c) => texts.push((c.index, c.text)),
                other => panic!("unexpected {}", other.kind()),
            }
        }
        texts
    });
    let mut stream = executor.handle.open_request_stream(validator.key.peer_id()).await.unwrap();
    for index in 0..N {
        let chunk = WireMessage::Chunk(StreamChunk { index, text: format!("token-{index} ") });
        write_frame(&mut stream, &chunk, &limits).await.unwrap();
    }
    stream.close().await.unwrap();
    let texts = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert_eq!(texts.len(), N as usize);
    for (i, (index, text)) in texts.iter().enumerate() {
        assert_eq!(*index as usize, i);
        assert_eq!(text, &format!("token-{i} "));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_cuts_the_stream_with_errors_on_both_sides() {
    let (validator, executor) = pair().await;
    let limits = WireLimits::default();
    let mut incoming = validator.handle.accept_request_streams().unwrap();
    let reader = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.unwrap();
        let result = read_frame(&mut stream, &limits).await;
        // The receiver refuses the frame and drops (resets) the stream.
        drop(stream);
        result
    });
    let mut stream = executor.handle.open_request_stream(validator.key.peer_id()).await.unwrap();
    // Announce a 512 MiB frame.
    stream.write_all(&(512u32 << 20).to_be_bytes()).await.unwrap();
    stream.write_all(&[1, 0, 0, 0]).await.unwrap();
    stream.flush().await.unwrap();
    let receiver_side = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert!(
        matches!(receiver_side, Err(Error::TooLarge { what: "frame", .. })),
        "{receiver_side:?}"
    );
    // The sender sees the stream end without any answer.
    let mut rest = Vec::new();
    let sender_side = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await.unwrap();
    assert!(sender_side.is_err() || rest.is_empty(), "{sender_side:?}");
}

/// Retries `attempt` until it yields `Some` (DHT routing tables fill in the background).
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dht_finds_providers_and_only_stores_announcements_signed_by_their_executor() {
    let (validator, executor) = pair().await;
    let addr = validator.addr().await.unwrap();
    let client = TestNode::spawn(false, vec![addr.clone()]).await.unwrap();
    let forger = TestNode::spawn(false, vec![addr]).await.unwrap();

    // The executor provides its model and stores its announcement on the DHT server.
    let genuine = announcement(&executor.key, 7, "dht-model");
    eventually("the executor publishes", || async {
        let put = executor.handle.put_announcement(&genuine).await;
        let provided = executor.handle.provide_model("dht-model").await;
        (put.is_ok() && provided.is_ok()).then_some(())
    })
    .await;

    // A client finds it with no registry: providers, then the signed record.
    let executor_id = executor.key.peer_id();
    let providers = eventually("the client finds the provider", || async {
        let found = client.handle.find_model_providers("dht-model").await.ok()?;
        found.contains(&executor_id).then_some(found)
    })
    .await;
    assert_eq!(providers, vec![executor_id]);
    let records = client.handle.announcement_records(executor_id).await.unwrap();
    let decoded = SignedAnnouncement::decode(&records[0], &Default::default()).unwrap();
    assert_eq!(decoded, genuine);
    assert!(client.handle.find_model_providers("no-such-model").await.unwrap().is_empty());

    // A record under the executor's key but signed by someone else is refused by the server,
    // and so is one that is not an announcement at all; the genuine record stays.
    let key = {
        let mut key = b"/lloom/announcement/1/".to_vec();
        key.extend_from_slice(&executor_id.to_bytes());
        key
    };
    let forged = announcement(&forger.key.clone(), 8, "dht-model");
    let _ = forger.handle.put_raw_record(key.clone(), forged.encode()).await;
    let _ = forger.handle.put_raw_record(b"junk".to_vec(), b"junk".to_vec()).await;
    let refused = eventually("the server counts the refusals", || async {
        let stats = validator.handle.stats().await.ok()?;
        (stats.dht_records_refused >= 2).then_some(stats.dht_records_refused)
    })
    .await;
    assert_eq!(refused, 2);
    for bytes in client.handle.announcement_records(executor_id).await.unwrap() {
        let found = SignedAnnouncement::decode(&bytes, &Default::default()).unwrap();
        assert_eq!(found.executor(), executor.key.address(), "a forged record was served");
    }
}

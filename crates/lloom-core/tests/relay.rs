//! Relayed addresses in one process, on loopback: a node set to always reserve gets a circuit
//! address on the relay it bootstraps from (a validator-like node), and a third node reaches it
//! through that address and talks to it over a request stream. The NAT case proper (AutoNAT,
//! hole punching) runs across network namespaces in `lloom-client/tests/netns_nat.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use futures::{AsyncWriteExt, StreamExt};
use lloom_core::network::relay::is_relayed;
use lloom_core::network::test_utils::{TestNode, WAIT};
use lloom_core::network::{NetworkConfig, NetworkEvent, RelayMode};
use lloom_core::wire::{read_frame, write_frame};
use lloom_core::{StreamChunk, WireLimits, WireMessage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_reachable_through_its_relay_reservation() {
    let relay = TestNode::spawn(true, vec![]).await.unwrap();
    let relay_addr = relay.addr().await.unwrap();

    let mut hidden = TestNode::spawn_with(NetworkConfig {
        bootstrap: vec![relay_addr.clone()],
        relay: RelayMode::Always,
        advertise_listen_addrs: false,
        ..NetworkConfig::local()
    })
    .await
    .unwrap();
    let circuit = hidden
        .wait_for(|e| match e {
            NetworkEvent::Listening(addr) if is_relayed(&addr) => Some(addr),
            _ => None,
        })
        .await
        .expect("a relayed listen address");
    let relay_id = relay.key.peer_id();
    assert!(circuit.to_string().contains(&format!("/p2p/{relay_id}/p2p-circuit")), "{circuit}");
    assert!(circuit.to_string().ends_with(&hidden.key.peer_id().to_string()), "{circuit}");
    assert!(hidden.handle.listen_addrs().await.unwrap().contains(&circuit));
    assert_eq!(hidden.handle.stats().await.unwrap().relay_reservations, 1);

    // A node that never learnt the hidden node's own addresses dials the circuit address.
    let limits = WireLimits::default();
    let mut incoming = hidden.handle.accept_request_streams().unwrap();
    let reader = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.unwrap();
        read_frame(&mut stream, &limits).await
    });
    let mut dialer = TestNode::spawn(false, vec![relay_addr]).await.unwrap();
    // As a client does: connected to the validator before it learns the executor's addresses.
    dialer
        .wait_for(|e| matches!(e, NetworkEvent::PeerConnected(p) if p == relay_id).then_some(()))
        .await
        .unwrap();
    dialer.handle.dial(circuit).await.unwrap();
    let hidden_id = hidden.key.peer_id();
    dialer
        .wait_for(|e| matches!(e, NetworkEvent::PeerConnected(p) if p == hidden_id).then_some(()))
        .await
        .unwrap();
    let mut stream = dialer.handle.open_request_stream(hidden_id).await.unwrap();
    let chunk = WireMessage::Chunk(StreamChunk { index: 7, text: "through the relay".into() });
    write_frame(&mut stream, &chunk, &limits).await.unwrap();
    stream.close().await.unwrap();
    let received = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap().unwrap();
    match received {
        Some(WireMessage::Chunk(c)) => {
            assert_eq!((c.index, c.text.as_str()), (7, "through the relay"))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(dialer.handle.stats().await.unwrap().relayed_connections >= 1);
    assert!(hidden.handle.stats().await.unwrap().relayed_connections >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_relays_gets_no_circuit_address() {
    let relay = TestNode::spawn(true, vec![]).await.unwrap();
    let relay_addr = relay.addr().await.unwrap();
    let relay_id = relay.key.peer_id();
    let mut direct = TestNode::spawn_with(NetworkConfig {
        bootstrap: vec![relay_addr],
        relay: RelayMode::Never,
        ..NetworkConfig::local()
    })
    .await
    .unwrap();
    // Identify has run once gossipsub sees the relay subscribe: any reservation would have
    // been asked for by then.
    direct
        .wait_for(|e| matches!(e, NetworkEvent::Subscribed(p) if p == relay_id).then_some(()))
        .await
        .unwrap();
    let addrs = direct.handle.listen_addrs().await.unwrap();
    assert!(!addrs.iter().any(is_relayed), "{addrs:?}");
    assert_eq!(direct.handle.stats().await.unwrap().relay_reservations, 0);
}

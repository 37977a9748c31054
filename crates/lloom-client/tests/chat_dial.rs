//! `Client::chat` when an executor went away, moved, or does not answer its dial: the client
//! passes over it as soon as the dial fails, finds it where it announces itself now, and never
//! lets a hanging dial hold up another request.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::{Duration, Instant};

use lloom_client::{AttemptFailure, ChatRequest, Client, ClientConfig, Error, Strategy};
use lloom_core::network::test_utils::WAIT;
use lloom_core::network::{Multiaddr, NetworkConfig};
use lloom_core::{AnnouncementBody, ModelOffer, NodeKey};
use lloom_executor::backend::scripted::Script;
use lloom_executor::{Announcer, AnnouncerConfig, ExecutorNode};

mod scripted;
use scripted::*;

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
    assert!(
        matches!(err, Error::AllBusy { retry_after } if retry_after == Duration::from_secs(1)),
        "{err:?}"
    );
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

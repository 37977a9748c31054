//! An executor shutting down gracefully, seen from clients on the real network: the answer it
//! is streaming completes there, a request that reaches it meanwhile is refused (signed Busy)
//! and answered by another executor, and one still running when the grace period ends is cut
//! and completed elsewhere.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use lloom_client::{AttemptFailure, ChatEvent, ChatStream, Receipt, Strategy};
use lloom_core::ErrorCode;
use lloom_core::network::test_utils::WAIT;
use lloom_executor::backend::scripted::Script;

mod scripted;
use scripted::*;

/// The cheap executor's answer: 20 words, 40 ms apart.
fn slow_answer() -> String {
    ["tick"; 20].join(" ")
}

/// Reads a chat to its end: the receipt and whether it restarted on another executor.
async fn finish(stream: &mut ChatStream) -> (Receipt, bool) {
    let (mut receipt, mut restarted) = (None, false);
    while let Some(event) = tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        match event.unwrap() {
            ChatEvent::Restart { .. } => restarted = true,
            ChatEvent::Done(r) => receipt = Some(*r),
            ChatEvent::Text(_) | ChatEvent::Attempt { .. } => {}
        }
    }
    (receipt.expect("a verified answer"), restarted)
}

/// Reads a chat until its first text arrives.
async fn until_text(stream: &mut ChatStream) {
    loop {
        let event = tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap();
        if matches!(event.unwrap(), ChatEvent::Text(_)) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_executor_finishes_its_answer_and_sends_new_requests_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let slow = Script { delay: Duration::from_millis(40), ..Script::answer(MODEL, &slow_answer()) };
    let (mut draining, draining_key) = executor(&addrs, slow, 1, &dir).await;
    let (_other, other_key) = executor(&addrs, Script::answer(MODEL, "Paris."), 5, &dir).await;
    let first = client(&addrs, Strategy::Cheapest, 2).await;
    let second = client(&addrs, Strategy::Cheapest, 2).await;

    let mut streaming = first.chat(ask()).await.unwrap();
    until_text(&mut streaming).await;
    // The operator stops the cheap executor while its answer is under way.
    draining.start_draining().await.unwrap();
    assert!(draining.server.in_flight() >= 1);

    // A request that reaches it now is refused, signed, and answered by the other executor.
    let (receipt, _) = finish(&mut second.chat(ask()).await.unwrap()).await;
    assert_eq!(receipt.executor, other_key.address());
    assert_eq!(receipt.text, "Paris.");
    assert_eq!(receipt.attempts.len(), 2, "{:?}", receipt.attempts);
    assert_eq!(receipt.attempts[0].executor, draining_key.address());
    let Some(AttemptFailure::Refused { code, message, .. }) = &receipt.attempts[0].failure else {
        panic!("{:?}", receipt.attempts[0].failure)
    };
    assert_eq!(*code, ErrorCode::Busy);
    assert!(message.contains("shutting down"), "{message}");

    // The answer under way completes where it started, whole and verified.
    let (receipt, restarted) = finish(&mut streaming).await;
    assert!(!restarted, "the answer was not cut");
    assert_eq!(receipt.executor, draining_key.address());
    assert_eq!(receipt.text, slow_answer());
    assert_eq!(receipt.attempts.len(), 1);
    assert_eq!(draining.wait_drained(WAIT).await, 0);
    assert!(draining.server.receipts().get(&receipt.request.digest()).unwrap().is_some());
    draining.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_still_running_when_the_grace_period_ends_completes_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let endless =
        Script { delay: Duration::from_millis(40), ..Script::answer(MODEL, &"tick ".repeat(400)) };
    let (doomed, doomed_key) = executor(&addrs, endless, 1, &dir).await;
    let (_other, other_key) = executor(&addrs, Script::answer(MODEL, "Paris."), 5, &dir).await;
    let client = client(&addrs, Strategy::Cheapest, 2).await;

    let mut stream = client.chat(ask()).await.unwrap();
    until_text(&mut stream).await;
    let cut = doomed.shutdown_gracefully(Duration::from_millis(300)).await.unwrap();
    assert_eq!(cut, 1, "the 16-second answer could not finish in 300 ms");
    let (receipt, restarted) = finish(&mut stream).await;
    assert!(restarted, "the user is told the answer restarted");
    assert_eq!(receipt.executor, other_key.address());
    assert_eq!(receipt.attempts[0].executor, doomed_key.address());
    assert!(
        matches!(receipt.attempts[0].failure, Some(AttemptFailure::Broken(_))),
        "{:?}",
        receipt.attempts[0].failure
    );
}

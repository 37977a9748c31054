//! `conversation::converse` (what `lloom-client chat -i` runs) against scripted executors: each
//! turn is asked first of the executor that answered the last one, whose prompt cache holds
//! the history, even when another would now rank first.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lloom_client::conversation::{Style, converse};
use lloom_client::{ChatRequest, Strategy};
use lloom_core::network::test_utils::WAIT;
use lloom_executor::backend::scripted::Script;

mod scripted;
use scripted::*;

async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Three workers: the conversation reads its turns from a pipe, blocking one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn each_turn_goes_first_to_the_executor_that_answered_the_last() {
    let (_validator, addrs) = validator().await;
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = executor(&addrs, Script::answer(MODEL, "From the first."), 5, &dir).await;
    let client = client(&addrs, Strategy::Cheapest, 1).await;

    let (reader, mut writer) = std::io::pipe().unwrap();
    let template = ChatRequest { messages: vec![], timeout: WAIT, ..ChatRequest::user(MODEL, "") };
    let talk = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut input = std::io::BufReader::new(reader);
            let (style, mut out) = (Style { verbose: false, json: true, retries: 0 }, Vec::new());
            let opening = Some("I am Ana.".to_owned());
            let totals = converse(&client, &template, opening, &mut input, style, &mut out).await;
            (totals.unwrap(), String::from_utf8(out).unwrap())
        })
    };
    let completed =
        |node: &lloom_executor::ExecutorNode| node.server.stats().completed.load(Ordering::Relaxed);
    until("the first turn is answered", || completed(&first) == 1).await;

    // A cheaper executor arrives before the next turn; the strategy would now pick it.
    let (cheaper, cheaper_key) =
        executor(&addrs, Script::answer(MODEL, "From the cheaper."), 1, &dir).await;
    let deadline = Instant::now() + WAIT;
    while client.refresh().await.unwrap() < 2 {
        assert!(Instant::now() < deadline, "the cheaper executor never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writeln!(writer, "Who am I?").unwrap();
    drop(writer);
    let (totals, out) = talk.await.unwrap();
    assert_eq!(totals.answers, 2, "{out}");
    assert_eq!((completed(&first), completed(&cheaper)), (2, 0), "the history's executor: {out}");

    // A chat of its own goes where the strategy says.
    let receipt = client.chat(ask()).await.unwrap().collect().await.unwrap();
    assert_eq!(receipt.executor, cheaper_key.address());
}

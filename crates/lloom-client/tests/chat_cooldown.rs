//! Cooldowns and waits over the real network: a lone executor that failed is still tried (the
//! last one left), and one that answered Busy is left alone for exactly the retry-after it
//! signed. `chat`'s patience: a request that finds every executor busy waits that retry-after
//! and asks again; one whose model's executors are restarting looks again after a few seconds;
//! with no retries, both fail at once with the clear error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::{Duration, Instant};

use lloom_client::cli::stream_answer;
use lloom_client::patience::RESTART_WAIT;
use lloom_client::{ChatEvent, Error, Strategy};
use lloom_core::NodeKey;
use lloom_core::network::test_utils::WAIT;
use lloom_executor::backend::scripted::Script;

mod scripted;
use scripted::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_executor_that_failed_is_tried_again_while_it_cools_down() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let once = Script { fail_first: 1, ..Script::answer(MODEL, "Paris.") };
    let (_e, key) = executor(&addrs, once, 1, &dir).await;
    let client = client(&addrs, Strategy::Balanced, 1).await;

    let err = client.chat(ask()).await.unwrap().collect().await.unwrap_err();
    match &err {
        Error::AllFailed { attempts, .. } => assert_eq!(attempts.len(), 1, "{err}"),
        other => panic!("expected the failed attempt: {other:?}"),
    }
    let cooling = stats_of(&client, key.address()).await;
    assert!(cooling.cooldown_until.is_some_and(|u| u > Instant::now()), "{cooling:?}");
    assert_eq!((cooling.failures, cooling.busy), (1, 0));

    // Cooling down, but the only executor there is: asked anyway, and it answers.
    let receipt = client.chat(ask()).await.unwrap().collect().await.unwrap();
    assert_eq!((receipt.executor, receipt.text.as_str()), (key.address(), "Paris."));
    assert_eq!(receipt.attempts.len(), 1, "{:?}", receipt.attempts);
    let healed = stats_of(&client, key.address()).await;
    assert_eq!((healed.successes, healed.cooldown_until), (1, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_executor_is_left_alone_for_its_signed_retry_after_and_no_longer() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let full = Script { capacity: 0, ..Script::answer(MODEL, "never") };
    let (_e, key) = executor(&addrs, full, 1, &dir).await;
    let client = client(&addrs, Strategy::Balanced, 1).await;

    let err = client.chat(ask()).await.unwrap().collect().await.unwrap_err();
    assert!(
        matches!(err, Error::AllBusy { retry_after } if retry_after == Duration::from_secs(1)),
        "{err:?}"
    );
    let stats = stats_of(&client, key.address()).await;
    assert_eq!((stats.busy, stats.failures, stats.consecutive_failures), (1, 0, 0));
    assert!(stats.cooldown_is_busy);
    let until = stats.cooldown_until.unwrap();
    assert!(until <= Instant::now() + Duration::from_secs(1), "the signed 1 s, not a backoff");

    // Within the retry-after, the client answers for it without asking.
    if Instant::now() < until {
        let err = client.chat(ask()).await.unwrap().collect().await.unwrap_err();
        assert!(
            matches!(err, Error::AllBusy { retry_after } if retry_after == Duration::from_secs(1)),
            "{err:?}"
        );
        if Instant::now() < until {
            assert_eq!(
                stats_of(&client, key.address()).await.busy,
                1,
                "not asked while it asked to be left alone"
            );
        }
    }

    // Once it has passed, the executor is asked again, and again waited out for 1 s only.
    tokio::time::sleep_until((until + Duration::from_millis(50)).into()).await;
    let err = client.chat(ask()).await.unwrap().collect().await.unwrap_err();
    assert!(
        matches!(err, Error::AllBusy { retry_after } if retry_after == Duration::from_secs(1)),
        "{err:?}"
    );
    let stats = stats_of(&client, key.address()).await;
    assert_eq!((stats.busy, stats.failures), (2, 0));
    let until = stats.cooldown_until.unwrap();
    assert!(until <= Instant::now() + Duration::from_secs(1), "no backoff: still the signed 1 s");
}

/// The executor gives each refused request its own time to come back: one that has waited out
/// its own (`waited_out_busy`) asks it even while the client's cooldown, set by another
/// refusal, still runs; one that has not is answered busy without asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_waited_out_its_retry_after_asks_the_busy_executor_again() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let full = Script { capacity: 0, ..Script::answer(MODEL, "never") };
    let (_e, key) = executor(&addrs, full, 1, &dir).await;
    let client = client(&addrs, Strategy::Balanced, 1).await;

    let err = client.chat(ask()).await.unwrap().collect().await.unwrap_err();
    assert!(matches!(err, Error::AllBusy { .. }), "{err:?}");
    let until = stats_of(&client, key.address()).await.cooldown_until.unwrap();
    let returning = lloom_client::ChatRequest { waited_out_busy: true, ..ask() };
    let err = client.chat(returning).await.unwrap().collect().await.unwrap_err();
    assert!(matches!(err, Error::AllBusy { .. }), "{err:?}");
    let asked = stats_of(&client, key.address()).await.busy;
    if Instant::now() < until {
        assert_eq!(asked, 2, "asked although the client's cooldown ran");
        let err = client.chat(ask()).await.unwrap().collect().await.unwrap_err();
        assert!(matches!(err, Error::AllBusy { .. }), "{err:?}");
        if Instant::now() < until {
            assert_eq!(stats_of(&client, key.address()).await.busy, 2, "a new request waits");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_finds_the_executor_busy_waits_its_retry_after_and_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    // One answer at a time, five tokens 200 ms apart.
    let slow = Script {
        capacity: 1,
        delay: Duration::from_millis(200),
        ..Script::answer(MODEL, "Paris is in France.")
    };
    let (_e, key) = executor(&addrs, slow, 1, &dir).await;
    let client = client(&addrs, Strategy::Balanced, 1).await;

    // A first request holds the only slot (its first token proves it runs).
    let mut first = client.chat(ask()).await.unwrap();
    loop {
        match first.next().await.unwrap().unwrap() {
            ChatEvent::Text(_) => break,
            ChatEvent::Attempt { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let first = tokio::spawn(first.collect());

    // Without retries: the clear error at once, naming the retry-after.
    let mut out = Vec::new();
    let err = stream_answer(&client, ask(), 0, false, false, &mut out).await.unwrap_err();
    let Error::AllBusy { retry_after } = err else { panic!("expected AllBusy: {err:?}") };
    assert_eq!(retry_after, Duration::from_secs(1), "nothing timed yet: a second");

    // With retries: waited out (the executor's 1 s), then answered by the same executor.
    let started = Instant::now();
    let receipt = stream_answer(&client, ask(), 2, false, false, &mut out).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500), "asked again only after waiting");
    assert_eq!((receipt.executor, receipt.text.as_str()), (key.address(), "Paris is in France."));
    assert_eq!(String::from_utf8(out).unwrap(), "Paris is in France.\n");
    first.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_model_whose_executor_restarts_is_answered_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_v, addrs) = validator().await;
    let key = NodeKey::generate();
    let data = dir.path().join("executor");
    let paris = || Script::answer(MODEL, "Paris.");
    let node = executor_as(&key, &addrs, paris(), 1, data.clone()).await;
    let client = client(&addrs, Strategy::Balanced, 1).await;
    client.chat(ask()).await.unwrap().collect().await.unwrap();

    // It stops (withdrawing its offers): the model is gone for now.
    node.shutdown().await.unwrap();
    let deadline = Instant::now() + WAIT;
    while client.refresh().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "the validator still lists the executor");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut out = Vec::new();
    let err = stream_answer(&client, ask(), 0, false, false, &mut out).await.unwrap_err();
    assert!(matches!(err, Error::NoExecutor { last_offered_secs: Some(_), .. }), "{err:?}");

    // It comes back a second later; the waiting request looks again and is answered.
    let restart = tokio::spawn({
        let (key, addrs) = (key.clone(), addrs.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            executor_as(&key, &addrs, paris(), 1, data).await
        }
    });
    let started = Instant::now();
    let request = lloom_client::ChatRequest { timeout: WAIT.max(Duration::from_secs(30)), ..ask() };
    let receipt = stream_answer(&client, request, 3, false, false, &mut out).await.unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1), "answered only once it was back: {took:?}");
    assert!(took < RESTART_WAIT, "the wait ended when the validator listed it again: {took:?}");
    assert_eq!((receipt.executor, receipt.text.as_str()), (key.address(), "Paris."));
    restart.await.unwrap().shutdown().await.unwrap();

    // A model never seen on offer is not waited for.
    let started = Instant::now();
    let unknown = lloom_client::ChatRequest::user("nobody-serves-this", "?");
    let err = stream_answer(&client, unknown, 3, false, false, &mut out).await.unwrap_err();
    assert!(matches!(err, Error::NoExecutor { last_offered_secs: None, .. }), "{err:?}");
    assert!(started.elapsed() < RESTART_WAIT, "not waited for");
}

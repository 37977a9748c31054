//! Cooldowns over the real network: a lone executor that failed is still tried (the last one
//! left), and one that answered Busy is left alone for exactly the retry-after it signed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::{Duration, Instant};

use lloom_client::{Error, Strategy};
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
    assert!(matches!(err, Error::AllBusy { retry_after_secs: 1 }), "{err:?}");
    let stats = stats_of(&client, key.address()).await;
    assert_eq!((stats.busy, stats.failures, stats.consecutive_failures), (1, 0, 0));
    assert!(stats.cooldown_is_busy);
    let until = stats.cooldown_until.unwrap();
    assert!(until <= Instant::now() + Duration::from_secs(1), "the signed 1 s, not a backoff");

    // Within the retry-after, the client answers for it without asking.
    if Instant::now() < until {
        let err = client.chat(ask()).await.unwrap().collect().await.unwrap_err();
        assert!(matches!(err, Error::AllBusy { retry_after_secs: 1 }), "{err:?}");
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
    assert!(matches!(err, Error::AllBusy { retry_after_secs: 1 }), "{err:?}");
    let stats = stats_of(&client, key.address()).await;
    assert_eq!((stats.busy, stats.failures), (2, 0));
    let until = stats.cooldown_until.unwrap();
    assert!(until <= Instant::now() + Duration::from_secs(1), "no backoff: still the signed 1 s");
}

//! Queue soak: many requests through one executor with an instant backend, reporting resident
//! memory as it goes; flat memory means nothing is retained per request.
//!
//! The executor's two redb page caches (receipts and nonces, bounded) fill as their databases
//! grow, so RSS rises until they are full and then stays flat. The growth over the second
//! half of the run, and a warm-up long enough to fill the caches (`--warmup`), tell the two
//! apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use lloom_client::ChatRequest;
use lloom_executor::backend::scripted::{Script, ScriptedBackend};

use crate::net::{self, MODEL};

pub(crate) async fn run(requests: usize, warmup: usize, concurrency: usize) -> anyhow::Result<()> {
    let backend = Arc::new(ScriptedBackend::new(Script::answer(MODEL, "ok")));
    let network = net::start(vec![backend], 0).await?;
    let client = network.client().await?;
    let issue = |n: usize| {
        let client = client.clone();
        async move {
            let next = Arc::new(AtomicUsize::new(0));
            let failed = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, next, failed) = (client.clone(), next.clone(), failed.clone());
                tasks.push(tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let request =
                            ChatRequest { max_tokens: 1, ..ChatRequest::user(MODEL, "hi") };
                        let ok = match client.chat(request).await {
                            Ok(answer) => answer.collect().await.is_ok(),
                            Err(_) => false,
                        };
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
            failed.load(Ordering::Relaxed)
        }
    };
    issue(warmup).await;
    let start_rss = net::rss_mib();
    let start = Instant::now();
    let step = (requests / 10).max(1);
    let mut failed = 0;
    let mut done = 0;
    let (mut half_done, mut half_rss) = (0, start_rss);
    println!("soak: {requests} requests, {concurrency} in flight, after {warmup} warm-up");
    println!("  start RSS {start_rss:.1} MiB");
    while done < requests {
        let n = step.min(requests - done);
        failed += issue(n).await;
        done += n;
        let rss = net::rss_mib();
        if done <= requests / 2 {
            (half_done, half_rss) = (done, rss);
        }
        println!("  {done:>7} requests  RSS {rss:.1} MiB");
    }
    let end_rss = net::rss_mib();
    let (total, unsettled) = network
        .executors
        .first()
        .map(|e| e.server.receipts().counts())
        .transpose()?
        .unwrap_or_default();
    println!(
        "  end RSS {end_rss:.1} MiB (Δ {:+.1} MiB); {failed} failed; {:.0} req/s; {total} receipts stored ({unsettled} unsettled)",
        end_rss - start_rss,
        requests as f64 / start.elapsed().as_secs_f64()
    );
    println!(
        "  after {half_done} requests: Δ {:+.1} MiB ({:+.3} KiB per request)",
        end_rss - half_rss,
        (end_rss - half_rss) * 1024.0 / (requests - half_done).max(1) as f64
    );
    Ok(())
}

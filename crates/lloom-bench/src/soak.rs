//! Queue soak: many requests through one executor with an instant backend, reporting resident
//! memory as it goes; flat memory means nothing is retained per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use lloom_client::ChatRequest;
use lloom_executor::backend::scripted::{Script, ScriptedBackend};

use crate::net::{self, MODEL};

const WARMUP: usize = 2000;

pub(crate) async fn run(requests: usize, concurrency: usize) -> anyhow::Result<()> {
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
    issue(WARMUP).await;
    let start_rss = net::rss_mib();
    let start = Instant::now();
    let step = (requests / 10).max(1);
    let mut failed = 0;
    let mut done = 0;
    println!("soak: {requests} requests, {concurrency} in flight, after {WARMUP} warm-up");
    println!("  start RSS {start_rss:.1} MiB");
    while done < requests {
        let n = step.min(requests - done);
        failed += issue(n).await;
        done += n;
        println!("  {done:>7} requests  RSS {:.1} MiB", net::rss_mib());
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
    Ok(())
}

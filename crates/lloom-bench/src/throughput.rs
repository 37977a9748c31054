//! P3: signed requests per second through one executor with an instant backend, next to the
//! ceiling set by the four signature operations of a request (sign and recover the request,
//! sign and recover the response).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lloom_client::ChatRequest;
use lloom_core::B256;
use lloom_core::NodeKey;
use lloom_executor::backend::scripted::{Script, ScriptedBackend};

use crate::net::{self, MODEL};

/// Seconds per request spent in the four signature operations, on one core.
fn signature_cost() -> anyhow::Result<f64> {
    let key = NodeKey::generate();
    let digest = B256::repeat_byte(7);
    let rounds = 2000;
    let start = Instant::now();
    for _ in 0..rounds {
        let a = key.sign_digest(&digest)?;
        let _ = a.recover(&digest)?;
        let b = key.sign_digest(&digest)?;
        let _ = b.recover(&digest)?;
    }
    Ok(start.elapsed().as_secs_f64() / f64::from(rounds))
}

pub(crate) async fn run(concurrency: usize, seconds: u64) -> anyhow::Result<()> {
    let per_request = signature_cost()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ceiling = cores as f64 / per_request;

    let backend = Arc::new(ScriptedBackend::new(Script::answer(MODEL, "ok")));
    let network = net::start(vec![backend], 0).await?;
    let client = network.client().await?;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, done, failed) = (client.clone(), done.clone(), failed.clone());
        let first_error = first_error.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let request = ChatRequest { max_tokens: 1, ..ChatRequest::user(MODEL, "hi") };
                let outcome = match client.chat(request).await {
                    Ok(answer) => answer.collect().await.map(|_| ()),
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert_with(|| e.to_string());
                        }
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let start = Instant::now();
    for task in tasks {
        task.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let rate = done.load(Ordering::Relaxed) as f64 / elapsed;
    println!(
        "P3 throughput: {concurrency} concurrent requests for {seconds} s, client and executor in one process"
    );
    println!("  verified requests/s     : {rate:.0} ({} failed)", failed.load(Ordering::Relaxed));
    if let Some(e) = first_error.lock().ok().and_then(|f| f.clone()) {
        println!("  first failure           : {e}");
    }
    println!(
        "  signature ceiling       : {ceiling:.0} req/s ({cores} cores × 1 / {:.1} µs for 4 signature operations)",
        per_request * 1e6
    );
    println!(
        "  share of the ceiling    : {:.1} %   (goals: ≥ 5,000 req/s, ≥ 60 %)",
        rate / ceiling * 100.0
    );
    Ok(())
}

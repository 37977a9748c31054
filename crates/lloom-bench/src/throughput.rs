//! P3: signed requests per second through one executor with an instant backend, next to the
//! ceiling set by the four signature operations of a request (sign and recover the request,
//! sign and recover the response).
//!
//! The run is cut into rounds of about two seconds. After each, the clients pause, the
//! requests in flight finish, and the ceiling is measured again right then, so each round's
//! share compares two figures taken in the same minute of a host whose speed drifts. The
//! headline share is the whole run's rate over the higher of the ceilings measured before and
//! after the run, as before; the rounds' median is printed next to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lloom_client::ChatRequest;
use lloom_core::B256;
use lloom_core::NodeKey;
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::serve::ServeConfig;

use crate::net::{self, MODEL};

/// What the machine could sign and check if it did nothing else.
#[derive(Clone, Copy)]
struct Ceiling {
    /// Requests per second, every core doing the four signature operations at once.
    requests_per_sec: f64,
    /// Seconds one request's four operations take on one core.
    per_request_secs: f64,
}

/// Measures the [`Ceiling`] on `cores` cores: the best of `slices` rounds of `slice` each, so
/// the ceiling is not understated.
fn signature_ceiling(cores: usize, slices: usize, slice: Duration) -> anyhow::Result<Ceiling> {
    let mut best = 0.0_f64;
    for _ in 0..slices.max(1) {
        let start = Instant::now();
        let until = start + slice;
        let workers: Vec<_> =
            (0..cores).map(|_| std::thread::spawn(move || sign_and_recover_until(until))).collect();
        let mut requests = 0_u64;
        for worker in workers {
            requests += worker.join().map_err(|_| anyhow::anyhow!("signing thread panicked"))??;
        }
        best = best.max(requests as f64 / start.elapsed().as_secs_f64());
    }
    Ok(Ceiling { requests_per_sec: best, per_request_secs: cores as f64 / best })
}

/// Runs the four signature operations of a request until `until`; returns how many requests.
fn sign_and_recover_until(until: Instant) -> anyhow::Result<u64> {
    let key = NodeKey::generate();
    let digest = B256::repeat_byte(7);
    let mut requests = 0;
    while Instant::now() < until {
        let a = key.sign_digest(&digest)?;
        let _ = a.recover(&digest)?;
        let b = key.sign_digest(&digest)?;
        let _ = b.recover(&digest)?;
        requests += 1;
    }
    Ok(requests)
}

/// What the clients do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Run,
    Pause,
    Stop,
}

/// Seconds of one round of requests (at most).
const ROUND_SECS: u64 = 2;

/// How long a pause waits for the requests in flight to end.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

pub(crate) async fn run(
    concurrency: usize,
    seconds: u64,
    commit_delay_us: Option<u64>,
    client_receipts: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        concurrency > 0 && seconds > 0,
        "--concurrency and --seconds must be at least 1"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let full = |cores| signature_ceiling(cores, 3, Duration::from_millis(500));
    let before = full(cores)?;

    let backend = Arc::new(ScriptedBackend::new(Script::answer(MODEL, "ok")));
    let commit_delay =
        commit_delay_us.map_or(ServeConfig::default().commit_delay, Duration::from_micros);
    let network = net::start_with(vec![backend], 0, commit_delay).await?;
    let receipts_dir = tempfile::tempdir()?;
    let client = network.client_with(net::client_receipts(&receipts_dir, client_receipts)?).await?;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Pause);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, done, failed) = (client.clone(), done.clone(), failed.clone());
        let (in_flight, first_error, mut phase) =
            (in_flight.clone(), first_error.clone(), phase_rx.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let now = *phase.borrow_and_update();
                match now {
                    Phase::Stop => return,
                    Phase::Pause => {
                        if phase.changed().await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Phase::Run => {}
                }
                in_flight.fetch_add(1, Ordering::SeqCst);
                let request = ChatRequest { max_tokens: 1, ..ChatRequest::user(MODEL, "hi") };
                let outcome = match client.chat(request).await {
                    Ok(answer) => answer.collect().await.map(|_| ()),
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => done.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert_with(|| e.to_string());
                        }
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
                in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }));
    }
    let rounds = usize::try_from(seconds.div_ceil(ROUND_SECS)).unwrap_or(1).max(1);
    let round = Duration::from_secs_f64(seconds as f64 / rounds as f64);
    let (mut counted, mut ran) = (0_u64, 0.0_f64);
    let mut shares = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start_count = done.load(Ordering::SeqCst);
        let start = Instant::now();
        phase_tx.send_replace(Phase::Run);
        tokio::time::sleep(round).await;
        // Only requests that ended inside the round count; those still in flight end during
        // the pause and count in no round.
        let (count, secs) = (done.load(Ordering::SeqCst) - start_count, start.elapsed());
        phase_tx.send_replace(Phase::Pause);
        let drain = Instant::now();
        while in_flight.load(Ordering::SeqCst) > 0 && drain.elapsed() < DRAIN_LIMIT {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ceiling = tokio::task::spawn_blocking(move || {
            signature_ceiling(cores, 1, Duration::from_millis(400))
        })
        .await??;
        let rate = count as f64 / secs.as_secs_f64();
        shares.push(rate / ceiling.requests_per_sec);
        counted += count;
        ran += secs.as_secs_f64();
    }
    phase_tx.send_replace(Phase::Stop);
    for task in tasks {
        task.await?;
    }
    // Measured before and after the run, the higher one counts: a slow moment of a shared
    // host must not make the share look better.
    let after = full(cores)?;
    let Ceiling { requests_per_sec: ceiling, per_request_secs: per_request } =
        if after.requests_per_sec > before.requests_per_sec { after } else { before };
    let rate = counted as f64 / ran.max(f64::MIN_POSITIVE);
    println!(
        "P3 throughput: {concurrency} concurrent requests for {seconds} s in {rounds} rounds, client and executor in one process, receipt commit delay {} µs{}",
        commit_delay.as_micros(),
        if client_receipts { ", the client keeping receipts" } else { "" }
    );
    println!("  verified requests/s     : {rate:.0} ({} failed)", failed.load(Ordering::Relaxed));
    if let Some(e) = first_error.lock().ok().and_then(|f| f.clone()) {
        println!("  first failure           : {e}");
    }
    println!(
        "  signature ceiling       : {ceiling:.0} req/s (the 4 signature operations alone on {cores} cores at once, the higher of before and after the run: {:.1} µs a request per core)",
        per_request * 1e6
    );
    println!(
        "  share of the ceiling    : {:.1} %   (goals: ≥ 5,000 req/s, ≥ 60 %)",
        rate / ceiling * 100.0
    );
    let listed: Vec<String> = shares.iter().map(|s| format!("{:.1}", s * 100.0)).collect();
    println!(
        "  paired rounds           : {} % (each round's rate over the ceiling measured right after it); median {:.1} %",
        listed.join(" / "),
        median(&shares) * 100.0
    );
    Ok(())
}

/// The median of `values` (the mean of the middle two of an even count); 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let at = |i: usize| sorted.get(i).copied().unwrap_or(0.0);
    match n % 2 {
        1 => at(n / 2),
        _ if n == 0 => 0.0,
        _ => f64::midpoint(at(n / 2 - 1), at(n / 2)),
    }
}

#[cfg(test)]
mod tests {
    use super::{median, run};

    #[tokio::test]
    async fn no_clients_or_no_time_is_a_clear_error() {
        for (concurrency, seconds) in [(0, 8), (64, 0)] {
            let error = run(concurrency, seconds, None, false).await.unwrap_err();
            assert!(error.to_string().contains("must be at least 1"), "{error}");
        }
    }

    #[test]
    fn the_median_takes_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[0.7, 0.5, 0.6]), 0.6);
        assert_eq!(median(&[0.4, 0.8, 0.6, 0.5]), 0.55);
    }
}

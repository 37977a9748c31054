//! How long this host takes to wake a thread: two threads pass a token back and forth through
//! blocking channels, as `perf bench sched pipe` does with two processes. A request crosses
//! threads several times, so latency figures (P1) and throughput (P3) only compare between
//! hosts whose wake-ups are alike; the latency benches print this next to their figures.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Round trips timed (after as many again to warm up).
const ROUND_TRIPS: u32 = 5_000;

/// The mean time of one round trip between two threads (two wake-ups).
pub(crate) fn round_trip() -> anyhow::Result<Duration> {
    let (ping, pinged) = mpsc::channel::<u32>();
    let (pong, ponged) = mpsc::channel::<u32>();
    let echo = std::thread::Builder::new().name("wakeup-echo".into()).spawn(move || {
        while let Ok(n) = pinged.recv() {
            if pong.send(n).is_err() {
                break;
            }
        }
    })?;
    let time = |count: u32| -> anyhow::Result<Duration> {
        let start = Instant::now();
        for n in 0..count {
            ping.send(n)?;
            anyhow::ensure!(ponged.recv()? == n, "the echo thread answered out of turn");
        }
        Ok(start.elapsed())
    };
    time(ROUND_TRIPS)?;
    let elapsed = time(ROUND_TRIPS)?;
    drop(ping);
    echo.join().map_err(|_| anyhow::anyhow!("the echo thread panicked"))?;
    Ok(elapsed / ROUND_TRIPS)
}

/// The line the latency benches print under the host's.
pub(crate) fn describe() -> String {
    match round_trip() {
        Ok(trip) => format!(
            "wake-ups: {:.1} µs a round trip between two threads (compare P1 and P3 only between hosts alike in this)",
            trip.as_secs_f64() * 1e6
        ),
        Err(e) => format!("wake-ups: not measured ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_back_each_time_and_the_echo_thread_ends() -> anyhow::Result<()> {
        // Every reply is checked against what was sent; an echo out of turn is an error.
        assert!(round_trip()? > Duration::ZERO);
        assert!(describe().starts_with("wake-ups: "));
        Ok(())
    }
}

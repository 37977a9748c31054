//! How long a client refused as Busy is asked to wait: until a slot is due to free for it.
//!
//! By Little's law, with `n` requests under way each taking `W` from admission to the signed
//! final response (a moving average), one leaves about every `W / n`. Every client refused
//! meanwhile waits for one of those slots, so each refusal is given the next free
//! *appointment*: the first `W / n` from now, the next `W / n` after it, and so on (an
//! appointment in the past counts from now). A crowd refused at once is spread over the time
//! the slots take to free, instead of all coming back together to find one slot, and no one
//! is told to wait a fixed second in which several slots freed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Weight of the newest answer in the average.
const ALPHA: f64 = 0.2;
/// Longest retry-after signed, whatever the answers take.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The retry-after signed before any of the model's answers was timed here (at least the
/// floor): nothing says when a slot frees, and a guess too short would use up the client's
/// retries while the first answers still run.
pub(crate) const UNTIMED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The retry-after signed while nothing is timed: [`UNTIMED_RETRY_AFTER`] within `floor` and
/// [`MAX_RETRY_AFTER`] (the floor wins).
pub(crate) fn untimed_retry_after(floor: Duration) -> Duration {
    UNTIMED_RETRY_AFTER.clamp(floor, MAX_RETRY_AFTER.max(floor))
}

/// One model's answer times, requests under way and the last appointment given.
#[derive(Debug, Default)]
pub(crate) struct AnswerTime {
    /// Microseconds, as `f64` bits; 0 until the first answer.
    average: AtomicU64,
    /// Requests of this model the backend took and not finished (queued in it included).
    under_way: AtomicU64,
    /// When the last refused client was told to come back (`None` before the first).
    last_appointment: Mutex<Option<Instant>>,
}

/// Counts one request as under way until dropped.
pub(crate) struct UnderWay<'a>(&'a AtomicU64);

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AnswerTime {
    /// Counts one answer that took `took`. Concurrent updates may lose one sample, which the
    /// average does not miss.
    pub(crate) fn record(&self, took: Duration) {
        let sample = took.as_secs_f64() * 1e6;
        let old = f64::from_bits(self.average.load(Ordering::Relaxed));
        let new = if old > 0.0 { old + ALPHA * (sample - old) } else { sample };
        self.average.store(new.max(1.0).to_bits(), Ordering::Relaxed);
    }

    /// Counts a request as under way (from the backend's yes) until the guard drops.
    pub(crate) fn enter(&self) -> UnderWay<'_> {
        self.under_way.fetch_add(1, Ordering::Relaxed);
        UnderWay(&self.under_way)
    }

    /// The time between two answers now: the average answer time divided by the requests
    /// under way (all of it when there are none); `None` before any answer was timed.
    fn between_answers(&self) -> Option<Duration> {
        let micros = f64::from_bits(self.average.load(Ordering::Relaxed));
        if micros <= 0.0 {
            return None;
        }
        let under_way = self.under_way.load(Ordering::Relaxed).max(1);
        #[allow(clippy::cast_precision_loss)] // far below 2^52 requests
        let gap = micros / under_way as f64;
        Some(Duration::from_secs_f64(gap / 1e6))
    }

    /// The retry-after to sign to a request refused at `now`: until
    /// its appointment, the next free one a time between answers after the last one given (or
    /// after `now`), in whole milliseconds, rounded up, at least `floor` and at most
    /// [`MAX_RETRY_AFTER`]; [`UNTIMED_RETRY_AFTER`] before any answer was timed.
    pub(crate) fn retry_after(&self, floor: Duration, now: Instant) -> Duration {
        let Some(gap) = self.between_answers() else {
            return untimed_retry_after(floor);
        };
        let appointment = {
            let mut last = self.last_appointment.lock().unwrap_or_else(|e| e.into_inner());
            let from = last.map_or(now, |at| at.max(now));
            // Never more than the longest wait ahead: appointments past it are not kept.
            let appointment = (from + gap).min(now + MAX_RETRY_AFTER);
            *last = Some(appointment);
            appointment
        };
        let wait = appointment.saturating_duration_since(now);
        let millis = u64::try_from(wait.as_micros().div_ceil(1_000)).unwrap_or(u64::MAX);
        Duration::from_millis(millis).clamp(floor, MAX_RETRY_AFTER.max(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOR: Duration = Duration::from_millis(100);

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// An `AnswerTime` whose answers took `took` each, many times over.
    fn timed(took: Duration) -> AnswerTime {
        let time = AnswerTime::default();
        for _ in 0..60 {
            time.record(took);
        }
        time
    }

    #[test]
    fn the_wait_follows_the_answers_within_its_bounds() {
        let t0 = Instant::now();
        let time = AnswerTime::default();
        let _running = time.enter();
        assert_eq!(time.retry_after(FLOOR, t0), UNTIMED_RETRY_AFTER, "nothing timed: a second");
        assert_eq!(time.retry_after(ms(2_000), t0), ms(2_000), "or the floor, if more");
        time.record(ms(250));
        assert_eq!(time.retry_after(FLOOR, t0), ms(250), "to the millisecond, not a whole second");
        let time = timed(ms(7_500));
        let _running = time.enter();
        assert_eq!(time.retry_after(FLOOR, t0), ms(7_500), "7.5 s answers: come back in 7.5 s");
        assert_eq!(
            time.retry_after(ms(20_000), t0 + ms(30_000)),
            ms(20_000),
            "never below the floor"
        );
        let time = timed(Duration::from_secs(3_600));
        let _running = time.enter();
        assert_eq!(time.retry_after(FLOOR, t0), MAX_RETRY_AFTER);
    }

    #[test]
    fn with_more_requests_under_way_a_slot_frees_sooner() {
        let t0 = Instant::now();
        let time = timed(ms(7_500));
        let running: Vec<_> = (0..4).map(|_| time.enter()).collect();
        assert_eq!(
            time.retry_after(FLOOR, t0),
            ms(1_875),
            "one of 4 answers of 7.5 s ends every 1.875 s"
        );
        drop(running);
        let later = t0 + ms(60_000);
        assert_eq!(
            time.retry_after(FLOOR, later),
            ms(7_500),
            "none under way: a whole answer's time"
        );
        let many: Vec<_> = (0..100).map(|_| time.enter()).collect();
        let much_later = later + ms(60_000);
        assert_eq!(
            time.retry_after(FLOOR, much_later),
            ms(100),
            "75 ms between answers: the floor"
        );
        drop(many);
        assert_eq!(time.under_way.load(Ordering::Relaxed), 0, "every guard gave its count back");
    }

    #[test]
    fn a_crowd_refused_at_once_is_spread_over_the_slots_freeing() {
        let t0 = Instant::now();
        // 64 answers of 640 ms under way: one ends every 10 ms.
        let time = timed(ms(640));
        let _running: Vec<_> = (0..64).map(|_| time.enter()).collect();
        let waits: Vec<_> = (0..50).map(|_| time.retry_after(Duration::ZERO, t0)).collect();
        assert_eq!(waits[0], ms(10), "the first comes back when the first slot frees");
        assert_eq!(waits[1], ms(20), "the next one a slot later");
        assert_eq!(waits[49], ms(500));
        // With a floor, the first ones wait for it; the line goes on beyond it.
        let time = timed(ms(640));
        let _running: Vec<_> = (0..64).map(|_| time.enter()).collect();
        let waits: Vec<_> = (0..50).map(|_| time.retry_after(FLOOR, t0)).collect();
        assert_eq!((waits[0], waits[9], waits[10], waits[49]), (FLOOR, FLOOR, ms(110), ms(500)));
        // An appointment already past counts from now, not from it.
        assert_eq!(time.retry_after(Duration::ZERO, t0 + ms(5_000)), ms(10));
    }

    #[test]
    fn the_line_of_appointments_is_bounded() {
        let t0 = Instant::now();
        let time = timed(ms(30_000));
        let _running = time.enter();
        for _ in 0..10 {
            assert!(time.retry_after(FLOOR, t0) <= MAX_RETRY_AFTER);
        }
        assert_eq!(time.retry_after(FLOOR, t0), MAX_RETRY_AFTER);
        // The line never reaches more than a minute ahead.
        assert_eq!(time.retry_after(FLOOR, t0 + ms(1_000)), MAX_RETRY_AFTER);
    }
}

//! How long a client refused as Busy is asked to wait: about until the next of that model's
//! requests under way here is answered. By Little's law, with `n` requests under way each
//! taking `W` from admission to the signed final response (a moving average), one leaves
//! about every `W / n`: a slot (or a queue place) frees then, not after a fixed second in
//! which none freed, nor after a whole answer's time while many run at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Weight of the newest answer in the average.
const ALPHA: f64 = 0.2;
/// Longest retry-after signed, whatever the answers take.
pub(crate) const MAX_RETRY_AFTER_SECS: u64 = 60;

/// One model's answer times and requests under way.
#[derive(Debug, Default)]
pub(crate) struct AnswerTime {
    /// Microseconds, as `f64` bits; 0 until the first answer.
    average: AtomicU64,
    /// Requests of this model admitted and not finished (queued in the backend included).
    under_way: AtomicU64,
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

    /// Counts a request as under way (from admission) until the guard drops.
    pub(crate) fn enter(&self) -> UnderWay<'_> {
        self.under_way.fetch_add(1, Ordering::Relaxed);
        UnderWay(&self.under_way)
    }

    /// The retry-after to sign to a request refused while counted as under way: the average
    /// answer time divided by the other requests under way (all of it when there are none),
    /// in whole seconds, rounded up, at least `floor` (also the answer before any answer was
    /// timed) and at most [`MAX_RETRY_AFTER_SECS`].
    pub(crate) fn retry_after_secs(&self, floor: u64) -> u64 {
        let micros = f64::from_bits(self.average.load(Ordering::Relaxed));
        let others = self.under_way.load(Ordering::Relaxed).saturating_sub(1).max(1);
        #[allow(clippy::cast_precision_loss)] // far below 2^52 requests
        let between_answers = micros / others as f64;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // finite, >= 0
        let secs = (between_answers / 1e6).ceil() as u64;
        secs.clamp(floor, MAX_RETRY_AFTER_SECS.max(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_follows_the_answers_within_its_bounds() {
        let time = AnswerTime::default();
        let _refused = time.enter();
        assert_eq!(time.retry_after_secs(1), 1, "nothing timed yet: the floor");
        time.record(Duration::from_millis(200));
        assert_eq!(time.retry_after_secs(1), 1);
        for _ in 0..40 {
            time.record(Duration::from_millis(7_500));
        }
        assert_eq!(time.retry_after_secs(1), 8, "7.5 s answers: come back in 8");
        assert_eq!(time.retry_after_secs(10), 10, "never below the floor");
        for _ in 0..40 {
            time.record(Duration::from_secs(3_600));
        }
        assert_eq!(time.retry_after_secs(1), MAX_RETRY_AFTER_SECS);
    }

    #[test]
    fn with_more_requests_under_way_a_slot_frees_sooner() {
        let time = AnswerTime::default();
        for _ in 0..40 {
            time.record(Duration::from_millis(7_500));
        }
        let running: Vec<_> = (0..4).map(|_| time.enter()).collect();
        let refused = time.enter();
        assert_eq!(time.retry_after_secs(1), 2, "one of 4 answers of 7.5 s ends every 1.9 s");
        drop(running);
        assert_eq!(time.retry_after_secs(1), 8, "none under way: a whole answer's time");
        let many: Vec<_> = (0..64).map(|_| time.enter()).collect();
        assert_eq!(time.retry_after_secs(1), 1, "never below the floor");
        drop((many, refused));
        assert_eq!(time.under_way.load(Ordering::Relaxed), 0, "every guard gave its count back");
    }
}

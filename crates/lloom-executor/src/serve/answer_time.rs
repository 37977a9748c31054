//! How long a client refused as Busy is asked to wait: about as long as an answer of that
//! model takes here (a moving average from admission to the signed final response), so it
//! comes back when a slot is likely free, not after a fixed second in which none freed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Weight of the newest answer in the average.
const ALPHA: f64 = 0.2;
/// Longest retry-after signed, whatever the answers take.
pub(crate) const MAX_RETRY_AFTER_SECS: u64 = 60;

/// The moving average of one model's answer times.
#[derive(Debug, Default)]
pub(crate) struct AnswerTime {
    /// Microseconds, as `f64` bits; 0 until the first answer.
    average: AtomicU64,
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

    /// The retry-after to sign: the average answer time in whole seconds, rounded up, at least
    /// `floor` (also the answer before any answer was timed) and at most
    /// [`MAX_RETRY_AFTER_SECS`].
    pub(crate) fn retry_after_secs(&self, floor: u64) -> u64 {
        let micros = f64::from_bits(self.average.load(Ordering::Relaxed));
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // finite, >= 0
        let secs = (micros / 1e6).ceil() as u64;
        secs.clamp(floor, MAX_RETRY_AFTER_SECS.max(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_follows_the_answers_within_its_bounds() {
        let time = AnswerTime::default();
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
}

//! Waiting out executors that are busy or restarting instead of failing at once, as `chat`,
//! a conversation's turns and the demo do (the gateway answers 429 / 503 with `Retry-After`
//! instead: OpenAI SDKs wait and retry by themselves).

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::error::Error;

/// The longest wait before asking again for a model whose executors went away recently
/// (withdrawn, restarting): about a restart and a fresh announcement. It ends sooner when the
/// validators list one of its executors again.
pub const RESTART_WAIT: Duration = Duration::from_secs(5);

/// How often a restart's wait looks for the model's executors in a fresh directory.
pub const RESTART_POLL: Duration = Duration::from_secs(1);

/// The most added to a signed retry-after, so that clients told the same retry-after do not
/// all come back in the same instant: up to half the retry-after, at most this.
const MAX_JITTER: Duration = Duration::from_millis(250);

/// How many times a request is asked again after a busy or restarting answer, and until when.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    retries_left: u32,
    deadline: Instant,
}

/// Why, and how long, to wait before asking again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Every executor asked to be left alone this long (the shortest signed retry-after, and
    /// a little jitter).
    Busy(Duration),
    /// No executor serves the model now, but one did recently: look again after this long.
    Restarting(Duration),
}

impl Wait {
    /// How long to wait.
    pub fn duration(self) -> Duration {
        match self {
            Self::Busy(wait) | Self::Restarting(wait) => wait,
        }
    }

    /// Waits it out. A restart's wait asks the validators for a fresh directory every
    /// [`RESTART_POLL`] and ends as soon as it lists an executor of `model`, so the next try
    /// sees the executors back at once (a failed refresh is logged: the next try says what is
    /// wrong).
    pub async fn pass(self, client: &Client, model: &str) {
        let wait = match self {
            Self::Busy(wait) => return tokio::time::sleep(wait).await,
            Self::Restarting(wait) => wait,
        };
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(RESTART_POLL.min(left)).await;
            match client.refresh().await {
                Ok(_) if client.offers(model).await => return,
                Ok(_) => {}
                Err(e) => tracing::debug!("no fresh directory before asking again: {e}"),
            }
            if Instant::now() >= until {
                return;
            }
        }
    }
}

impl Patience {
    /// Up to `retries` more tries, all within `timeout` from `now`.
    pub fn new(retries: u32, timeout: Duration, now: Instant) -> Self {
        Self { retries_left: retries, deadline: now + timeout }
    }

    /// The time left for the request at `now`.
    pub fn left(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    /// The retries not used yet.
    pub fn retries_left(&self) -> u32 {
        self.retries_left
    }

    /// What to do after `error` at `now`: wait and ask again (using up one retry), or give up
    /// (`None`: the error stands). Only "all busy" and "gone for now" are waited out, and
    /// only when the wait ends before the deadline.
    pub fn after(&mut self, error: &Error, now: Instant) -> Option<Wait> {
        if self.retries_left == 0 {
            return None;
        }
        let wait = match error {
            Error::AllBusy { retry_after } => {
                Wait::Busy(*retry_after + jitter((*retry_after / 2).min(MAX_JITTER)))
            }
            Error::NoExecutor { last_offered_secs: Some(_), .. } => Wait::Restarting(RESTART_WAIT),
            _ => return None,
        };
        // A try that would start at or after the deadline has no time left to answer.
        if wait.duration() >= self.left(now) {
            return None;
        }
        self.retries_left -= 1;
        Some(wait)
    }
}

/// A random duration below `most` (from the standard library's per-process random hash keys;
/// this needs spreading, not secrecy).
fn jitter(most: Duration) -> Duration {
    let micros = u64::try_from(most.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(RandomState::new().hash_one(Instant::now()) % micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(secs: u64) -> Error {
        Error::AllBusy { retry_after: Duration::from_secs(secs) }
    }

    fn gone(last_offered_secs: Option<u64>) -> Error {
        Error::NoExecutor { model: "m".into(), available: vec![], last_offered_secs }
    }

    #[test]
    fn busy_is_waited_out_for_the_signed_retry_after_and_a_little_jitter() {
        let now = Instant::now();
        let mut patience = Patience::new(2, Duration::from_secs(60), now);
        let Some(Wait::Busy(wait)) = patience.after(&busy(3), now) else { panic!("not waited") };
        assert!(wait >= Duration::from_secs(3) && wait < Duration::from_secs(3) + MAX_JITTER);
        assert_eq!(patience.retries_left(), 1);
    }

    #[test]
    fn a_short_retry_after_gets_at_most_half_of_it_again_as_jitter() {
        let now = Instant::now();
        let signed = Duration::from_millis(80);
        for _ in 0..50 {
            let mut patience = Patience::new(1, Duration::from_secs(60), now);
            let busy = Error::AllBusy { retry_after: signed };
            let Some(Wait::Busy(wait)) = patience.after(&busy, now) else { panic!("not waited") };
            assert!(wait >= signed && wait < signed + signed / 2, "{wait:?}");
        }
    }

    #[test]
    fn a_model_gone_for_now_is_looked_for_again_and_an_unknown_one_is_not() {
        let now = Instant::now();
        let mut patience = Patience::new(2, Duration::from_secs(60), now);
        assert_eq!(patience.after(&gone(Some(12)), now), Some(Wait::Restarting(RESTART_WAIT)));
        assert_eq!(patience.after(&gone(None), now), None);
        assert_eq!(patience.retries_left(), 1, "giving up uses no retry");
    }

    #[test]
    fn retries_run_out() {
        let now = Instant::now();
        let mut patience = Patience::new(2, Duration::from_secs(60), now);
        assert!(patience.after(&busy(1), now).is_some());
        assert!(patience.after(&busy(1), now).is_some());
        assert_eq!(patience.after(&busy(1), now), None);
        assert_eq!(Patience::new(0, Duration::from_secs(60), now).after(&busy(1), now), None);
    }

    #[test]
    fn a_wait_past_the_deadline_gives_up_at_once() {
        let now = Instant::now();
        let mut patience = Patience::new(5, Duration::from_secs(10), now);
        assert_eq!(patience.after(&busy(10), now), None);
        assert_eq!(patience.after(&busy(30), now), None);
        let late = now + Duration::from_secs(7);
        assert_eq!(patience.after(&gone(Some(1)), late), None, "5 s from 7 s is past 10 s");
        assert!(patience.after(&busy(1), late).is_some());
        assert_eq!(patience.left(now + Duration::from_secs(11)), Duration::ZERO);
    }

    #[test]
    fn other_errors_are_not_retried() {
        let now = Instant::now();
        let mut patience = Patience::new(5, Duration::from_secs(60), now);
        let errors = [
            Error::DeadlineExceeded(Duration::from_secs(1)),
            Error::AllFailed { model: "m".into(), attempts: vec![] },
            Error::InvalidRequest("no".into()),
        ];
        for error in &errors {
            assert_eq!(patience.after(error, now), None, "{error}");
        }
        assert_eq!(patience.retries_left(), 5);
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(250)) < Duration::from_millis(250));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}

//! Per-client rate limits: requests per minute and output tokens per minute. An executor keys
//! them by client address; the client's gateway by API key.
//!
//! Each client has two token buckets that refill continuously. A request is admitted when its
//! request bucket holds one request and its token bucket is not empty; the tokens it actually
//! generated are charged when it ends (so a long answer cannot be refused half-way). The map of
//! clients is bounded: when full, clients whose buckets are full again are forgotten, and if
//! none can be, new clients are refused until some can.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The shortest wait returned: a bucket a hair short of one unit still asks for a millisecond.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// Rate limits per client; `None` means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests per minute (burst: the same number).
    pub requests_per_minute: Option<u32>,
    /// Output tokens per minute (burst: the same number).
    pub tokens_per_minute: Option<u32>,
    /// Most clients tracked at once.
    pub max_clients: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self { requests_per_minute: Some(600), tokens_per_minute: None, max_clients: 100_000 }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    level: f64,
    updated: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Self {
        Self { level: capacity, updated: now }
    }

    fn refill(&mut self, per_minute: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * per_minute / 60.0).min(per_minute);
        self.updated = now;
    }

    /// How long until the level reaches `wanted`, in whole milliseconds rounded up.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // non-negative, < 2^53
    fn wait(&self, wanted: f64, per_minute: f64) -> Duration {
        let missing = (wanted - self.level).max(0.0);
        Duration::from_millis((missing * 60_000.0 / per_minute).ceil() as u64)
    }
}

#[derive(Clone, Copy, Debug)]
struct ClientBuckets {
    requests: Bucket,
    tokens: Bucket,
}

/// Admission decisions per client, each client named by a `K` (an address, a key name).
#[derive(Debug)]
pub struct RateLimiter<K = crate::Address> {
    limits: RateLimits,
    clients: HashMap<K, ClientBuckets>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter with `limits`.
    pub fn new(limits: RateLimits) -> Self {
        Self { limits, clients: HashMap::new() }
    }

    fn capacity(limit: Option<u32>) -> f64 {
        limit.map_or(f64::INFINITY, f64::from)
    }

    /// Admits one request of `client`, or returns how long to wait before retrying (to the
    /// millisecond; a second when the table of clients is full).
    pub fn admit(&mut self, client: &K, now: Instant) -> Result<(), Duration> {
        let (rpm, tpm) = (self.limits.requests_per_minute, self.limits.tokens_per_minute);
        if rpm.is_none() && tpm.is_none() {
            return Ok(());
        }
        let (req_cap, tok_cap) = (Self::capacity(rpm), Self::capacity(tpm));
        if !self.clients.contains_key(client) && self.clients.len() >= self.limits.max_clients {
            self.forget_idle(now);
            if self.clients.len() >= self.limits.max_clients {
                return Err(Duration::from_secs(1));
            }
        }
        let entry = self.clients.entry(client.clone()).or_insert_with(|| ClientBuckets {
            requests: Bucket::full(req_cap, now),
            tokens: Bucket::full(tok_cap, now),
        });
        entry.requests.refill(req_cap, now);
        entry.tokens.refill(tok_cap, now);
        if entry.requests.level < 1.0 {
            return Err(entry.requests.wait(1.0, req_cap).max(MIN_WAIT));
        }
        if entry.tokens.level < 1.0 {
            return Err(entry.tokens.wait(1.0, tok_cap).max(MIN_WAIT));
        }
        entry.requests.level -= 1.0;
        Ok(())
    }

    /// Charges `tokens` generated for `client` (the level may go negative: a debt).
    pub fn charge_tokens(&mut self, client: &K, tokens: u64, now: Instant) {
        if self.limits.tokens_per_minute.is_none() {
            return;
        }
        if let Some(entry) = self.clients.get_mut(client) {
            entry.tokens.refill(Self::capacity(self.limits.tokens_per_minute), now);
            entry.tokens.level -= tokens as f64;
        }
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }

    fn forget_idle(&mut self, now: Instant) {
        let (req_cap, tok_cap) = (
            Self::capacity(self.limits.requests_per_minute),
            Self::capacity(self.limits.tokens_per_minute),
        );
        self.clients.retain(|_, b| {
            let (mut r, mut t) = (b.requests, b.tokens);
            r.refill(req_cap, now);
            t.refill(tok_cap, now);
            r.level < req_cap || t.level < tok_cap
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Address;

    /// How long an empty bucket takes to refill one unit at `per_minute`.
    fn refill_interval(per_minute: u32) -> Duration {
        Duration::from_secs_f64(60.0 / f64::from(per_minute.max(1)))
    }

    fn client(n: u8) -> Address {
        Address::repeat_byte(n)
    }

    #[test]
    fn requests_per_minute_is_enforced_and_refills() {
        let limits = RateLimits { requests_per_minute: Some(2), ..RateLimits::default() };
        let mut limiter: RateLimiter = RateLimiter::new(limits);
        let t0 = Instant::now();
        assert!(limiter.admit(&client(1), t0).is_ok());
        assert!(limiter.admit(&client(1), t0).is_ok());
        let wait = limiter.admit(&client(1), t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(30), "one request refills in 60/2 seconds");
        // Another client has its own budget.
        assert!(limiter.admit(&client(2), t0).is_ok());
        assert!(limiter.admit(&client(1), t0 + refill_interval(2)).is_ok());
    }

    #[test]
    fn tokens_are_charged_after_the_fact() {
        let limits = RateLimits {
            requests_per_minute: None,
            tokens_per_minute: Some(100),
            ..RateLimits::default()
        };
        let mut limiter: RateLimiter = RateLimiter::new(limits);
        let t0 = Instant::now();
        assert!(limiter.admit(&client(1), t0).is_ok());
        limiter.charge_tokens(&client(1), 150, t0);
        let wait = limiter.admit(&client(1), t0).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_millis(30_600),
            "a debt of 50 tokens plus one more at 100/min"
        );
    }

    #[test]
    fn the_client_map_is_bounded() {
        let limits =
            RateLimits { requests_per_minute: Some(1), max_clients: 2, ..RateLimits::default() };
        let mut limiter: RateLimiter = RateLimiter::new(limits);
        let t0 = Instant::now();
        assert!(limiter.admit(&client(1), t0).is_ok());
        assert!(limiter.admit(&client(2), t0).is_ok());
        assert!(limiter.admit(&client(3), t0).is_err(), "no room and nobody idle");
        assert_eq!(limiter.tracked(), 2);
        // A minute later both buckets are full again: they are forgotten to make room.
        assert!(limiter.admit(&client(3), t0 + Duration::from_secs(61)).is_ok());
        assert!(limiter.tracked() <= 2);
    }

    #[test]
    fn no_limits_admits_everything_without_tracking() {
        let limits =
            RateLimits { requests_per_minute: None, tokens_per_minute: None, max_clients: 0 };
        let mut limiter: RateLimiter = RateLimiter::new(limits);
        for n in 0..10 {
            assert!(limiter.admit(&client(n), Instant::now()).is_ok());
        }
        assert_eq!(limiter.tracked(), 0);
    }
}

//! Choosing an executor: filter, score, explore, cool down.
//!
//! Candidates come from the verified directory. Those over the user's price ceiling, under the
//! minimum context, cooling down after a failure, or already tried for this request are
//! removed. The rest are ordered by a score (lower is better) built from four terms, each
//! normalised so the best candidate scores 1:
//!
//! - **price**: `price_in + price_out` per token, relative to the cheapest candidate;
//! - **latency**: the moving average of time to first token, relative to the fastest measured
//!   one (never-measured executors count as the median of the measured ones);
//! - **load**: 1 plus the announced queue per slot, plus 1 when no slot is free;
//! - **reputation**: `max(1, 1 + 4·(r − ½))` with the smoothed failure rate
//!   `r = (failures + 1) / (attempts + 2)` (½ for an executor never tried).
//!
//! `cheapest` orders by price first, `fastest` by latency (ties by throughput), and `balanced`
//! (the default) by `0.35·price + 0.35·latency + 0.15·load + 0.15·reputation`. With probability
//! [`Router::EXPLORATION`] one never-tried candidate is moved to the front, so new executors get
//! measured. A failure cools an executor down for 5 s, doubling with every consecutive failure
//! up to 5 minutes; a success resets it. A signed Busy or RateLimited answer is not a failure:
//! the executor is left alone for exactly the retry-after it signed (50 ms to 5 minutes; of
//! several requests refused meanwhile, the soonest), and its reputation is unchanged. When every untried candidate is cooling down after failures, the
//! one whose cooldown ends first is tried anyway, once per request (see [`LastResort`]): a
//! cooldown orders executors, it does not refuse service when nothing else is left.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lloom_core::{Address, U256};

use crate::directory::Candidate;
use crate::error::Error;

mod last_resort;

pub use last_resort::LastResort;

/// How to order candidates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// Lowest price first.
    Cheapest,
    /// Lowest measured time to first token first.
    Fastest,
    /// A weighted mix of price, latency, load and reputation.
    #[default]
    Balanced,
}

/// What the client has measured about one executor.
#[derive(Clone, Debug, Default)]
pub struct ExecutorStats {
    /// Moving average of time to first token, in milliseconds.
    pub ttft_ms: Option<f64>,
    /// Moving average of streaming speed, in tokens per second.
    pub tokens_per_sec: Option<f64>,
    /// Completed, verified requests.
    pub successes: u32,
    /// Failed attempts of any kind.
    pub failures: u32,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Signed Busy or RateLimited answers (not failures: they leave the reputation alone).
    pub busy: u32,
    /// Not tried again before this instant.
    pub cooldown_until: Option<Instant>,
    /// Whether the cooldown is the retry-after the executor signed with a Busy or RateLimited
    /// answer, rather than the backoff after a failure.
    pub cooldown_is_busy: bool,
    /// Why it last failed.
    pub last_failure: Option<String>,
}

/// Filters the user sets on a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteFilter {
    /// Highest acceptable price per prompt token, in wei.
    pub max_price_per_input_token: Option<U256>,
    /// Highest acceptable price per generated token, in wei.
    pub max_price_per_output_token: Option<U256>,
    /// Smallest acceptable context length.
    pub min_context: Option<u32>,
}

impl RouteFilter {
    /// This filter with both price ceilings at most `price` (a ceiling set above it, or none,
    /// becomes `price`).
    pub fn capped_at(self, price: U256) -> Self {
        let cap = |own: Option<U256>| Some(own.map_or(price, |own| own.min(price)));
        Self {
            max_price_per_input_token: cap(self.max_price_per_input_token),
            max_price_per_output_token: cap(self.max_price_per_output_token),
            ..self
        }
    }

    /// This filter, asking for a longer context than `context` tokens.
    pub(crate) fn above_context(self, context: u32) -> Self {
        let longer = context.saturating_add(1);
        Self { min_context: Some(self.min_context.map_or(longer, |own| own.max(longer))), ..self }
    }

    /// Why no candidate passes: [`Error::OutsideLimits`] naming the best that is on offer, or
    /// `None` when some candidate passes (or there is none at all).
    pub(crate) fn refusal(&self, model: &str, candidates: &[Candidate]) -> Option<Error> {
        let offers = candidates.iter().map(|c| &c.offer);
        if candidates.is_empty() || candidates.iter().any(|c| self.accepts(c)) {
            return None;
        }
        Some(Error::OutsideLimits {
            model: model.to_owned(),
            offers: candidates.len(),
            lowest_input_price: offers.clone().map(|o| o.price_per_input_token).min()?,
            lowest_output_price: offers.clone().map(|o| o.price_per_output_token).min()?,
            largest_context: offers.map(|o| o.context_length).max()?,
        })
    }

    fn accepts(&self, c: &Candidate) -> bool {
        self.max_price_per_input_token.is_none_or(|m| c.offer.price_per_input_token <= m)
            && self.max_price_per_output_token.is_none_or(|m| c.offer.price_per_output_token <= m)
            && self.min_context.is_none_or(|m| c.offer.context_length >= m)
    }
}

/// Scores candidates and remembers how executors behaved.
#[derive(Debug)]
pub struct Router {
    strategy: Strategy,
    stats: HashMap<Address, ExecutorStats>,
    rng: u64,
}

/// Weight of the newest sample in the moving averages.
const EWMA_ALPHA: f64 = 0.3;
/// First cooldown after a failure.
const BASE_COOLDOWN: Duration = Duration::from_secs(5);
/// Longest cooldown.
const MAX_COOLDOWN: Duration = Duration::from_secs(300);
/// Shortest wait after a Busy answer, whatever retry-after it signed (an executor signing none
/// is not asked again at once).
const MIN_BUSY_COOLDOWN: Duration = Duration::from_millis(50);
/// Most executors remembered.
const MAX_TRACKED: usize = 10_000;

impl Router {
    /// Probability of trying a never-tried executor first.
    pub const EXPLORATION: f64 = 0.1;

    /// A router with `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(1))
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Self { strategy, stats: HashMap::new(), rng: seed | 1 }
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// What is known about `executor`.
    pub fn stats(&self, executor: &Address) -> Option<&ExecutorStats> {
        self.stats.get(executor)
    }

    /// Every executor with its stats (for `--verbose` and metrics).
    pub fn all_stats(&self) -> impl Iterator<Item = (&Address, &ExecutorStats)> {
        self.stats.iter()
    }

    fn next_random(&mut self) -> f64 {
        // xorshift64*: plenty for picking whom to explore.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Orders usable candidates by the router's strategy, best first; `exclude` holds
    /// executors already tried.
    pub fn rank(
        &mut self,
        candidates: Vec<Candidate>,
        filter: &RouteFilter,
        exclude: &[Address],
        now: Instant,
    ) -> Vec<Candidate> {
        self.rank_by(self.strategy, candidates, filter, exclude, now)
    }

    /// [`rank`](Self::rank) by `strategy` (a request's own) instead of the router's.
    pub fn rank_by(
        &mut self,
        strategy: Strategy,
        candidates: Vec<Candidate>,
        filter: &RouteFilter,
        exclude: &[Address],
        now: Instant,
    ) -> Vec<Candidate> {
        let mut usable: Vec<Candidate> = candidates
            .into_iter()
            .filter(|c| filter.accepts(c) && !exclude.contains(&c.address))
            .filter(|c| self.cooling(&c.address, now).is_none())
            .collect();
        if usable.is_empty() {
            return usable;
        }
        let price = |c: &Candidate| {
            let p = c.offer.price_per_input_token.saturating_add(c.offer.price_per_output_token);
            u128::try_from(p).map_or(f64::MAX, |p| p as f64) + 1.0
        };
        let min_price = usable.iter().map(price).fold(f64::INFINITY, f64::min);
        let mut measured: Vec<f64> = usable
            .iter()
            .filter_map(|c| self.stats.get(&c.address).and_then(|s| s.ttft_ms))
            .collect();
        measured.sort_by(f64::total_cmp);
        let median = measured.get(measured.len() / 2).copied().unwrap_or(1.0);
        let fastest = measured.first().copied().unwrap_or(1.0).max(0.001);
        let scores: HashMap<Address, (f64, f64, f64, f64)> = usable
            .iter()
            .map(|c| {
                let s = self.stats.get(&c.address);
                let ttft = s.and_then(|s| s.ttft_ms).unwrap_or(median).max(0.001);
                let attempts = s.map_or(0, |s| s.successes + s.failures);
                let failures = s.map_or(0, |s| s.failures);
                let reputation =
                    1.0 + 4.0 * f64::from(failures + 1) / f64::from(attempts + 2) - 2.0;
                let per_slot =
                    f64::from(c.load.queue_depth) / f64::from(c.load.max_concurrency.max(1));
                let load = 1.0 + per_slot + if c.load.free_slots == 0 { 1.0 } else { 0.0 };
                (c.address, (price(c) / min_price, ttft / fastest, load, reputation.max(1.0)))
            })
            .collect();
        let key = |c: &Candidate| -> (f64, f64) {
            let (p, l, load, r) = scores.get(&c.address).copied().unwrap_or((1.0, 1.0, 1.0, 1.0));
            let balanced = 0.35 * p + 0.35 * l + 0.15 * load + 0.15 * r;
            match strategy {
                Strategy::Cheapest => (p, balanced),
                Strategy::Fastest => (l, balanced),
                Strategy::Balanced => (balanced, p),
            }
        };
        usable.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(a.address.cmp(&b.address))
        });
        if strategy != Strategy::Cheapest && self.next_random() < Self::EXPLORATION {
            let untried: Vec<usize> = usable
                .iter()
                .enumerate()
                .filter(|(_, c)| !self.stats.contains_key(&c.address))
                .map(|(i, _)| i)
                .collect();
            if !untried.is_empty() {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // in [0, len)
                let pick = (self.next_random() * untried.len() as f64) as usize;
                if let Some(&i) = untried.get(pick.min(untried.len() - 1)) {
                    let chosen = usable.remove(i);
                    usable.insert(0, chosen);
                }
            }
        }
        usable
    }

    /// The cooldown `executor` is in at `now`, if any: when it ends, and whether it is a signed
    /// retry-after.
    fn cooling(&self, executor: &Address, now: Instant) -> Option<(Instant, bool)> {
        let stats = self.stats.get(executor)?;
        stats.cooldown_until.filter(|until| *until > now).map(|u| (u, stats.cooldown_is_busy))
    }

    fn entry(&mut self, executor: Address) -> &mut ExecutorStats {
        if self.stats.len() >= MAX_TRACKED && !self.stats.contains_key(&executor) {
            // Forget executors that are not cooling down; they are re-measured if they return.
            let now = Instant::now();
            self.stats.retain(|_, s| s.cooldown_until.is_some_and(|u| u > now));
        }
        self.stats.entry(executor).or_default()
    }

    /// Records a verified answer: time to first token and streaming speed.
    pub fn record_success(&mut self, executor: Address, ttft: Duration, tokens_per_sec: f64) {
        let s = self.entry(executor);
        let ttft_ms = ttft.as_secs_f64() * 1000.0;
        s.ttft_ms = Some(s.ttft_ms.map_or(ttft_ms, |a| a + EWMA_ALPHA * (ttft_ms - a)));
        if tokens_per_sec.is_finite() && tokens_per_sec > 0.0 {
            s.tokens_per_sec = Some(
                s.tokens_per_sec.map_or(tokens_per_sec, |a| a + EWMA_ALPHA * (tokens_per_sec - a)),
            );
        }
        s.successes = s.successes.saturating_add(1);
        s.consecutive_failures = 0;
        s.cooldown_until = None;
        s.cooldown_is_busy = false;
    }

    /// Records a failure and cools the executor down; returns the cooldown.
    pub fn record_failure(&mut self, executor: Address, reason: &str, now: Instant) -> Duration {
        let s = self.entry(executor);
        s.failures = s.failures.saturating_add(1);
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        let doublings = s.consecutive_failures.saturating_sub(1).min(10);
        let cooldown = BASE_COOLDOWN.saturating_mul(1 << doublings).min(MAX_COOLDOWN);
        s.cooldown_until = Some(now + cooldown);
        s.cooldown_is_busy = false;
        s.last_failure = Some(reason.to_owned());
        cooldown
    }

    /// Records a signed Busy or RateLimited answer: the executor is left alone for the
    /// `retry_after` it signed (at least 50 ms, at most 5 minutes), with no backoff and no mark
    /// against its reputation; returns the cooldown. An earlier busy cooldown still running
    /// is kept: the executor gives each refused request its own time to come back, and the
    /// request told the soonest may ask it then.
    pub fn record_busy(
        &mut self,
        executor: Address,
        retry_after: Duration,
        reason: &str,
        now: Instant,
    ) -> Duration {
        let s = self.entry(executor);
        s.busy = s.busy.saturating_add(1);
        let cooldown = retry_after.clamp(MIN_BUSY_COOLDOWN, MAX_COOLDOWN);
        let until = match s.cooldown_until {
            Some(sooner) if s.cooldown_is_busy && sooner > now => sooner.min(now + cooldown),
            _ => now + cooldown,
        };
        s.cooldown_until = Some(until);
        s.cooldown_is_busy = true;
        s.last_failure = Some(reason.to_owned());
        cooldown
    }
}

/// For a request with a JSON format, keeps only the candidates that announce
/// [`CAPABILITY_JSON`](lloom_core::announce::CAPABILITY_JSON) when any does; otherwise all
/// (an executor in front of another server may still honour the format, and the answer's
/// shape is verified either way).
pub(crate) fn prefer_json_capable(
    candidates: &mut Vec<Candidate>,
    format: &lloom_core::OutputFormat,
) {
    let json = lloom_core::announce::CAPABILITY_JSON;
    if *format != lloom_core::OutputFormat::Text
        && candidates.iter().any(|c| c.offer.has_capability(json))
    {
        candidates.retain(|c| c.offer.has_capability(json));
    }
}

#[cfg(test)]
mod tests;

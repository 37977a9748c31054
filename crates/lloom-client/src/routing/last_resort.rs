//! What to do when every untried candidate is cooling down.
//!
//! A cooldown keeps a failed executor behind the others; it should not refuse service when
//! there are no others. So, as a load balancer's panic mode does, the executor whose failure
//! cooldown ends first is tried anyway, once per request. One that answered Busy is not: it
//! signed when to come back, and the request ends with that retry-after instead.

use std::time::{Duration, Instant};

use lloom_core::Address;

use super::{RouteFilter, Router};
use crate::directory::Candidate;

/// The way out when [`Router::rank`] leaves no candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LastResort {
    /// No untried candidate passes the filter.
    Nothing,
    /// Every untried candidate waits out the retry-after it signed; the shortest left.
    Busy {
        /// How long until the first of them may be asked again (at least a millisecond).
        retry_after: Duration,
        /// That first one: a request that has waited out its own retry-after asks it anyway.
        due_first: Box<Candidate>,
    },
    /// The candidate whose failure cooldown ends first: try it anyway.
    Probe(Box<Candidate>),
}

impl Router {
    /// What to try once [`rank`](Self::rank) over the same arguments came back empty.
    pub fn last_resort(
        &self,
        candidates: &[Candidate],
        filter: &RouteFilter,
        exclude: &[Address],
        now: Instant,
    ) -> LastResort {
        let mut probe: Option<(Instant, &Candidate)> = None;
        let mut busy: Option<(Instant, &Candidate)> = None;
        let untried =
            candidates.iter().filter(|c| filter.accepts(c) && !exclude.contains(&c.address));
        for candidate in untried {
            match self.cooling(&candidate.address, now) {
                Some((until, true)) if busy.is_none_or(|(first, _)| until < first) => {
                    busy = Some((until, candidate));
                }
                Some((until, false)) if probe.is_none_or(|(first, _)| until < first) => {
                    probe = Some((until, candidate));
                }
                _ => {}
            }
        }
        match (probe, busy) {
            (Some((_, candidate)), _) => LastResort::Probe(Box::new(candidate.clone())),
            (None, Some((until, candidate))) => {
                let left = until.saturating_duration_since(now);
                // Rounded up to the millisecond, so that it has ended by then.
                let millis = left.as_nanos().div_ceil(1_000_000);
                let millis = u64::try_from(millis).unwrap_or(u64::MAX).max(1);
                LastResort::Busy {
                    retry_after: Duration::from_millis(millis),
                    due_first: Box::new(candidate.clone()),
                }
            }
            (None, None) => LastResort::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::candidate;
    use super::*;
    use crate::routing::Strategy;
    use std::time::Duration;

    #[test]
    fn the_executor_whose_failure_cooldown_ends_first_is_probed() {
        let mut router = Router::new(Strategy::Balanced);
        let (a, b, c) = (candidate(1, 4096), candidate(2, 4096), candidate(3, 4096));
        let t0 = Instant::now();
        router.record_failure(a.address, "unreachable", t0);
        router.record_failure(a.address, "unreachable", t0); // 10 s
        router.record_failure(b.address, "timeout", t0); // 5 s
        router.record_busy(c.address, Duration::from_secs(1), "busy", t0);
        let all = [a.clone(), b.clone(), c.clone()];
        let filter = RouteFilter::default();
        assert!(router.rank(all.to_vec(), &filter, &[], t0).is_empty());
        assert_eq!(
            router.last_resort(&all, &filter, &[], t0),
            LastResort::Probe(Box::new(b.clone()))
        );
        // Tried already for this request: the next one.
        assert_eq!(
            router.last_resort(&all, &filter, &[b.address], t0),
            LastResort::Probe(Box::new(a.clone()))
        );
        // Only the busy one left: its signed retry-after, not a probe.
        assert_eq!(
            router.last_resort(&all, &filter, &[a.address, b.address], t0),
            LastResort::Busy {
                retry_after: Duration::from_secs(1),
                due_first: Box::new(c.clone())
            }
        );
        assert_eq!(
            router.last_resort(&all, &filter, &[a.address, b.address, c.address], t0),
            LastResort::Nothing
        );
    }

    #[test]
    fn the_filter_still_applies_and_a_busy_wait_rounds_up() {
        let mut router = Router::new(Strategy::Balanced);
        let (cheap, dear) = (candidate(1, 4096), candidate(50, 4096));
        let t0 = Instant::now();
        router.record_failure(dear.address, "timeout", t0);
        router.record_busy(cheap.address, Duration::from_secs(30), "busy", t0);
        let filter = RouteFilter {
            max_price_per_output_token: Some(lloom_core::U256::from(10)),
            ..RouteFilter::default()
        };
        let both = [cheap.clone(), dear];
        let later = t0 + Duration::from_micros(2_500_400);
        assert_eq!(
            router.last_resort(&both, &filter, &[], later),
            LastResort::Busy {
                retry_after: Duration::from_millis(27_500),
                due_first: Box::new(cheap)
            },
            "27.4996 s left: rounded up to the millisecond"
        );
    }

    #[test]
    fn a_busy_answer_waits_the_signed_retry_after_and_leaves_the_reputation_alone() {
        let mut router = Router::new(Strategy::Balanced);
        let a = candidate(1, 4096);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(
                router.record_busy(a.address, Duration::from_secs(2), "busy", t0),
                Duration::from_secs(2),
                "no backoff"
            );
        }
        assert_eq!(
            router.record_busy(a.address, Duration::ZERO, "busy", t0),
            Duration::from_millis(50)
        );
        assert_eq!(
            router.record_busy(a.address, Duration::from_secs(86_400), "busy", t0),
            Duration::from_secs(300)
        );
        let stats = router.stats(&a.address).unwrap();
        assert_eq!((stats.busy, stats.failures, stats.consecutive_failures), (7, 0, 0));
        assert!(stats.cooldown_is_busy);
        // A failure afterwards backs off from the start, and is no longer a busy wait.
        assert_eq!(router.record_failure(a.address, "timeout", t0), Duration::from_secs(5));
        assert!(!router.stats(&a.address).unwrap().cooldown_is_busy);
    }

    #[test]
    fn of_two_requests_told_different_waits_the_sooner_one_decides_when_to_ask_again() {
        let mut router = Router::new(Strategy::Balanced);
        let a = candidate(1, 4096);
        let t0 = Instant::now();
        let until = |router: &Router| router.stats(&a.address).unwrap().cooldown_until.unwrap();
        router.record_busy(a.address, Duration::from_millis(100), "busy", t0);
        let later = router.record_busy(a.address, Duration::from_millis(1_500), "busy", t0);
        assert_eq!(later, Duration::from_millis(1_500), "its own wait, for its request");
        assert_eq!(until(&router), t0 + Duration::from_millis(100), "the sooner one stands");
        // Once it has passed, the next wait counts again.
        let after = t0 + Duration::from_millis(200);
        router.record_busy(a.address, Duration::from_millis(700), "busy", after);
        assert_eq!(until(&router), after + Duration::from_millis(700));
        // A failure's cooldown is not kept against a busy answer.
        router.record_failure(a.address, "timeout", after);
        router.record_busy(a.address, Duration::from_millis(300), "busy", after);
        assert_eq!(until(&router), after + Duration::from_millis(300));
    }
}

//! The router's scoring, filters and cooldowns, on synthetic candidates.

use super::*;
use lloom_core::{ExecutorLoad, ModelOffer, NodeKey};

#[test]
fn json_requests_prefer_offers_that_hold_answers_to_json_when_there_are_any() {
    let json = lloom_core::announce::CAPABILITY_JSON;
    let mut capable = candidate(9, 1024);
    capable.offer.capabilities.push(json.into());
    let plain = candidate(1, 1024);
    let object = lloom_core::OutputFormat::JsonObject;
    let mut both = vec![plain.clone(), capable.clone()];
    prefer_json_capable(&mut both, &object);
    assert_eq!(both.iter().map(|c| c.address).collect::<Vec<_>>(), [capable.address]);
    let mut text = vec![plain.clone(), capable];
    prefer_json_capable(&mut text, &lloom_core::OutputFormat::Text);
    assert_eq!(text.len(), 2);
    let mut none_capable = vec![plain];
    prefer_json_capable(&mut none_capable, &object);
    assert_eq!(none_capable.len(), 1, "with no capable offer, all are tried");
}

pub(super) fn candidate(price: u64, context: u32) -> Candidate {
    let key = NodeKey::generate();
    Candidate {
        peer: key.peer_id(),
        address: key.address(),
        offer: ModelOffer {
            model: "m".into(),
            context_length: context,
            price_per_input_token: U256::from(price),
            price_per_output_token: U256::from(price),
            weights_sha256: None,
            quantization: None,
            capabilities: vec![],
        },
        load: ExecutorLoad {
            queue_depth: 0,
            free_slots: 4,
            max_concurrency: 4,
            free_memory_bytes: 0,
        },
        addrs: vec![],
    }
}

#[test]
fn cheapest_orders_by_price_and_filters_apply() {
    let mut router = Router::new(Strategy::Cheapest);
    let (a, b, c) = (candidate(30, 4096), candidate(10, 4096), candidate(20, 512));
    let ranked = router.rank(
        vec![a.clone(), b.clone(), c.clone()],
        &RouteFilter::default(),
        &[],
        Instant::now(),
    );
    assert_eq!(
        ranked.iter().map(|c| c.address).collect::<Vec<_>>(),
        vec![b.address, c.address, a.address]
    );

    let filter = RouteFilter {
        max_price_per_output_token: Some(U256::from(25)),
        min_context: Some(1024),
        ..RouteFilter::default()
    };
    let ranked = router.rank(vec![a, b.clone(), c], &filter, &[], Instant::now());
    assert_eq!(ranked.iter().map(|c| c.address).collect::<Vec<_>>(), vec![b.address]);
}

#[test]
fn a_cap_lowers_ceilings_above_it_and_keeps_those_below() {
    let own = RouteFilter {
        max_price_per_input_token: Some(U256::from(3)),
        max_price_per_output_token: Some(U256::from(30)),
        min_context: Some(512),
    };
    let capped = own.capped_at(U256::from(10));
    assert_eq!(capped.max_price_per_input_token, Some(U256::from(3)));
    assert_eq!(capped.max_price_per_output_token, Some(U256::from(10)));
    assert_eq!(capped.min_context, Some(512));
    let open = RouteFilter::default().capped_at(U256::from(10));
    assert_eq!(open.max_price_per_input_token, Some(U256::from(10)));
    assert_eq!(open.max_price_per_output_token, Some(U256::from(10)));
}

#[test]
fn a_requests_own_strategy_overrides_the_routers() {
    let mut router = Router::new(Strategy::Fastest);
    let (dear, cheap) = (candidate(30, 4096), candidate(10, 4096));
    let t0 = Instant::now();
    // The dear executor answered fast, the cheap one slowly.
    router.record_success(dear.address, Duration::from_millis(10), 100.0);
    router.record_success(cheap.address, Duration::from_millis(900), 10.0);
    let order = |ranked: Vec<Candidate>| ranked.iter().map(|c| c.address).collect::<Vec<_>>();
    let both = vec![dear.clone(), cheap.clone()];
    let filter = RouteFilter::default();
    assert_eq!(order(router.rank(both.clone(), &filter, &[], t0)), [dear.address, cheap.address]);
    assert_eq!(
        order(router.rank_by(Strategy::Cheapest, both, &filter, &[], t0)),
        [cheap.address, dear.address]
    );
    assert_eq!(router.strategy(), Strategy::Fastest, "the router's own is unchanged");
}

#[test]
fn a_filter_that_passes_no_offer_names_the_best_on_offer() {
    let (a, b) = (candidate(30, 4096), candidate(10, 512));
    let offers = [a, b];
    let too_cheap = RouteFilter {
        max_price_per_input_token: Some(U256::from(5)),
        max_price_per_output_token: Some(U256::from(5)),
        min_context: None,
    };
    match too_cheap.refusal("m", &offers) {
        Some(Error::OutsideLimits {
            offers: 2,
            lowest_input_price,
            lowest_output_price,
            largest_context: 4096,
            ..
        }) => {
            assert_eq!((lowest_input_price, lowest_output_price), (U256::from(10), U256::from(10)));
        }
        other => panic!("expected OutsideLimits, got {other:?}"),
    }
    let too_long = RouteFilter { min_context: Some(8192), ..RouteFilter::default() };
    let message = too_long.refusal("m", &offers).map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("at most 4096 tokens of context"), "{message}");
    assert!(message.contains("--min-context"), "{message}");
    let one_fits = RouteFilter { min_context: Some(1024), ..RouteFilter::default() };
    assert!(one_fits.refusal("m", &offers).is_none());
    assert!(too_long.refusal("m", &[]).is_none(), "no offer at all is NoExecutor's case");
}

#[test]
fn failures_cool_down_with_backoff_and_success_resets() {
    let mut router = Router::new(Strategy::Balanced);
    let a = candidate(10, 4096);
    let t0 = Instant::now();
    assert_eq!(router.record_failure(a.address, "unreachable", t0), BASE_COOLDOWN);
    assert_eq!(router.record_failure(a.address, "unreachable", t0), BASE_COOLDOWN * 2);
    assert!(router.rank(vec![a.clone()], &RouteFilter::default(), &[], t0).is_empty());
    let later = t0 + BASE_COOLDOWN * 2;
    assert_eq!(router.rank(vec![a.clone()], &RouteFilter::default(), &[], later).len(), 1);
    router.record_success(a.address, Duration::from_millis(100), 50.0);
    let stats = router.stats(&a.address).unwrap();
    assert_eq!((stats.consecutive_failures, stats.cooldown_until), (0, None));
    assert_eq!(stats.last_failure.as_deref(), Some("unreachable"));
}

#[test]
fn tried_executors_are_excluded_for_the_same_request() {
    let mut router = Router::new(Strategy::Balanced);
    let (a, b) = (candidate(10, 4096), candidate(10, 4096));
    let ranked = router.rank(
        vec![a.clone(), b.clone()],
        &RouteFilter::default(),
        &[a.address],
        Instant::now(),
    );
    assert_eq!(ranked.iter().map(|c| c.address).collect::<Vec<_>>(), vec![b.address]);
}

#[test]
fn fastest_prefers_the_lower_measured_latency() {
    let mut router = Router::new(Strategy::Fastest);
    let (slow, fast) = (candidate(1, 4096), candidate(100, 4096));
    router.record_success(slow.address, Duration::from_millis(500), 10.0);
    router.record_success(fast.address, Duration::from_millis(50), 10.0);
    for _ in 0..20 {
        let ranked = router.rank(
            vec![slow.clone(), fast.clone()],
            &RouteFilter::default(),
            &[],
            Instant::now(),
        );
        assert_eq!(ranked.first().map(|c| c.address), Some(fast.address));
    }
}

#[test]
fn balanced_avoids_an_unreliable_executor() {
    let mut router = Router::new(Strategy::Balanced);
    let (good, flaky) = (candidate(10, 4096), candidate(10, 4096));
    let t0 = Instant::now() - MAX_COOLDOWN * 2;
    for _ in 0..5 {
        router.record_success(good.address, Duration::from_millis(100), 10.0);
        router.record_failure(flaky.address, "timeout", t0);
    }
    router.record_success(flaky.address, Duration::from_millis(100), 10.0);
    let ranked =
        router.rank(vec![flaky, good.clone()], &RouteFilter::default(), &[], Instant::now());
    assert_eq!(ranked.first().map(|c| c.address), Some(good.address));
}

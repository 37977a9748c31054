use lloom_core::registry_query::{FindExecutors, RegistryRequest, RegistryResponse};
use lloom_core::{
    AnnouncementBody, DomainConfig, ExecutorLoad, ModelOffer, NodeKey, SignedAnnouncement, U256,
};

use super::*;

const NOW: u64 = 1_800_000_000;

fn offer(model: &str, price_in: u64, price_out: u64, context: u32) -> ModelOffer {
    ModelOffer {
        model: model.into(),
        context_length: context,
        price_per_input_token: U256::from(price_in),
        price_per_output_token: U256::from(price_out),
        weights_sha256: None,
        quantization: None,
        capabilities: vec![],
    }
}

fn announce(
    key: &NodeKey,
    sequence: u64,
    offers: Vec<ModelOffer>,
    withdrawn: bool,
) -> SignedAnnouncement {
    let body = AnnouncementBody { offers, load: ExecutorLoad::default(), listen_addrs: vec![] };
    SignedAnnouncement::sign(key, DomainConfig::default(), sequence, NOW, body, withdrawn).unwrap()
}

fn apply(
    reg: &mut Registry,
    key: &NodeKey,
    sequence: u64,
    offers: Vec<ModelOffer>,
) -> Result<Applied> {
    reg.apply(announce(key, sequence, offers, false), key.peer_id(), NOW)
}

fn three_executors() -> (Registry, Vec<NodeKey>) {
    let mut reg = Registry::new(RegistryConfig::default());
    let keys: Vec<NodeKey> = (0..3).map(|_| NodeKey::generate()).collect();
    apply(&mut reg, &keys[0], 1, vec![offer("smol", 1, 2, 2048), offer("big", 10, 20, 8192)])
        .unwrap();
    apply(&mut reg, &keys[1], 1, vec![offer("smol", 3, 4, 8192)]).unwrap();
    apply(&mut reg, &keys[2], 1, vec![offer("smol", 5, 6, 4096)]).unwrap();
    (reg, keys)
}

fn executors(resp: RegistryResponse) -> (Vec<lloom_core::Address>, Option<lloom_core::Address>) {
    match resp {
        RegistryResponse::Executors { executors, next_cursor } => {
            (executors.iter().map(|e| e.announcement.executor()).collect(), next_cursor)
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn lists_models_with_counts_and_price_ranges() {
    let (reg, _) = three_executors();
    let RegistryResponse::Models { models, next_cursor } = reg.list_models(None, 10) else {
        panic!("expected models");
    };
    assert_eq!(next_cursor, None);
    assert_eq!(models.len(), 2);
    assert_eq!(models[0].model, "big");
    assert_eq!(models[0].executors, 1);
    let smol = &models[1];
    assert_eq!(smol.executors, 3);
    assert_eq!(smol.price_per_input_token, (U256::from(1), U256::from(5)));
    assert_eq!(smol.price_per_output_token, (U256::from(2), U256::from(6)));
    assert_eq!(smol.max_context, 8192);
}

#[test]
fn model_pages_follow_the_cursor() {
    let (reg, _) = three_executors();
    let RegistryResponse::Models { models, next_cursor } = reg.list_models(None, 1) else {
        panic!()
    };
    assert_eq!((models[0].model.as_str(), next_cursor.as_deref()), ("big", Some("big")));
    let RegistryResponse::Models { models, next_cursor } = reg.list_models(next_cursor, 1) else {
        panic!()
    };
    assert_eq!((models[0].model.as_str(), next_cursor), ("smol", None));
}

#[test]
fn finds_executors_with_filters_and_pages() {
    let (reg, keys) = three_executors();
    let query = |f: FindExecutors| executors(reg.answer(&RegistryRequest::FindExecutors(f)));
    let base = FindExecutors { model: "smol".into(), limit: 10, ..Default::default() };
    assert_eq!(query(base.clone()).0.len(), 3);
    let cheap =
        query(FindExecutors { max_price_per_output_token: Some(U256::from(4)), ..base.clone() });
    assert_eq!(cheap.0.len(), 2);
    assert!(!cheap.0.contains(&keys[2].address()));
    let long = query(FindExecutors { min_context: Some(4096), ..base.clone() });
    assert_eq!(long.0.len(), 2);
    assert!(!long.0.contains(&keys[0].address()));
    let missing = FindExecutors { model: "missing".into(), cursor: None, ..base };
    assert!(query(missing).0.is_empty());

    let (first, cursor) = query(FindExecutors { limit: 2, ..base.clone() });
    assert_eq!(first.len(), 2);
    let (rest, end) = query(FindExecutors { limit: 2, cursor, ..base });
    assert_eq!((rest.len(), end), (1, None));
    assert!(!first.contains(&rest[0]));
}

#[test]
fn old_or_replayed_announcements_are_refused() {
    let (mut reg, keys) = three_executors();
    assert!(matches!(
        apply(&mut reg, &keys[0], 1, vec![offer("smol", 0, 0, 1)]),
        Err(Error::StaleAnnouncement { sequence: 1, held: 1, .. })
    ));
    assert_eq!(
        apply(&mut reg, &keys[0], 2, vec![offer("tiny", 1, 1, 1)]).unwrap(),
        Applied::Updated
    );
    // The update replaced the model index: "big" is gone with it.
    let RegistryResponse::Models { models, .. } = reg.list_models(None, 10) else { panic!() };
    let names: Vec<&str> = models.iter().map(|m| m.model.as_str()).collect();
    assert_eq!(names, ["smol", "tiny"]);
}

#[test]
fn withdrawal_removes_and_older_withdrawal_is_refused() {
    let (mut reg, keys) = three_executors();
    let stale = announce(&keys[1], 1, vec![], true);
    assert!(reg.apply(stale, keys[1].peer_id(), NOW).is_err());
    let bye = announce(&keys[1], 2, vec![], true);
    assert_eq!(reg.apply(bye, keys[1].peer_id(), NOW).unwrap(), Applied::Removed);
    assert_eq!(reg.len(), 2);
    let info = reg.answer(&RegistryRequest::Executor { executor: keys[1].address() });
    assert_eq!(info, RegistryResponse::Executor(None));
}

#[test]
fn silent_executors_expire_after_the_stale_window() {
    let (mut reg, keys) = three_executors();
    let window = RegistryConfig::DEFAULT_STALE_AFTER_SECS;
    assert!(reg.expire(NOW + window).is_empty());
    reg.apply(
        announce(&keys[0], 5, vec![offer("smol", 1, 1, 1)], false),
        keys[0].peer_id(),
        NOW + 20,
    )
    .unwrap();
    let gone = reg.expire(NOW + window + 1);
    assert_eq!(gone.len(), 2);
    assert_eq!(reg.len(), 1);
    assert!(!gone.contains(&keys[0].address()));
    let (left, _) = executors(reg.snapshot(None, 10));
    assert_eq!(left, vec![keys[0].address()]);
}

#[test]
fn capacity_is_enforced_for_new_executors_only() {
    let mut reg = Registry::new(RegistryConfig { max_executors: 1, ..Default::default() });
    let a = NodeKey::generate();
    let b = NodeKey::generate();
    apply(&mut reg, &a, 1, vec![offer("m", 1, 1, 1)]).unwrap();
    assert!(matches!(apply(&mut reg, &b, 1, vec![]), Err(Error::RegistryFull { limit: 1 })));
    assert_eq!(apply(&mut reg, &a, 2, vec![offer("m", 2, 2, 1)]).unwrap(), Applied::Updated);
}

#[test]
fn pages_are_capped() {
    let mut reg = Registry::new(RegistryConfig::default());
    for _ in 0..150 {
        apply(&mut reg, &NodeKey::generate(), 1, vec![offer("m", 1, 1, 1)]).unwrap();
    }
    let (page, cursor) = executors(reg.snapshot(None, u32::MAX));
    assert_eq!(page.len(), lloom_core::registry_query::MAX_PAGE as usize);
    assert!(cursor.is_some());
}

fn announce_at(key: &NodeKey, sequence: u64, addrs: &[&str]) -> SignedAnnouncement {
    let body = AnnouncementBody {
        offers: vec![offer("smol", 1, 2, 2048)],
        load: ExecutorLoad::default(),
        listen_addrs: addrs.iter().map(|a| (*a).to_owned()).collect(),
    };
    SignedAnnouncement::sign(key, DomainConfig::default(), sequence, NOW, body, false).unwrap()
}

#[test]
fn a_liveness_check_names_the_announced_addresses_of_the_listed_executor() {
    let mut reg = Registry::new(RegistryConfig::default());
    let key = NodeKey::generate();
    assert_eq!(reg.liveness_check(&key.peer_id()), None, "not listed");
    let addrs = ["/ip4/127.0.0.1/tcp/4001", "not an address"];
    reg.apply(announce_at(&key, 3, &addrs), key.peer_id(), NOW).unwrap();
    let check = reg.liveness_check(&key.peer_id()).unwrap();
    assert_eq!((check.executor, check.peer, check.sequence), (key.address(), key.peer_id(), 3));
    assert_eq!(check.addrs, vec!["/ip4/127.0.0.1/tcp/4001".parse::<Multiaddr>().unwrap()]);

    // No address to dial: nothing to check (the stale window applies).
    let silent = NodeKey::generate();
    reg.apply(announce_at(&silent, 1, &[]), silent.peer_id(), NOW).unwrap();
    assert_eq!(reg.liveness_check(&silent.peer_id()), None);
}

#[test]
fn an_unreachable_executor_is_dropped_and_its_last_announcement_refused() {
    let mut reg = Registry::new(RegistryConfig::default());
    let key = NodeKey::generate();
    let addrs = ["/ip4/127.0.0.1/tcp/4001"];
    reg.apply(announce_at(&key, 3, &addrs), key.peer_id(), NOW).unwrap();
    let check = reg.liveness_check(&key.peer_id()).unwrap();

    // A newer announcement arrived while the dial was under way: the outcome is moot.
    reg.apply(announce_at(&key, 4, &addrs), key.peer_id(), NOW).unwrap();
    assert!(!reg.drop_unreachable(&check));
    assert_eq!(reg.len(), 1);

    let check = reg.liveness_check(&key.peer_id()).unwrap();
    assert!(reg.drop_unreachable(&check));
    assert!(reg.is_empty());
    assert_eq!(reg.liveness_check(&key.peer_id()), None);
    assert!(!reg.drop_unreachable(&check), "already gone");
    // A replay of its last announcement does not list it again; a newer one does.
    let replay = reg.apply(announce_at(&key, 4, &addrs), key.peer_id(), NOW);
    assert!(matches!(replay, Err(Error::StaleAnnouncement { held: 4, .. })), "{replay:?}");
    let back = reg.apply(announce_at(&key, 5, &["/ip4/127.0.0.1/tcp/4002"]), key.peer_id(), NOW);
    assert_eq!(back.unwrap(), Applied::Inserted);
    assert_eq!(reg.liveness_check(&key.peer_id()).unwrap().sequence, 5);
}

//! Discovery through the Kademlia DHT, without asking any validator's registry.
//!
//! An executor *provides* one key per model it serves ([`model_key`]) and *puts* its latest
//! signed announcement under its own key ([`announcement_key`]). A client looks up the
//! providers of a model, then fetches and verifies each provider's announcement (offers,
//! prices, load and listen addresses, all signed by the executor's key). Nodes that store
//! records (Kademlia servers: validators) accept an announcement record only when it is a
//! valid announcement signed by the peer its key names, within the size limit; provider
//! records are bounded per key by the store.

use std::collections::{HashMap, HashSet};

use libp2p::PeerId;
use libp2p::kad::{self, GetProvidersOk, GetRecordOk, QueryId, QueryResult, Record, RecordKey};
use tokio::sync::oneshot;

use crate::announce::{AnnouncementLimits, SignedAnnouncement, verify_announcement};
use crate::error::{Error, Result};
use crate::verify::{VerifyPolicy, unix_now};

/// Most providers one lookup collects.
pub const MAX_PROVIDERS: usize = 64;
/// Most announcement records one lookup collects (copies from different peers).
const MAX_RECORDS: usize = 8;

/// The DHT key under which executors serving `model` provide.
pub fn model_key(model: &str) -> RecordKey {
    RecordKey::new(&alloy_primitives::keccak256(format!("/lloom/model/1/{model}").as_bytes()))
}

/// The DHT key of `executor`'s announcement record.
pub fn announcement_key(executor: &PeerId) -> RecordKey {
    let mut key = b"/lloom/announcement/1/".to_vec();
    key.extend_from_slice(&executor.to_bytes());
    RecordKey::new(&key)
}

/// The peer an announcement key names, if it is one.
fn executor_of(key: &RecordKey) -> Option<PeerId> {
    let bytes = key.as_ref().strip_prefix(b"/lloom/announcement/1/".as_slice())?;
    PeerId::from_bytes(bytes).ok()
}

/// Checks a record before this node stores it for others: a valid announcement, signed by the
/// peer its key names.
pub(crate) fn check_record(
    record: &Record,
    policy: &VerifyPolicy,
    limits: &AnnouncementLimits,
) -> Result<()> {
    let executor = executor_of(&record.key)
        .ok_or_else(|| Error::InvalidMessage("not a Lloom announcement key".into()))?;
    let announcement = SignedAnnouncement::decode(&record.value, limits)?;
    verify_announcement(&announcement, Some(&executor), policy, limits, unix_now())
}

/// Whether `record` would roll back the announcement this node stores under the same key
/// (`stored`): a lower sequence than it. Anyone can replay an executor's old signed
/// announcement; stored over its withdrawal, it would bring the executor back.
pub(crate) fn rolls_back(
    record: &Record,
    stored: Option<&Record>,
    limits: &AnnouncementLimits,
) -> bool {
    let sequence = |r: &Record| {
        SignedAnnouncement::decode(&r.value, limits).ok().map(|a| a.commitment.sequence)
    };
    match (stored.and_then(sequence), sequence(record)) {
        (Some(held), Some(offered)) => offered < held,
        _ => false,
    }
}

/// Providers found so far, and where the answer goes.
type ProvidersLookup = (HashSet<PeerId>, oneshot::Sender<Result<Vec<PeerId>>>);
/// Record values found so far, and where the answer goes.
type RecordsLookup = (Vec<Vec<u8>>, oneshot::Sender<Result<Vec<Vec<u8>>>>);

/// Outbound DHT queries waiting for their results.
#[derive(Debug, Default)]
pub(crate) struct DhtQueries {
    providers: HashMap<QueryId, ProvidersLookup>,
    records: HashMap<QueryId, RecordsLookup>,
    puts: HashMap<QueryId, oneshot::Sender<Result<()>>>,
}

impl DhtQueries {
    pub(crate) fn await_providers(
        &mut self,
        id: QueryId,
        reply: oneshot::Sender<Result<Vec<PeerId>>>,
    ) {
        self.providers.insert(id, (HashSet::new(), reply));
    }

    pub(crate) fn await_records(
        &mut self,
        id: QueryId,
        reply: oneshot::Sender<Result<Vec<Vec<u8>>>>,
    ) {
        self.records.insert(id, (Vec::new(), reply));
    }

    pub(crate) fn await_put(&mut self, id: QueryId, reply: oneshot::Sender<Result<()>>) {
        self.puts.insert(id, reply);
    }

    /// Takes one step of an outbound query; returns whether the query should be finished
    /// early (enough results).
    pub(crate) fn on_progress(&mut self, id: QueryId, result: QueryResult, last: bool) -> bool {
        match result {
            QueryResult::GetProviders(result) => {
                let Some((found, _)) = self.providers.get_mut(&id) else { return false };
                let failed = match result {
                    Ok(GetProvidersOk::FoundProviders { providers, .. }) => {
                        found.extend(providers.into_iter().take(MAX_PROVIDERS));
                        None
                    }
                    Ok(GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => None,
                    Err(e) => Some(e.to_string()),
                };
                let enough = found.len() >= MAX_PROVIDERS;
                if (last || enough || failed.is_some())
                    && let Some((found, reply)) = self.providers.remove(&id)
                {
                    let answer = match failed {
                        Some(e) if found.is_empty() => Err(Error::Dht(e)),
                        _ => Ok(found.into_iter().take(MAX_PROVIDERS).collect()),
                    };
                    let _ = reply.send(answer);
                }
                enough && !last
            }
            QueryResult::GetRecord(result) => {
                let Some((found, _)) = self.records.get_mut(&id) else { return false };
                let failed = match result {
                    Ok(GetRecordOk::FoundRecord(peer_record)) => {
                        found.push(peer_record.record.value);
                        None
                    }
                    Ok(GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => None,
                    Err(e) => Some(e.to_string()),
                };
                let enough = found.len() >= MAX_RECORDS;
                if (last || enough || failed.is_some())
                    && let Some((found, reply)) = self.records.remove(&id)
                {
                    let answer = match failed {
                        Some(e) if found.is_empty() => Err(Error::Dht(e)),
                        _ => Ok(found),
                    };
                    let _ = reply.send(answer);
                }
                enough && !last
            }
            QueryResult::PutRecord(result) => {
                if let Some(reply) = self.puts.remove(&id) {
                    let _ = reply.send(result.map(|_| ()).map_err(|e| Error::Dht(e.to_string())));
                }
                false
            }
            QueryResult::StartProviding(result) => {
                if let Some(reply) = self.puts.remove(&id) {
                    let _ = reply.send(result.map(|_| ()).map_err(|e| Error::Dht(e.to_string())));
                }
                false
            }
            _ => false,
        }
    }
}

/// Settings of the DHT store: bounded, and records that expire unless republished.
pub(crate) fn store_config() -> kad::store::MemoryStoreConfig {
    kad::store::MemoryStoreConfig {
        max_records: 100_000,
        max_value_bytes: 64 * 1024,
        max_providers_per_key: 100,
        max_provided_keys: 1_024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;

    #[test]
    fn an_older_announcement_never_replaces_a_newer_one() {
        use crate::announce::AnnouncementBody;
        let key = NodeKey::generate();
        let record = |sequence: u64, withdrawn: bool| {
            let body = AnnouncementBody {
                offers: vec![],
                load: crate::ExecutorLoad::default(),
                listen_addrs: vec![],
            };
            let domain = crate::DomainConfig::default();
            let ann = SignedAnnouncement::sign(&key, domain, sequence, unix_now(), body, withdrawn)
                .unwrap();
            Record::new(announcement_key(&key.peer_id()), ann.encode())
        };
        let limits = AnnouncementLimits::default();
        let (old, withdrawal) = (record(4, false), record(5, true));
        assert!(rolls_back(&old, Some(&withdrawal), &limits));
        assert!(!rolls_back(&withdrawal, Some(&old), &limits));
        assert!(!rolls_back(&withdrawal, Some(&withdrawal), &limits), "a republication");
        assert!(!rolls_back(&old, None, &limits));
    }

    #[test]
    fn keys_are_distinct_per_model_and_name_their_executor() {
        assert_ne!(model_key("a"), model_key("b"));
        assert_eq!(model_key("a"), model_key("a"));
        let peer = NodeKey::generate().peer_id();
        assert_eq!(executor_of(&announcement_key(&peer)), Some(peer));
        assert_eq!(executor_of(&model_key("a")), None);
    }
}

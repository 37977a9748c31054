//! The client's view of the network: verified executor announcements merged from every
//! validator it asked, and the model summaries computed from them.
//!
//! Validators are not trusted: every announcement is re-verified here, and each executor's
//! newest announcement (highest sequence) wins, so several validators merge without double
//! counting.

use std::collections::BTreeMap;

use lloom_core::network::{Multiaddr, NetworkHandle};
use lloom_core::registry_query::{ExecutorInfo, MAX_PAGE, RegistryRequest, RegistryResponse};
use lloom_core::{
    Address, AnnouncementLimits, ExecutorLoad, ModelOffer, PeerId, SignedAnnouncement, U256,
    VerifyPolicy, unix_now, verify_announcement,
};
use serde::Serialize;

use crate::error::{Error, Result};

/// Most snapshot pages read from one validator.
const MAX_PAGES: usize = 1_000;
/// Most executors the directory holds.
const MAX_EXECUTORS: usize = 100_000;
/// Most executors found through the DHT that a client carries over its refreshes.
const MAX_DHT_FINDS: usize = 1_024;

/// One model across the executors that serve it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelRow {
    /// Model name.
    pub model: String,
    /// Number of executors serving it.
    pub executors: usize,
    /// Cheapest and dearest price per prompt token, in wei.
    pub input_price: (U256, U256),
    /// Cheapest and dearest price per generated token, in wei.
    pub output_price: (U256, U256),
    /// Largest context length offered.
    pub max_context: u32,
}

/// An executor that serves a model, as its verified announcement describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its peer id.
    pub peer: PeerId,
    /// Its Ethereum address (the signer of its responses).
    pub address: Address,
    /// Its offer for the model.
    pub offer: ModelOffer,
    /// Its announced load.
    pub load: ExecutorLoad,
    /// Where it listens.
    pub addrs: Vec<Multiaddr>,
}

/// What one DHT lookup of a model found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhtLookup {
    /// Executors added to the directory.
    pub added: usize,
    /// Executors whose newest announcement in the DHT is their withdrawal.
    pub withdrawn: Vec<Address>,
}

/// Verified announcements by executor.
#[derive(Debug, Default)]
pub struct Directory {
    executors: BTreeMap<Address, (PeerId, SignedAnnouncement)>,
    /// Each executor's announced listen addresses, parsed once when its announcement is kept.
    listen_addrs: BTreeMap<Address, Vec<Multiaddr>>,
    rejected: usize,
}

impl Directory {
    /// Adds one registry entry after verifying it; returns whether it was kept.
    ///
    /// `max_age_secs` is how old an announcement may be (a validator's stale window).
    pub fn ingest(&mut self, info: ExecutorInfo, policy: &VerifyPolicy, max_age_secs: u64) -> bool {
        let Ok(peer) = info.peer_id.parse::<PeerId>() else {
            self.rejected += 1;
            return false;
        };
        let ann = info.announcement;
        let policy =
            VerifyPolicy { clock_skew_secs: policy.clock_skew_secs.max(max_age_secs), ..*policy };
        let limits = AnnouncementLimits::default();
        if verify_announcement(&ann, Some(&peer), &policy, &limits, unix_now()).is_err()
            || ann.commitment.withdrawn
        {
            self.rejected += 1;
            return false;
        }
        let newer = self
            .executors
            .get(&ann.executor())
            .is_none_or(|(_, held)| held.commitment.sequence < ann.commitment.sequence);
        let room =
            self.executors.len() < MAX_EXECUTORS || self.executors.contains_key(&ann.executor());
        if !(newer && room) {
            return false;
        }
        let addrs = ann.body.listen_addrs.iter().filter_map(|a| a.parse().ok()).collect();
        self.listen_addrs.insert(ann.executor(), addrs);
        self.executors.insert(ann.executor(), (peer, ann));
        true
    }

    /// Pages through `validator`'s snapshot and ingests every entry.
    pub async fn fetch_from(
        &mut self,
        network: &NetworkHandle,
        validator: PeerId,
        policy: &VerifyPolicy,
        max_age_secs: u64,
    ) -> Result<()> {
        let mut cursor = None;
        for _ in 0..MAX_PAGES {
            let request = RegistryRequest::Snapshot { cursor, limit: MAX_PAGE };
            match network.query_registry(validator, request).await? {
                RegistryResponse::Executors { executors, next_cursor } => {
                    for info in executors {
                        self.ingest(info, policy, max_age_secs);
                    }
                    cursor = next_cursor;
                }
                RegistryResponse::Refused { reason } => {
                    return Err(Error::ValidatorRefused { validator, reason });
                }
                _ => {
                    return Err(Error::ValidatorRefused {
                        validator,
                        reason: "unexpected answer".into(),
                    });
                }
            }
            if cursor.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Looks up the providers of `model` in the DHT and ingests each one's newest verified
    /// announcement (records come in copies from several peers: an older copy never hides a
    /// newer one, and a withdrawal hides the offers before it).
    pub async fn fetch_from_dht(
        &mut self,
        network: &NetworkHandle,
        model: &str,
        policy: &VerifyPolicy,
        max_age_secs: u64,
    ) -> Result<DhtLookup> {
        let providers = network.find_model_providers(model).await?;
        let limits = AnnouncementLimits::default();
        let lookups = providers
            .into_iter()
            .map(|peer| async move { (peer, network.announcement_records(peer).await) });
        let aged =
            VerifyPolicy { clock_skew_secs: policy.clock_skew_secs.max(max_age_secs), ..*policy };
        let mut lookup = DhtLookup::default();
        for (peer, records) in futures::future::join_all(lookups).await {
            let mut newest: Option<SignedAnnouncement> = None;
            for bytes in records.unwrap_or_default() {
                let verified = SignedAnnouncement::decode(&bytes, &limits).ok().filter(|a| {
                    verify_announcement(a, Some(&peer), &aged, &limits, unix_now()).is_ok()
                });
                let Some(announcement) = verified else {
                    self.rejected += 1;
                    continue;
                };
                if newest
                    .as_ref()
                    .is_none_or(|n| n.commitment.sequence < announcement.commitment.sequence)
                {
                    newest = Some(announcement);
                }
            }
            let Some(announcement) = newest else { continue };
            if announcement.commitment.withdrawn {
                lookup.withdrawn.push(announcement.executor());
                continue;
            }
            let info =
                ExecutorInfo { announcement, peer_id: peer.to_string(), last_seen: unix_now() };
            lookup.added += usize::from(self.ingest(info, policy, max_age_secs));
        }
        Ok(lookup)
    }

    /// Each executor's peer id and verified announcement.
    pub fn executors(&self) -> impl Iterator<Item = (&PeerId, &SignedAnnouncement)> {
        self.executors.values().map(|(peer, announcement)| (peer, announcement))
    }

    /// The verified announcements, by executor address.
    pub fn into_executors(self) -> BTreeMap<Address, (PeerId, SignedAnnouncement)> {
        self.executors
    }

    /// Number of executors known.
    pub fn len(&self) -> usize {
        self.executors.len()
    }

    /// Whether no executor is known.
    pub fn is_empty(&self) -> bool {
        self.executors.is_empty()
    }

    /// Entries refused during ingestion (bad signature, wrong peer, withdrawn, malformed).
    pub fn rejected(&self) -> usize {
        self.rejected
    }

    /// Every executor that serves `model`, with its offer, load and addresses.
    pub fn candidates(&self, model: &str) -> Vec<Candidate> {
        self.offers(Some(model))
    }

    /// Every offer of `model` (of every model with `None`), one per executor and model, by
    /// model and then executor.
    pub fn offers(&self, model: Option<&str>) -> Vec<Candidate> {
        let mut offers: Vec<Candidate> = self
            .executors
            .iter()
            .flat_map(|(address, (peer, ann))| {
                let wanted = move |o: &&ModelOffer| model.is_none_or(|m| o.model == m);
                ann.body.offers.iter().filter(wanted).map(move |offer| Candidate {
                    peer: *peer,
                    address: *address,
                    offer: offer.clone(),
                    load: ann.body.load,
                    addrs: self.listen_addrs.get(address).cloned().unwrap_or_default(),
                })
            })
            .collect();
        if model.is_none() {
            // Executors come in address order; a stable sort by model keeps it within each.
            offers.sort_by(|a, b| a.offer.model.cmp(&b.offer.model));
        }
        offers
    }

    /// Every model on offer, by name.
    pub fn models(&self) -> Vec<ModelRow> {
        let mut rows: BTreeMap<&str, ModelRow> = BTreeMap::new();
        for (_, ann) in self.executors.values() {
            for offer in &ann.body.offers {
                let row = rows.entry(&offer.model).or_insert_with(|| ModelRow {
                    model: offer.model.clone(),
                    executors: 0,
                    input_price: (U256::MAX, U256::ZERO),
                    output_price: (U256::MAX, U256::ZERO),
                    max_context: 0,
                });
                row.executors += 1;
                let (pi, po) = (offer.price_per_input_token, offer.price_per_output_token);
                row.input_price = (row.input_price.0.min(pi), row.input_price.1.max(pi));
                row.output_price = (row.output_price.0.min(po), row.output_price.1.max(po));
                row.max_context = row.max_context.max(offer.context_length);
            }
        }
        rows.into_values().collect()
    }
}

/// Executors found through the DHT, which no validator may list (a validator that has not
/// heard them yet, or one that is full). A refresh replaces the directory with what the
/// validators list, so these are carried into each fresh one until a validator lists them
/// too or their announcement ages out; otherwise every refresh would drop them and the next
/// chat for their model would pay for another DHT lookup.
#[derive(Debug, Default)]
pub struct DhtFinds {
    executors: BTreeMap<Address, (PeerId, SignedAnnouncement)>,
}

impl DhtFinds {
    /// Remembers a verified find (the newest announcement of each executor, at most
    /// 1,024 executors).
    pub fn remember(&mut self, peer: PeerId, announcement: SignedAnnouncement) {
        let executor = announcement.executor();
        let newer = self
            .executors
            .get(&executor)
            .is_none_or(|(_, held)| held.commitment.sequence < announcement.commitment.sequence);
        let room = self.executors.len() < MAX_DHT_FINDS || self.executors.contains_key(&executor);
        if newer && room {
            self.executors.insert(executor, (peer, announcement));
        }
    }

    /// Forgets `executor` (its withdrawal was found, or a dial of it failed; a later lookup
    /// finds it again if it is back).
    pub fn forget(&mut self, executor: &Address) {
        self.executors.remove(executor);
    }

    /// Adds the finds to `directory`, verified again. A find the directory already holds as
    /// new (a validator lists it), or refuses (aged out, withdrawn), is forgotten.
    pub fn carry_into(&mut self, directory: &mut Directory, policy: &VerifyPolicy, max_age: u64) {
        self.executors.retain(|_, (peer, announcement)| {
            let info = ExecutorInfo {
                announcement: announcement.clone(),
                peer_id: peer.to_string(),
                last_seen: unix_now(),
            };
            directory.ingest(info, policy, max_age)
        });
    }

    /// Number of finds carried.
    pub fn len(&self) -> usize {
        self.executors.len()
    }

    /// Whether none is carried.
    pub fn is_empty(&self) -> bool {
        self.executors.is_empty()
    }
}

/// Renders model rows as an aligned table.
pub fn render_table(rows: &[ModelRow]) -> String {
    if rows.is_empty() {
        return "no models on offer".to_owned();
    }
    let range =
        |(lo, hi): (U256, U256)| if lo == hi { lo.to_string() } else { format!("{lo}–{hi}") };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.executors.to_string(),
                range(r.input_price),
                range(r.output_price),
                r.max_context.to_string(),
            ]
        })
        .collect();
    let header = ["MODEL", "EXECUTORS", "INPUT WEI/TOKEN", "OUTPUT WEI/TOKEN", "MAX CONTEXT"];
    crate::table::aligned(&header, &cells)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use lloom_core::{AnnouncementBody, DomainConfig, NodeKey};

    use super::*;

    fn info(key: &NodeKey, sequence: u64, addrs: &[&str]) -> ExecutorInfo {
        let body = AnnouncementBody {
            offers: vec![ModelOffer {
                model: "m".into(),
                context_length: 2048,
                price_per_input_token: U256::from(1),
                price_per_output_token: U256::from(1),
                weights_sha256: None,
                quantization: None,
                capabilities: vec![],
            }],
            load: ExecutorLoad::default(),
            listen_addrs: addrs.iter().map(|a| (*a).to_owned()).collect(),
        };
        let announcement = SignedAnnouncement::sign(
            key,
            DomainConfig::default(),
            sequence,
            unix_now(),
            body,
            false,
        )
        .unwrap();
        ExecutorInfo { announcement, peer_id: key.peer_id().to_string(), last_seen: unix_now() }
    }

    #[test]
    fn candidates_carry_the_parsed_addresses_of_the_latest_announcement() {
        let key = NodeKey::generate();
        let mut directory = Directory::default();
        let policy = VerifyPolicy::default();
        let first = ["/ip4/127.0.0.1/tcp/4001", "not an address"];
        assert!(directory.ingest(info(&key, 1, &first), &policy, 60));
        let addrs: Vec<String> =
            directory.candidates("m")[0].addrs.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["/ip4/127.0.0.1/tcp/4001"], "the unparsable one is left out");

        let moved = ["/ip4/127.0.0.1/tcp/4002", "/ip4/127.0.0.1/udp/4002/quic-v1"];
        assert!(directory.ingest(info(&key, 2, &moved), &policy, 60));
        let addrs: Vec<String> =
            directory.candidates("m")[0].addrs.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, moved);
        assert!(!directory.ingest(info(&key, 1, &first), &policy, 60), "an older one is ignored");
        assert_eq!(directory.candidates("m")[0].addrs.len(), 2);
        assert!(directory.candidates("other").is_empty());
    }

    #[test]
    fn dht_finds_are_carried_until_a_validator_lists_them_or_they_age_out() {
        let policy = VerifyPolicy::default();
        let (listed, unlisted, stale) =
            (NodeKey::generate(), NodeKey::generate(), NodeKey::generate());
        let mut finds = DhtFinds::default();
        for key in [&listed, &unlisted] {
            finds.remember(key.peer_id(), info(key, 1, &[]).announcement);
        }
        let old = SignedAnnouncement::sign(
            &stale,
            DomainConfig::default(),
            1,
            unix_now() - 3_600,
            info(&stale, 1, &[]).announcement.body,
            false,
        )
        .unwrap();
        finds.remember(stale.peer_id(), old);
        assert_eq!(finds.len(), 3);

        // A validator lists `listed` (the same announcement); nobody lists the other two.
        let mut fresh = Directory::default();
        assert!(fresh.ingest(info(&listed, 1, &[]), &policy, 60));
        finds.carry_into(&mut fresh, &policy, 60);
        assert_eq!(fresh.len(), 2, "the unlisted find is carried, the stale one is not");
        assert_eq!(finds.len(), 1, "only the unlisted one is still carried");
        assert_eq!(fresh.rejected(), 1, "the stale one was refused");

        let mut next = Directory::default();
        finds.carry_into(&mut next, &policy, 60);
        assert_eq!(next.len(), 1, "and again at the next refresh");

        // An older announcement than the one held does not replace it.
        finds.remember(
            unlisted.peer_id(),
            info(&unlisted, 2, &["/ip4/127.0.0.1/tcp/9"]).announcement,
        );
        finds.remember(unlisted.peer_id(), info(&unlisted, 1, &[]).announcement);
        let mut last = Directory::default();
        finds.carry_into(&mut last, &policy, 60);
        assert_eq!(last.candidates("m")[0].addrs.len(), 1);
    }
}

//! Signed model announcements: what an executor offers, at what price, with how much room.
//!
//! Executors publish a [`SignedAnnouncement`] on gossip at start, on change, on every heartbeat
//! and (withdrawn) at shutdown. Validators verify it with [`verify_announcement`] before it
//! touches the registry.

use alloy_primitives::{Address, B256, U256, keccak256};
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::eip712::{Announcement, DomainConfig, signing_hash};
use crate::error::{Error, Result};
use crate::identity::NodeKey;
use crate::signature::Signature;
use crate::verify::{VerifyPolicy, check_origin, check_timestamp};

/// Hard limits on an announcement; a larger one is refused before it is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnouncementLimits {
    /// Largest encoded announcement, in bytes (also the gossip message size cap).
    pub max_bytes: usize,
    /// Most model offers in one announcement.
    pub max_offers: usize,
    /// Longest model name, quantization or capability string, in bytes.
    pub max_name_bytes: usize,
    /// Most capabilities per offer.
    pub max_capabilities: usize,
    /// Most listen addresses.
    pub max_addrs: usize,
    /// Longest listen address, in bytes.
    pub max_addr_bytes: usize,
}

impl Default for AnnouncementLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
            max_offers: 64,
            max_name_bytes: 256,
            max_capabilities: 16,
            max_addrs: 16,
            max_addr_bytes: 256,
        }
    }
}

/// One model an executor serves and its price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelOffer {
    /// Model name clients ask for.
    pub model: String,
    /// Largest context (prompt + output tokens) served.
    pub context_length: u32,
    /// Wei per prompt token.
    pub price_per_input_token: U256,
    /// Wei per generated token.
    pub price_per_output_token: U256,
    /// sha256 of the GGUF weights file, when the model is a local file.
    pub weights_sha256: Option<B256>,
    /// Quantization type (e.g. `Q4_1`), when known.
    pub quantization: Option<String>,
    /// Free-form capability tags (e.g. `chat`, `stream`, [`CAPABILITY_JSON`]).
    pub capabilities: Vec<String>,
}

/// The capability of an offer whose executor holds answers to a requested JSON format itself
/// (the embedded engine's grammars). Clients prefer such offers for JSON requests.
pub const CAPABILITY_JSON: &str = "json";

impl ModelOffer {
    /// Whether the offer announces `capability`.
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}

/// How busy an executor is right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorLoad {
    /// Requests waiting in the queue.
    pub queue_depth: u32,
    /// Sequences that could start immediately.
    pub free_slots: u32,
    /// Most concurrent sequences.
    pub max_concurrency: u32,
    /// Free accelerator (or host) memory, in bytes.
    pub free_memory_bytes: u64,
}

/// The announcement body; `offersHash = keccak256(postcard(body))`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncementBody {
    /// Models served.
    pub offers: Vec<ModelOffer>,
    /// Current load.
    pub load: ExecutorLoad,
    /// Multiaddrs the executor listens on (as strings, `/p2p/<id>` included or not).
    pub listen_addrs: Vec<String>,
}

impl AnnouncementBody {
    /// `offersHash` of this body.
    pub fn hash(&self) -> B256 {
        keccak256(postcard::to_stdvec(self).unwrap_or_default())
    }

    /// Checks the size limits.
    pub fn validate(&self, limits: &AnnouncementLimits) -> Result<()> {
        bound("offers", self.offers.len(), limits.max_offers)?;
        for offer in &self.offers {
            if offer.model.is_empty() {
                return Err(Error::InvalidMessage("empty model name in announcement".into()));
            }
            bound("model name", offer.model.len(), limits.max_name_bytes)?;
            if let Some(q) = &offer.quantization {
                bound("quantization", q.len(), limits.max_name_bytes)?;
            }
            bound("capabilities", offer.capabilities.len(), limits.max_capabilities)?;
            for cap in &offer.capabilities {
                bound("capability", cap.len(), limits.max_name_bytes)?;
            }
        }
        bound("listen addresses", self.listen_addrs.len(), limits.max_addrs)?;
        for addr in &self.listen_addrs {
            bound("listen address", addr.len(), limits.max_addr_bytes)?;
        }
        Ok(())
    }
}

fn bound(what: &'static str, size: usize, limit: usize) -> Result<()> {
    if size > limit {
        return Err(Error::TooLarge { what, size: size as u64, limit: limit as u64 });
    }
    Ok(())
}

/// An executor's signed announcement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAnnouncement {
    /// The domain the executor signed for.
    pub domain: DomainConfig,
    /// The signed commitment.
    pub commitment: Announcement,
    /// The offers, load and addresses (`commitment.offersHash == body.hash()`).
    pub body: AnnouncementBody,
    /// The executor's signature over the commitment's EIP-712 digest.
    pub signature: Signature,
}

/// Wire version byte of an encoded announcement.
const ANNOUNCEMENT_VERSION: u8 = 1;

impl SignedAnnouncement {
    /// Builds and signs an announcement of `body` (or its withdrawal) by `key`.
    pub fn sign(
        key: &NodeKey,
        domain: DomainConfig,
        sequence: u64,
        timestamp: u64,
        body: AnnouncementBody,
        withdrawn: bool,
    ) -> Result<Self> {
        let commitment = Announcement {
            executor: key.address(),
            sequence,
            timestamp,
            offersHash: body.hash(),
            withdrawn,
        };
        let signature = key.sign_digest(&signing_hash(&commitment, &domain))?;
        Ok(Self { domain, commitment, body, signature })
    }

    /// The executor that signed it.
    pub fn executor(&self) -> Address {
        self.commitment.executor
    }

    /// Encodes for gossip: a version byte and the postcard body.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, vec![ANNOUNCEMENT_VERSION]).unwrap_or_default()
    }

    /// Decodes a gossip message, refusing oversized input before decoding it.
    pub fn decode(bytes: &[u8], limits: &AnnouncementLimits) -> Result<Self> {
        bound("announcement", bytes.len(), limits.max_bytes)?;
        let (&version, body) =
            bytes.split_first().ok_or(Error::Truncated { expected: 1, got: 0 })?;
        if version != ANNOUNCEMENT_VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        let (ann, rest): (Self, _) = postcard::take_from_bytes(body)?;
        if !rest.is_empty() {
            return Err(Error::InvalidMessage("trailing bytes after announcement".into()));
        }
        ann.body.validate(limits)?;
        Ok(ann)
    }
}

/// Verifies an announcement: sizes, domain, signature by the executor, executor == the peer it
/// came from (the gossip source), body hash and timestamp within the clock-skew window.
pub fn verify_announcement(
    ann: &SignedAnnouncement,
    source: Option<&PeerId>,
    policy: &VerifyPolicy,
    limits: &AnnouncementLimits,
    now: u64,
) -> Result<()> {
    ann.body.validate(limits)?;
    let digest = signing_hash(&ann.commitment, &ann.domain);
    check_origin(&policy.domain, &ann.domain, &digest, &ann.signature, ann.executor(), source)?;
    let expected = ann.body.hash();
    if ann.commitment.offersHash != expected {
        return Err(Error::OffersHashMismatch { expected, got: ann.commitment.offersHash });
    }
    check_timestamp(ann.commitment.timestamp, now, policy.clock_skew_secs)
}

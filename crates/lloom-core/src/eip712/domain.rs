//! The EIP-712 domain every Lloom signature is bound to.

use std::cell::Cell;
use std::sync::LazyLock;

use alloy_primitives::{Address, B256, keccak256};
use alloy_sol_types::{Eip712Domain, eip712_domain};
use serde::{Deserialize, Serialize};

/// Domain name, fixed by the protocol.
pub const DOMAIN_NAME: &str = "Lloom";
/// Domain version, fixed by the protocol (bumped only with an incompatible change of the types).
pub const DOMAIN_VERSION: &str = "1";
/// Chain id of the default domain: anvil's local chain id.
pub const DEFAULT_CHAIN_ID: u64 = 31_337;
/// Verifying contract of the default domain: the zero address, meaning "no contract deployed".
pub const DEFAULT_VERIFYING_CONTRACT: Address = Address::ZERO;

/// The configurable part of the domain: which chain and which accounting contract.
///
/// Every signed wire message carries the `DomainConfig` its signer used, so a receiver can reject
/// a signature made for another chain or contract with a precise error instead of a confusing
/// signer mismatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DomainConfig {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// Address of the accounting contract that settles receipts.
    pub verifying_contract: Address,
}

impl Default for DomainConfig {
    /// The documented default domain: chain 31337 (anvil) and no contract (zero address).
    fn default() -> Self {
        Self { chain_id: DEFAULT_CHAIN_ID, verifying_contract: DEFAULT_VERIFYING_CONTRACT }
    }
}

impl DomainConfig {
    /// A domain for `chain_id` and the contract at `verifying_contract`.
    pub fn new(chain_id: u64, verifying_contract: Address) -> Self {
        Self { chain_id, verifying_contract }
    }

    /// The full EIP-712 domain (`name = "Lloom"`, `version = "1"`, chain id, contract).
    pub fn eip712(&self) -> Eip712Domain {
        eip712_domain! {
            name: DOMAIN_NAME,
            version: DOMAIN_VERSION,
            chain_id: self.chain_id,
            verifying_contract: self.verifying_contract,
        }
    }
}

/// `typeHash ‖ keccak256(name) ‖ keccak256(version)`: the fixed head of the encoded domain.
static FIXED_DOMAIN_HEAD: LazyLock<[u8; 96]> = LazyLock::new(|| {
    let mut head = [0u8; 96];
    let type_hash = keccak256(
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
    );
    head[..32].copy_from_slice(type_hash.as_slice());
    head[32..64].copy_from_slice(keccak256(DOMAIN_NAME).as_slice());
    head[64..].copy_from_slice(keccak256(DOMAIN_VERSION).as_slice());
    head
});

thread_local! {
    /// The last domain this thread hashed and its separator: a node signs and checks under
    /// one domain, so every digest after the first skips the separator's two permutations.
    static LAST_SEPARATOR: Cell<Option<(DomainConfig, B256)>> = const { Cell::new(None) };
}

impl DomainConfig {
    /// The EIP-712 domain separator (`hashStruct` of [`DomainConfig::eip712`]). The name and
    /// version parts never change and are hashed once per process, and each thread keeps the
    /// separator of the last domain it saw.
    pub fn separator(&self) -> B256 {
        LAST_SEPARATOR.with(|last| match last.get() {
            Some((domain, separator)) if domain == *self => separator,
            _ => {
                let separator = self.hash_separator();
                last.set(Some((*self, separator)));
                separator
            }
        })
    }

    /// The separator, hashed: one Keccak over the fixed head and this domain's fields.
    fn hash_separator(&self) -> B256 {
        let mut encoded = [0u8; 160];
        encoded[..96].copy_from_slice(FIXED_DOMAIN_HEAD.as_slice());
        encoded[120..128].copy_from_slice(&self.chain_id.to_be_bytes());
        encoded[140..].copy_from_slice(self.verifying_contract.as_slice());
        keccak256(encoded)
    }
}

impl std::fmt::Display for DomainConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chain {} / contract {}", self.chain_id, self.verifying_contract)
    }
}

//! The EIP-712 domain every Lloom signature is bound to.

use alloy_primitives::Address;
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

impl std::fmt::Display for DomainConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chain {} / contract {}", self.chain_id, self.verifying_contract)
    }
}

//! EIP-712 typed data: the domain, the signed structs and the digest helpers.

mod domain;
mod finish;
mod types;

pub use domain::{
    DEFAULT_CHAIN_ID, DEFAULT_VERIFYING_CONTRACT, DOMAIN_NAME, DOMAIN_VERSION, DomainConfig,
};
pub use finish::FinishReason;
pub use types::{Announcement, ErrorCommitment, RequestCommitment, ResponseCommitment};

use alloy_primitives::B256;
use alloy_sol_types::SolStruct;

/// The EIP-712 signing hash of `value` under `domain` (`keccak256(0x1901 ‖ separator ‖ hash)`).
pub fn signing_hash<T: SolStruct>(value: &T, domain: &DomainConfig) -> B256 {
    value.eip712_signing_hash(&domain.eip712())
}

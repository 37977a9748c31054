//! EIP-712 typed data: the domain, the signed structs and the digest helpers.

mod domain;
mod finish;
mod type_hash;
mod types;

pub use domain::{
    DEFAULT_CHAIN_ID, DEFAULT_VERIFYING_CONTRACT, DOMAIN_NAME, DOMAIN_VERSION, DomainConfig,
};
pub use finish::FinishReason;
pub use type_hash::Eip712Type;
pub use types::{Announcement, ErrorCommitment, RequestCommitment, ResponseCommitment};

use alloy_primitives::{B256, Keccak256, keccak256};

/// The EIP-712 signing hash of `value` under `domain` (`keccak256(0x1901 ‖ separator ‖ hash)`),
/// the same as alloy's `eip712_signing_hash` with the domain separator computed cheaply and
/// the type hash computed once per process.
pub fn signing_hash<T: Eip712Type>(value: &T, domain: &DomainConfig) -> B256 {
    let mut hash_struct = Keccak256::new();
    hash_struct.update(T::type_hash());
    hash_struct.update(value.eip712_encode_data());
    let mut preimage = [0u8; 66];
    preimage[..2].copy_from_slice(&[0x19, 0x01]);
    preimage[2..34].copy_from_slice(domain.separator().as_slice());
    preimage[34..].copy_from_slice(hash_struct.finalize().as_slice());
    keccak256(preimage)
}

#[cfg(test)]
mod tests {
    use alloy_primitives::{Address, address};
    use alloy_sol_types::SolStruct;

    use super::*;

    #[test]
    fn the_cheap_separator_and_signing_hash_equal_alloys() {
        let domains = [
            DomainConfig::default(),
            DomainConfig::new(1, address!("0x5FbDB2315678afecb367f032d93F642f64180aa3")),
            DomainConfig::new(u64::MAX, Address::repeat_byte(0xff)),
        ];
        let commitment = ErrorCommitment {
            requestDigest: B256::repeat_byte(3),
            executor: Address::repeat_byte(4),
            code: 1,
            message: "busy".into(),
            retryAfterMillis: 2_000,
            timestamp: 1_700_000_000,
        };
        for domain in domains {
            assert_eq!(domain.separator(), domain.eip712().separator(), "{domain}");
            let alloy = commitment.eip712_signing_hash(&domain.eip712());
            assert_eq!(signing_hash(&commitment, &domain), alloy, "{domain}");
        }
    }

    #[test]
    fn the_cached_separator_follows_the_domain_asked_for() {
        let a = DomainConfig::default();
        let b = DomainConfig::new(1, Address::repeat_byte(1));
        for domain in [a, a, b, b, a, b, a] {
            assert_eq!(domain.separator(), domain.eip712().separator(), "{domain}");
        }
        let other_thread = std::thread::spawn(move || b.separator()).join().expect("joins");
        assert_eq!(other_thread, b.eip712().separator());
    }
}

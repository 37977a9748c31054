//! EIP-712 type hashes computed once per process.
//!
//! alloy's `eip712_hash_struct` hashes the struct's type string on every call: two of the
//! seven Keccak permutations of a request digest. The type string never changes, so each
//! protocol struct keeps its hash in a `OnceLock`.

use std::sync::OnceLock;

use alloy_primitives::{B256, keccak256};
use alloy_sol_types::SolStruct;

use super::{Announcement, ErrorCommitment, RequestCommitment, ResponseCommitment};

/// A signed struct of the protocol, whose EIP-712 type hash is computed once.
pub trait Eip712Type: SolStruct {
    /// `keccak256(encodeType)`, as alloy's `eip712_type_hash` returns it.
    fn type_hash() -> B256;
}

macro_rules! cached_type_hash {
    ($($ty:ty),* $(,)?) => {$(
        impl Eip712Type for $ty {
            fn type_hash() -> B256 {
                static HASH: OnceLock<B256> = OnceLock::new();
                *HASH.get_or_init(|| keccak256(<$ty as SolStruct>::eip712_encode_type().as_bytes()))
            }
        }
    )*};
}

cached_type_hash!(RequestCommitment, ResponseCommitment, ErrorCommitment, Announcement);

#[cfg(test)]
mod tests {
    use alloy_primitives::{Address, U256};

    use super::*;
    use crate::eip712::{DomainConfig, signing_hash};

    /// The cached type hash gives alloy's signing hash, whose type hash is computed afresh.
    fn assert_alloys<T: Eip712Type>(value: &T) {
        let domain = DomainConfig::default();
        for _ in 0..2 {
            assert_eq!(signing_hash(value, &domain), value.eip712_signing_hash(&domain.eip712()));
        }
        assert_eq!(T::type_hash(), value.eip712_type_hash());
    }

    #[test]
    fn cached_type_hashes_give_alloys_digests() {
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        assert_alloys(&RequestCommitment {
            client: a,
            executor: b,
            model: "m".into(),
            requestHash: B256::repeat_byte(3),
            maxInputTokens: 4,
            maxOutputTokens: 5,
            pricePerInputToken: U256::from(6),
            pricePerOutputToken: U256::from(7),
            nonce: 8,
            deadline: 9,
        });
        assert_alloys(&ResponseCommitment {
            requestDigest: B256::repeat_byte(1),
            client: a,
            executor: b,
            model: "m".into(),
            contentHash: B256::repeat_byte(2),
            inputTokens: 3,
            outputTokens: 4,
            totalCost: U256::from(5),
            finishReason: 1,
            timestamp: 6,
        });
        assert_alloys(&ErrorCommitment {
            requestDigest: B256::repeat_byte(1),
            executor: b,
            code: 2,
            message: "busy".into(),
            retryAfterMillis: 3,
            timestamp: 4,
        });
        assert_alloys(&Announcement {
            executor: b,
            sequence: 1,
            timestamp: 2,
            offersHash: B256::repeat_byte(3),
            withdrawn: true,
        });
    }
}

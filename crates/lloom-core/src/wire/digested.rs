//! A signed request together with its EIP-712 digest, hashed once.
//!
//! The digest names a request everywhere: its signature covers it, the response and every
//! checkpoint must reference it, and receipts are stored under it. Hashing the commitment
//! costs five Keccak permutations, so a party that has a request in hand computes its digest
//! once ([`DigestedRequest::new`], or [`SignedRequest::sign_digested`] while signing) and
//! passes the pair to the checks that need both.

use alloy_primitives::B256;

use super::messages::SignedRequest;

/// A signed request and its digest. The fields are private: the digest is always the one of
/// this request, computed from it or while signing it.
#[derive(Clone, Debug, PartialEq)]
pub struct DigestedRequest {
    request: SignedRequest,
    digest: B256,
}

impl DigestedRequest {
    /// Hashes `request` once and keeps both.
    pub fn new(request: SignedRequest) -> Self {
        let digest = request.digest();
        Self { request, digest }
    }

    /// Pairs `request` with the digest it was just signed over (see
    /// [`SignedRequest::sign_digested`]).
    pub(super) fn signed(request: SignedRequest, digest: B256) -> Self {
        Self { request, digest }
    }

    /// The signed request.
    pub fn request(&self) -> &SignedRequest {
        &self.request
    }

    /// Its EIP-712 digest.
    pub fn digest(&self) -> B256 {
        self.digest
    }

    /// The signed request, giving up the digest.
    pub fn into_request(self) -> SignedRequest {
        self.request
    }
}

/// A signed request however it is held: as it came ([`SignedRequest`], hashed on each call)
/// or with its digest ([`DigestedRequest`]). The verification functions take either.
pub trait RequestWithDigest {
    /// The signed request.
    fn signed_request(&self) -> &SignedRequest;
    /// Its EIP-712 digest.
    fn request_digest(&self) -> B256;
}

impl RequestWithDigest for SignedRequest {
    fn signed_request(&self) -> &SignedRequest {
        self
    }

    fn request_digest(&self) -> B256 {
        self.digest()
    }
}

impl RequestWithDigest for DigestedRequest {
    fn signed_request(&self) -> &SignedRequest {
        &self.request
    }

    fn request_digest(&self) -> B256 {
        self.digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeKey;
    use crate::eip712::{DomainConfig, RequestCommitment};
    use crate::wire::{ChatMessage, RequestBody, Role, SamplingParams, request_hash};
    use alloy_primitives::U256;

    fn commitment(key: &NodeKey, body: &RequestBody) -> RequestCommitment {
        RequestCommitment {
            client: key.address(),
            executor: NodeKey::generate().address(),
            model: "m".into(),
            requestHash: request_hash(body),
            maxInputTokens: 10,
            maxOutputTokens: 5,
            pricePerInputToken: U256::from(1),
            pricePerOutputToken: U256::from(2),
            nonce: 7,
            deadline: 1_000,
        }
    }

    #[test]
    fn the_digest_signed_over_and_the_digest_computed_afresh_agree() {
        let key = NodeKey::generate();
        let body = RequestBody {
            messages: vec![ChatMessage { role: Role::User, content: "hello".into() }],
            sampling: SamplingParams::default(),
        };
        let domain = DomainConfig::default();
        let signed = SignedRequest::sign_digested(&key, domain, commitment(&key, &body), body)
            .expect("signs");
        assert_eq!(signed.digest(), signed.request().digest());
        assert_eq!(signed.request_digest(), signed.request().request_digest());
        let again = DigestedRequest::new(signed.clone().into_request());
        assert_eq!(again, signed);
        let other_domain = DomainConfig::new(1, alloy_primitives::Address::repeat_byte(1));
        let mut moved = signed.into_request();
        moved.domain = other_domain;
        assert_ne!(
            DigestedRequest::new(moved).digest(),
            again.digest(),
            "the digest follows the request"
        );
    }
}

//! [`NodeKey`]: the one secret key of a node.

use alloy_primitives::{Address, B256};
use alloy_signer_local::PrivateKeySigner;
use libp2p_identity::{Keypair, PeerId};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::signature::Signature;

/// A node's secp256k1 key, usable both as a libp2p identity and an Ethereum signer.
///
/// `Debug` and `Display` show only the public address and peer id; the secret never prints.
///
/// Signing uses libsecp256k1 (RFC 6979, low-s): it is several times faster than the pure-Rust
/// implementation and produces identical signatures (the known-answer vectors check both).
#[derive(Clone)]
pub struct NodeKey {
    signer: PrivateKeySigner,
    secp: secp256k1::SecretKey,
    keypair: Keypair,
    peer_id: PeerId,
}

impl NodeKey {
    /// Generates a fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let signer = PrivateKeySigner::random();
        // A freshly generated signer always holds a valid 32-byte scalar.
        Self::from_signer(signer).unwrap_or_else(|_| Self::generate())
    }

    /// Builds a key from a 32-byte secret scalar.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Result<Self> {
        let signer = PrivateKeySigner::from_slice(secret)
            .map_err(|_| Error::InvalidKey("not a valid secp256k1 secret scalar"))?;
        Self::from_signer(signer)
    }

    /// Parses a hex secret (64 hex digits, optional `0x`, surrounding whitespace ignored).
    pub fn from_hex(hex_secret: &str) -> Result<Self> {
        let trimmed = hex_secret.trim();
        let digits = trimmed.strip_prefix("0x").unwrap_or(trimmed);
        if digits.len() != 64 {
            return Err(Error::InvalidKey("expected 64 hex digits"));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(digits, bytes.as_mut())
            .map_err(|_| Error::InvalidKey("not hexadecimal"))?;
        Self::from_secret_bytes(&bytes)
    }

    pub(crate) fn from_signer(signer: PrivateKeySigner) -> Result<Self> {
        let mut secret = Zeroizing::new(signer.to_bytes().0);
        let sk = libp2p_identity::secp256k1::SecretKey::try_from_bytes(secret.as_mut())
            .map_err(|_| Error::InvalidKey("not a valid secp256k1 secret scalar"))?;
        let keypair: Keypair = libp2p_identity::secp256k1::Keypair::from(sk).into();
        let peer_id = keypair.public().to_peer_id();
        let secp = secp256k1::SecretKey::from_byte_array(&signer.to_bytes().0)
            .map_err(|_| Error::InvalidKey("not a valid secp256k1 secret scalar"))?;
        Ok(Self { signer, secp, keypair, peer_id })
    }

    /// The EIP-55 checksummed Ethereum address of this key.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The libp2p peer id of this key.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The libp2p keypair, for building a swarm.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// Signs a 32-byte digest (e.g. an EIP-712 signing hash).
    pub fn sign_digest(&self, digest: &B256) -> Result<Signature> {
        Signature::sign(digest, &self.secp)
    }

    /// The secret as 64 lowercase hex digits, wiped from memory when dropped.
    pub(crate) fn secret_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.signer.to_bytes()))
    }

    /// The secret scalar, wiped from memory when dropped.
    pub(crate) fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signer.to_bytes().0)
    }
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("address", &self.address().to_checksum(None))
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Display for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.address().to_checksum(None), self.peer_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Anvil's first default account: a well-known public test key.
    const ANVIL0: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    #[test]
    fn known_key_gives_known_address() {
        let key = NodeKey::from_hex(ANVIL0).unwrap();
        assert_eq!(key.address().to_checksum(None), "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        assert_eq!(crate::identity::peer_id_to_address(&key.peer_id()).unwrap(), key.address());
    }

    #[test]
    fn secret_never_in_debug_or_display() {
        let key = NodeKey::from_hex(ANVIL0).unwrap();
        for text in [format!("{key:?}"), format!("{key}"), format!("{key:#?}")] {
            assert!(!text.to_lowercase().contains(ANVIL0), "secret leaked: {text}");
            assert!(!text.contains(&ANVIL0[..16]), "secret prefix leaked: {text}");
            assert!(text.contains("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"));
        }
    }

    #[test]
    fn bad_hex_keys_rejected() {
        assert!(matches!(NodeKey::from_hex("abc"), Err(Error::InvalidKey(_))));
        assert!(matches!(NodeKey::from_hex(&"zz".repeat(32)), Err(Error::InvalidKey(_))));
        assert!(matches!(NodeKey::from_hex(&"00".repeat(32)), Err(Error::InvalidKey(_))));
        assert!(matches!(NodeKey::from_hex(&"ff".repeat(32)), Err(Error::InvalidKey(_))));
        assert!(NodeKey::from_hex(&format!("0x{ANVIL0}\n")).is_ok());
    }

    #[test]
    fn libsecp256k1_and_alloy_signatures_are_identical() {
        use alloy_signer::SignerSync;
        let key = NodeKey::from_hex(ANVIL0).unwrap();
        for i in 0u8..32 {
            let digest = alloy_primitives::keccak256([i]);
            let ours = key.sign_digest(&digest).unwrap();
            let alloy = key.signer.sign_hash_sync(&digest).unwrap();
            assert_eq!(ours.as_bytes(), &alloy.as_bytes());
            let recovered = alloy.recover_address_from_prehash(&digest).unwrap();
            assert_eq!(ours.recover(&digest).unwrap(), recovered);
        }
    }
}

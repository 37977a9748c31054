//! Mapping a libp2p peer id to the Ethereum address of the same key.

use alloy_primitives::Address;
use libp2p_identity::{PeerId, PublicKey};

use crate::error::{Error, Result};

/// Multihash code of the identity hash, used by libp2p for keys of at most 42 bytes.
const IDENTITY_MULTIHASH: u64 = 0x00;

/// The Ethereum address of the secp256k1 key embedded in `peer`.
///
/// secp256k1 peer ids inline their public key (identity multihash), so the address can be
/// computed without any lookup. Peer ids of other key types are rejected: every Lloom node
/// uses a secp256k1 key.
pub fn peer_id_to_address(peer: &PeerId) -> Result<Address> {
    let not_secp = || Error::NotSecp256k1Peer(peer.to_base58());
    let multihash = peer.as_ref();
    if multihash.code() != IDENTITY_MULTIHASH {
        return Err(not_secp());
    }
    let public = PublicKey::try_decode_protobuf(multihash.digest()).map_err(|_| not_secp())?;
    let secp = public.try_into_secp256k1().map_err(|_| not_secp())?;
    let uncompressed = secp.to_bytes_uncompressed();
    let raw: &[u8; 64] =
        uncompressed.get(1..).and_then(|s| s.try_into().ok()).ok_or_else(not_secp)?;
    Ok(Address::from_raw_public_key(raw))
}

/// Protobuf head of a secp256k1 public key as libp2p encodes it (deterministically): field 1,
/// `KeyType::Secp256k1` (2), then field 2, 33 bytes of compressed key.
const SECP256K1_PROTOBUF_HEAD: [u8; 4] = [0x08, 0x02, 0x12, 33];

/// The compressed secp256k1 key inlined in `peer`, read without decoding the curve point, when
/// the peer id has the canonical form libp2p writes; `None` otherwise (the caller then falls
/// back to [`peer_id_to_address`]). Comparing it with a recovered key is the cheap way to check
/// a sender: equal keys have equal addresses.
pub(crate) fn inlined_secp256k1_key(peer: &PeerId) -> Option<&[u8; 33]> {
    let multihash = peer.as_ref();
    if multihash.code() != IDENTITY_MULTIHASH {
        return None;
    }
    let key = multihash.digest().strip_prefix(&SECP256K1_PROTOBUF_HEAD)?;
    key.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inlined_key_is_the_nodes_compressed_key() {
        let key = crate::NodeKey::generate();
        let compressed = key.keypair().public().try_into_secp256k1().unwrap().to_bytes();
        assert_eq!(inlined_secp256k1_key(&key.peer_id()), Some(&compressed));
    }

    #[test]
    fn peer_ids_of_other_forms_have_no_inlined_key() {
        let mut bytes = vec![0x12, 0x20];
        bytes.extend_from_slice(&[7u8; 32]);
        assert_eq!(inlined_secp256k1_key(&PeerId::from_bytes(&bytes).unwrap()), None);
        let ed25519 = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
        assert_eq!(inlined_secp256k1_key(&ed25519), None);
    }

    #[test]
    fn non_secp_peer_ids_are_rejected() {
        // A sha2-256 multihash peer id (as RSA keys get) hides its key.
        let mut bytes = vec![0x12, 0x20];
        bytes.extend_from_slice(&[7u8; 32]);
        let hashed = PeerId::from_bytes(&bytes).unwrap();
        assert!(matches!(peer_id_to_address(&hashed), Err(Error::NotSecp256k1Peer(_))));
    }
}

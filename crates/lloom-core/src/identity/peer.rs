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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_secp_peer_ids_are_rejected() {
        // A sha2-256 multihash peer id (as RSA keys get) hides its key.
        let mut bytes = vec![0x12, 0x20];
        bytes.extend_from_slice(&[7u8; 32]);
        let hashed = PeerId::from_bytes(&bytes).unwrap();
        assert!(matches!(peer_id_to_address(&hashed), Err(Error::NotSecp256k1Peer(_))));
    }
}

//! 65-byte Ethereum signatures (`r ‖ s ‖ v`) and the rules for accepting them.
//!
//! Accepted: `v` in {0, 1, 27, 28}, normalized to 27/28 (what `ecrecover`, OpenZeppelin's
//! `ECDSA` and `cast` use). Rejected: any other `v`, `r` or `s` zero or not below the curve
//! order, and high-`s` signatures (EIP-2 malleability).

use alloy_primitives::{Address, B256, U256, uint};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, SECP256K1};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The secp256k1 curve order `n`.
const SECP256K1_N: U256 =
    uint!(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141_U256);
/// `n / 2`; an `s` above this is the malleable twin of a low-`s` signature.
const SECP256K1_HALF_N: U256 =
    uint!(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0_U256);

/// Who signed a digest, as recovered from the signature.
pub(crate) struct RecoveredSigner {
    /// The Ethereum address of the key.
    pub(crate) address: Address,
    /// The key, compressed (the form libp2p peer ids inline).
    pub(crate) compressed: [u8; 33],
}

/// A recoverable secp256k1 signature in Ethereum's 65-byte `r ‖ s ‖ v` form, `v` ∈ {27, 28}.
///
/// Construct with [`Signature::from_bytes`], which applies every acceptance rule; a value of
/// this type is therefore always canonical.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; 65]);

impl Signature {
    /// Parses and validates a 65-byte signature, normalizing `v` to 27/28.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let raw: [u8; 65] =
            bytes.try_into().map_err(|_| Error::MalformedSignature("length is not 65 bytes"))?;
        let (r, s, v) = split(&raw);
        let v = match v {
            0 | 1 => v + 27,
            27 | 28 => v,
            other => return Err(Error::InvalidRecoveryId(other)),
        };
        if r.is_zero() || r >= SECP256K1_N {
            return Err(Error::MalformedSignature("r is zero or not below the curve order"));
        }
        if s.is_zero() || s >= SECP256K1_N {
            return Err(Error::MalformedSignature("s is zero or not below the curve order"));
        }
        if s > SECP256K1_HALF_N {
            return Err(Error::HighS);
        }
        let mut out = raw;
        out[64] = v;
        Ok(Self(out))
    }

    /// The 65 bytes, `v` ∈ {27, 28}.
    pub fn as_bytes(&self) -> &[u8; 65] {
        &self.0
    }

    /// Recovers the address that signed `digest` (libsecp256k1).
    pub fn recover(&self, digest: &B256) -> Result<Address> {
        self.recover_signer(digest).map(|signer| signer.address)
    }

    /// Recovers the signer of `digest`: its address and its compressed public key.
    pub(crate) fn recover_signer(&self, digest: &B256) -> Result<RecoveredSigner> {
        let (rs, v) = self.0.split_at(64);
        let parity = v.first().map_or(0, |v| i32::from(v.saturating_sub(27)));
        let id = RecoveryId::try_from(parity).map_err(|_| Error::RecoveryFailed)?;
        let sig = RecoverableSignature::from_compact(rs, id)
            .map_err(|_| Error::MalformedSignature("not a valid compact signature"))?;
        let key = SECP256K1
            .recover_ecdsa(&Message::from_digest(digest.0), &sig)
            .map_err(|_| Error::RecoveryFailed)?;
        let uncompressed = key.serialize_uncompressed();
        let raw = uncompressed.get(1..).ok_or(Error::RecoveryFailed)?;
        Ok(RecoveredSigner {
            address: Address::from_raw_public_key(raw),
            compressed: key.serialize(),
        })
    }

    /// Signs `digest` with `secret` (RFC 6979 nonces, low-s), in the wire form.
    pub(crate) fn sign(digest: &B256, secret: &secp256k1::SecretKey) -> Result<Self> {
        let sig = SECP256K1.sign_ecdsa_recoverable(&Message::from_digest(digest.0), secret);
        let (id, rs) = sig.serialize_compact();
        let mut raw = [0u8; 65];
        raw[..64].copy_from_slice(&rs);
        raw[64] = 27 + u8::try_from(i32::from(id)).map_err(|_| Error::RecoveryFailed)?;
        Self::from_bytes(&raw)
    }
}

fn split(raw: &[u8; 65]) -> (U256, U256, u8) {
    let (r, rest) = raw.split_at(32);
    let (s, v) = rest.split_at(32);
    (U256::from_be_slice(r), U256::from_be_slice(s), v.first().copied().unwrap_or_default())
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature(0x{})", hex::encode(self.0))
    }
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl std::str::FromStr for Signature {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bytes = hex::decode(s.strip_prefix("0x").unwrap_or(s))
            .map_err(|_| Error::MalformedSignature("not hex"))?;
        Self::from_bytes(&bytes)
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_string())
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Signature;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a 65-byte signature")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                Signature::from_bytes(v).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Signature, E> {
                v.parse().map_err(E::custom)
            }
        }
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(Visitor)
        } else {
            deserializer.deserialize_bytes(Visitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(r: U256, s: U256, v: u8) -> Vec<u8> {
        let mut out = r.to_be_bytes::<32>().to_vec();
        out.extend_from_slice(&s.to_be_bytes::<32>());
        out.push(v);
        out
    }

    #[test]
    fn v_is_normalized_and_bad_v_rejected() {
        let one = U256::from(1);
        for (v, want) in [(0u8, 27u8), (1, 28), (27, 27), (28, 28)] {
            let sig = Signature::from_bytes(&raw(one, one, v)).unwrap();
            assert_eq!(sig.as_bytes()[64], want);
        }
        for v in [2u8, 26, 29, 35, 255] {
            assert!(matches!(
                Signature::from_bytes(&raw(one, one, v)),
                Err(Error::InvalidRecoveryId(x)) if x == v
            ));
        }
    }

    #[test]
    fn high_s_zero_and_out_of_range_rejected() {
        let one = U256::from(1);
        assert!(matches!(
            Signature::from_bytes(&raw(one, SECP256K1_HALF_N + one, 27)),
            Err(Error::HighS)
        ));
        assert!(Signature::from_bytes(&raw(one, SECP256K1_HALF_N, 27)).is_ok());
        assert!(matches!(
            Signature::from_bytes(&raw(U256::ZERO, one, 27)),
            Err(Error::MalformedSignature(_))
        ));
        assert!(matches!(
            Signature::from_bytes(&raw(SECP256K1_N, one, 27)),
            Err(Error::MalformedSignature(_))
        ));
        assert!(matches!(Signature::from_bytes(&[0u8; 64]), Err(Error::MalformedSignature(_))));
    }
}

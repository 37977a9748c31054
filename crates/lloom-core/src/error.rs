//! The one error type of `lloom-core`.
//!
//! Every verification rule has its own variant so callers can tell a peer exactly which check
//! failed. Two predicates drive decisions elsewhere: [`Error::is_peer_fault`] feeds reputation
//! (the remote party sent something invalid) and [`Error::is_retryable`] feeds failover (trying
//! again, possibly elsewhere or with a fresh nonce, may succeed).

use alloy_primitives::{Address, B256, U256};

/// Result alias used throughout `lloom-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `lloom-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ----- signatures -------------------------------------------------------------------------
    /// The signature bytes are not a valid secp256k1 signature (bad length, r or s out of range).
    #[error("malformed signature: {0}")]
    MalformedSignature(&'static str),
    /// The recovery byte `v` is not one of 0, 1, 27, 28.
    #[error("invalid signature recovery id v={0} (expected 0, 1, 27 or 28)")]
    InvalidRecoveryId(u8),
    /// The signature has a high `s` value (malleable form, rejected per EIP-2).
    #[error("malleable signature rejected: s is in the upper half of the curve order")]
    HighS,
    /// No public key could be recovered from the signature and digest.
    #[error("signature recovery failed")]
    RecoveryFailed,
    /// The signature recovers to an address other than the claimed signer.
    #[error("signature recovers to {recovered}, but the message claims signer {claimed}")]
    SignerMismatch {
        /// The address the message says signed it.
        claimed: Address,
        /// The address the signature actually recovers to.
        recovered: Address,
    },
    /// The claimed signer is not the peer that sent the message.
    #[error("signer {signer} is not the sending peer (peer key address {peer})")]
    PeerMismatch {
        /// The signer named in the message.
        signer: Address,
        /// The Ethereum address of the sending peer's libp2p key.
        peer: Address,
    },
    /// The message was signed for another EIP-712 domain (chain id or contract).
    #[error("wrong EIP-712 domain: expected {expected}, got {got}")]
    DomainMismatch {
        /// Our domain, `chainId/verifyingContract`.
        expected: String,
        /// The domain the peer signed for.
        got: String,
    },

    // ----- time and replay --------------------------------------------------------------------
    /// The request's deadline has passed.
    #[error("deadline {deadline} has passed (now {now})")]
    DeadlinePassed {
        /// Deadline in unix seconds.
        deadline: u64,
        /// Current time in unix seconds.
        now: u64,
    },
    /// The deadline is further in the future than this node accepts.
    #[error("deadline {deadline} is more than {max_horizon_secs}s in the future (now {now})")]
    DeadlineTooFar {
        /// Deadline in unix seconds.
        deadline: u64,
        /// Current time in unix seconds.
        now: u64,
        /// Largest accepted distance from now.
        max_horizon_secs: u64,
    },
    /// A timestamp lies outside the accepted clock-skew window.
    #[error("timestamp {timestamp} outside the clock-skew window of ±{skew_secs}s around {now}")]
    TimestampSkew {
        /// The timestamp in the message (unix seconds).
        timestamp: u64,
        /// Current time in unix seconds.
        now: u64,
        /// Accepted skew in seconds.
        skew_secs: u64,
    },
    /// The (client, nonce) pair was already used.
    #[error("nonce {nonce} of client {client} was already used (replay)")]
    NonceReplayed {
        /// The client that signed the request.
        client: Address,
        /// The reused nonce.
        nonce: u64,
    },

    // ----- request/response binding -----------------------------------------------------------
    /// The response does not reference the request it claims to answer.
    #[error("response references request digest {got}, expected {expected}")]
    RequestDigestMismatch {
        /// Digest of the request we sent or received.
        expected: B256,
        /// Digest referenced by the response.
        got: B256,
    },
    /// The commitment's request hash does not match the request body.
    #[error("request hash {got} does not match the request body (hash {expected})")]
    RequestHashMismatch {
        /// Hash of the request body as received.
        expected: B256,
        /// Hash in the signed commitment.
        got: B256,
    },
    /// An announcement's `offersHash` does not match its body.
    #[error("announcement offers hash {got} does not match its body (hash {expected})")]
    OffersHashMismatch {
        /// Hash of the body as received.
        expected: B256,
        /// Hash in the signed announcement.
        got: B256,
    },
    /// A field of the response differs from the request it answers.
    #[error("response field `{field}` does not match the request")]
    ResponseFieldMismatch {
        /// The name of the mismatching field.
        field: &'static str,
    },
    /// More output tokens were reported than the request allowed.
    #[error("{got} output tokens exceed the request's limit of {max}")]
    TooManyOutputTokens {
        /// Reported output tokens.
        got: u64,
        /// The request's `maxOutputTokens`.
        max: u64,
    },
    /// More input tokens were reported than the request allowed.
    #[error("{got} input tokens exceed the request's limit of {max}")]
    TooManyInputTokens {
        /// Reported input tokens.
        got: u64,
        /// The request's `maxInputTokens`.
        max: u64,
    },
    /// The claimed cost is not `in × price_in + out × price_out`.
    #[error("claimed cost {claimed} wei, but usage and prices give {expected} wei")]
    CostMismatch {
        /// Cost computed from usage and prices.
        expected: U256,
        /// Cost in the signed response.
        claimed: U256,
    },
    /// The cost computation overflowed 256 bits.
    #[error("cost computation overflows uint256")]
    CostOverflow,
    /// The content hash does not match the received content.
    #[error("content hash {claimed} does not match the received content (hash {actual})")]
    ContentHashMismatch {
        /// Hash of the content actually received.
        actual: B256,
        /// Hash in the signed message.
        claimed: B256,
    },
    /// The message is well-formed but violates a protocol rule (e.g. empty messages).
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The answer is not the JSON its request's output format asked for.
    #[error("the answer is not {wanted}, as the request asked: {why}")]
    FormatViolated {
        /// What the format asked for.
        wanted: &'static str,
        /// What is wrong with the answer.
        why: String,
    },

    // ----- wire codec -------------------------------------------------------------------------
    /// A frame or field is larger than the configured limit.
    #[error("{what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size (or announced size) in bytes or items.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The frame ended before its announced length.
    #[error("truncated frame: expected {expected} bytes, got {got}")]
    Truncated {
        /// Bytes expected.
        expected: u64,
        /// Bytes available.
        got: u64,
    },
    /// The frame carries a protocol version this node does not speak.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// The payload could not be decoded.
    #[error("malformed frame: {0}")]
    Decode(#[from] postcard::Error),

    // ----- identity and keys ------------------------------------------------------------------
    /// A private key could not be parsed.
    #[error("invalid private key: {0}")]
    InvalidKey(&'static str),
    /// A peer id does not carry an inline secp256k1 public key.
    #[error("peer id {0} does not embed a secp256k1 key")]
    NotSecp256k1Peer(String),
    /// The keystore could not be decrypted or written.
    #[error("keystore error: {0}")]
    Keystore(#[from] alloy_signer_local::LocalSignerError),
    /// No password was available for an encrypted keystore.
    #[error("no keystore password: {0}")]
    NoPassword(String),
    /// The configuration file is unreadable or invalid.
    #[error("config file {path}: {message}")]
    ConfigFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// There is no key file where one was expected.
    #[error("no key file at {0}; create one with `keys new` or import one with `keys import`")]
    KeyFileMissing(std::path::PathBuf),
    /// Creating a key would overwrite an existing file.
    #[error("refusing to overwrite existing key file {0}")]
    KeyFileExists(std::path::PathBuf),

    // ----- network ------------------------------------------------------------------------------
    /// The network could not be set up (transport, behaviour or listener).
    #[error("network setup failed: {0}")]
    NetworkSetup(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The network event loop has stopped.
    #[error("the network event loop has stopped")]
    NetworkStopped,
    /// Dialing a peer failed.
    #[error("dial failed: {0}")]
    Dial(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Publishing on gossip failed (e.g. no peer subscribed yet).
    #[error("publish failed: {0}")]
    Publish(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A registry query failed (timeout, disconnect, refused).
    #[error("registry query failed: {0}")]
    RegistryQueryFailed(#[from] libp2p::request_response::OutboundFailure),
    /// A request stream could not be opened or accepted.
    #[error("stream error: {0}")]
    Stream(String),
    /// A DHT lookup or publication failed (e.g. no DHT server reachable).
    #[error("DHT: {0}")]
    Dht(String),

    // ----- local resources --------------------------------------------------------------------
    /// An I/O error on a local file or stream.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The embedded database failed.
    #[error("database error: {0}")]
    Database(#[from] Box<redb::Error>),
    /// A store's journal is not one, or holds a record that does not decode.
    #[error("journal {path}: {reason}")]
    Journal {
        /// The journal file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A stream timed out.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// An EVM JSON-RPC call or transaction failed (unreachable node, revert, bad address).
    #[error("chain: {0}")]
    Chain(String),
}

impl Error {
    /// True when the remote peer sent something invalid; feeds peer reputation.
    ///
    /// Local failures (disk, database, missing password) and transient ones (timeouts, a replayed
    /// nonce that a retry with a fresh nonce fixes) are not the peer's fault.
    pub fn is_peer_fault(&self) -> bool {
        use Error::*;
        matches!(
            self,
            MalformedSignature(_)
                | InvalidRecoveryId(_)
                | HighS
                | RecoveryFailed
                | SignerMismatch { .. }
                | PeerMismatch { .. }
                | DomainMismatch { .. }
                | DeadlineTooFar { .. }
                | TimestampSkew { .. }
                | RequestDigestMismatch { .. }
                | RequestHashMismatch { .. }
                | OffersHashMismatch { .. }
                | ResponseFieldMismatch { .. }
                | TooManyOutputTokens { .. }
                | TooManyInputTokens { .. }
                | CostMismatch { .. }
                | CostOverflow
                | ContentHashMismatch { .. }
                | FormatViolated { .. }
                | InvalidMessage(_)
                | TooLarge { .. }
                | Truncated { .. }
                | UnsupportedVersion(_)
                | Decode(_)
                | NotSecp256k1Peer(_)
        )
    }

    /// True when trying again (elsewhere, later, or with a fresh nonce) may succeed; feeds
    /// failover. A peer that misbehaved is not retried for the same request, so peer faults are
    /// retryable on *another* executor: callers combine both predicates.
    pub fn is_retryable(&self) -> bool {
        use Error::*;
        match self {
            Timeout(_)
            | Io(_)
            | NonceReplayed { .. }
            | Dial(_)
            | Publish(_)
            | RegistryQueryFailed(_)
            | Stream(_)
            | Dht(_)
            | Chain(_) => true,
            // Another executor may answer correctly.
            e if e.is_peer_fault() => true,
            _ => false,
        }
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Database(Box::new(e))
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Database(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_faults_are_retryable_elsewhere_but_local_faults_are_not() {
        assert!(Error::HighS.is_peer_fault());
        assert!(Error::HighS.is_retryable());
        let local = Error::KeyFileExists("/tmp/x".into());
        assert!(!local.is_peer_fault());
        assert!(!local.is_retryable());
        let replay = Error::NonceReplayed { client: Address::ZERO, nonce: 1 };
        assert!(!replay.is_peer_fault());
        assert!(replay.is_retryable());
        let expired = Error::DeadlinePassed { deadline: 1, now: 2 };
        assert!(!expired.is_retryable());
    }
}

//! Node identity: one secp256k1 key is both the libp2p [`PeerId`](libp2p_identity::PeerId) and
//! the Ethereum address, stored as an encrypted keystore or a 0600 hex file.

mod key;
mod keyfile;
mod password;
mod peer;

pub use key::NodeKey;
pub use keyfile::{KeyFormat, load_key, save_key};
pub use password::{DEFAULT_PASSWORD_ENV, PasswordSource};
pub(crate) use peer::inlined_secp256k1_key;
pub use peer::peer_id_to_address;

//! [`ClientConfig`]: how a client joins the network and treats requests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lloom_core::VerifyPolicy;
use lloom_core::network::Multiaddr;

use crate::receipts::ReceiptStore;
use crate::routing::Strategy;

/// How the client joins the network and treats requests. Build it with the setter methods.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Validators to ask, with `/p2p/<id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Find validators on the local network with mDNS.
    pub mdns: bool,
    /// Addresses to listen on (`None`: all interfaces, TCP, when mDNS is on; none otherwise).
    /// A client that listens lets executors behind NAT connect back to it directly after a
    /// relayed first contact (DCUtR hole punching).
    pub listen: Option<Vec<Multiaddr>>,
    /// Verification policy (domain, clock skew, limits).
    pub policy: VerifyPolicy,
    /// How executors are chosen.
    pub strategy: Strategy,
    /// How long to wait for validators.
    pub discovery_timeout: Duration,
    /// Oldest announcement accepted from a validator, in seconds.
    pub max_announcement_age_secs: u64,
    /// Most executors tried for one request.
    pub max_attempts: u32,
    /// Longest wait for any frame of an answer (the first token included).
    pub idle_timeout: Duration,
    /// Longest wait for a connection to an executor: a dial that hangs (an address that drops
    /// packets, or accepts and says nothing) fails over after this.
    pub connect_timeout: Duration,
    /// Where nonces persist; `None` keeps them in memory.
    pub nonce_file: Option<PathBuf>,
    /// Where how densely each model's prompts are counted (learned from verified answers, for
    /// chats fitted to the context) is kept between runs: read at connect, written when a
    /// model's first estimate changes (at most once every 5 s) and at
    /// [`Client::shutdown`](crate::Client::shutdown); `None` keeps it in memory.
    pub prompt_density_file: Option<PathBuf>,
    /// How long a fetched directory is used before validators are asked again.
    pub directory_ttl: Duration,
    /// Where the executors of the last directory the validators gave are kept between runs
    /// (written at most once a minute), so that a client started while no validator answers
    /// still reaches them (see [`crate::known_executors`]); `None`: not kept.
    pub known_executors_file: Option<PathBuf>,
    /// Where verified receipts are kept (`None`: not kept).
    pub receipts: Option<Arc<ReceiptStore>>,
    /// Refuse to sign requests whose worst-case cost exceeds the escrow (`None`: no check).
    pub escrow_guard: Option<Arc<crate::escrow::EscrowGuard>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            bootstrap: Vec::new(),
            mdns: false,
            listen: None,
            policy: VerifyPolicy::default(),
            strategy: Strategy::Balanced,
            discovery_timeout: Duration::from_secs(10),
            max_announcement_age_secs: 60,
            max_attempts: 3,
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            nonce_file: None,
            prompt_density_file: None,
            directory_ttl: Duration::from_secs(5),
            known_executors_file: None,
            receipts: None,
            escrow_guard: None,
        }
    }
}

impl ClientConfig {
    /// Validators to bootstrap from.
    pub fn bootstrap(mut self, addrs: Vec<Multiaddr>) -> Self {
        self.bootstrap = addrs;
        self
    }
    /// Turns mDNS discovery on or off.
    pub fn mdns(mut self, on: bool) -> Self {
        self.mdns = on;
        self
    }
    /// Sets the routing strategy.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }
    /// Persists nonces in `file`.
    pub fn nonce_file(mut self, file: PathBuf) -> Self {
        self.nonce_file = Some(file);
        self
    }
    /// Checks the client's escrow before signing.
    pub fn escrow_guard(mut self, guard: crate::escrow::EscrowGuard) -> Self {
        self.escrow_guard = Some(Arc::new(guard));
        self
    }
    /// Sets the verification policy.
    pub fn policy(mut self, policy: VerifyPolicy) -> Self {
        self.policy = policy;
        self
    }
}

//! The executor's escrow requirement: a client must hold at least a minimum on the settlement
//! contract before it is served. Balances are read from the chain and cached; when the chain
//! cannot be reached, a cached balance up to ten cache periods old is still used, and a client
//! with no known balance is refused (fail closed).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lloom_core::chain::Settlement;
use lloom_core::{Address, U256};
use tokio::sync::Mutex;

/// Most clients whose balance is cached.
const MAX_CACHED: usize = 100_000;

/// Why a client is not served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EscrowShortfall {
    /// The balance is below the minimum.
    Below {
        /// The client's escrow, in wei.
        escrow: U256,
        /// The minimum, in wei.
        minimum: U256,
    },
    /// The balance could not be read.
    Unknown(String),
}

/// A minimum escrow, checked against the chain.
#[derive(Debug)]
pub struct EscrowPolicy {
    settlement: Settlement,
    minimum: U256,
    cache_for: Duration,
    cache: Mutex<HashMap<Address, (U256, Instant)>>,
}

impl EscrowPolicy {
    /// Requires `minimum` wei of escrow, read from `settlement` at most every `cache_for`.
    pub fn new(settlement: Settlement, minimum: U256, cache_for: Duration) -> Self {
        Self { settlement, minimum, cache_for, cache: Mutex::new(HashMap::new()) }
    }

    /// The minimum, in wei.
    pub fn minimum(&self) -> U256 {
        self.minimum
    }

    /// Checks `client`'s escrow.
    pub async fn check(&self, client: Address) -> Result<(), EscrowShortfall> {
        let now = Instant::now();
        let cached = self.cache.lock().await.get(&client).copied();
        let escrow = match cached {
            Some((escrow, at)) if now.duration_since(at) < self.cache_for => escrow,
            _ => match self.settlement.escrow_of(client).await {
                Ok(escrow) => {
                    let mut cache = self.cache.lock().await;
                    if cache.len() >= MAX_CACHED {
                        let ttl = self.cache_for;
                        cache.retain(|_, (_, at)| now.duration_since(*at) < ttl);
                    }
                    if cache.len() < MAX_CACHED {
                        cache.insert(client, (escrow, now));
                    }
                    escrow
                }
                Err(e) => match cached {
                    Some((escrow, at)) if now.duration_since(at) < self.cache_for * 10 => {
                        tracing::warn!("chain unreachable, using a cached escrow balance: {e}");
                        escrow
                    }
                    _ => return Err(EscrowShortfall::Unknown(e.to_string())),
                },
            },
        };
        if escrow < self.minimum {
            return Err(EscrowShortfall::Below { escrow, minimum: self.minimum });
        }
        Ok(())
    }
}

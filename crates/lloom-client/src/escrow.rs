//! The client's own escrow check: a request is not signed when its worst-case cost
//! (`maxInputTokens × price_in + maxOutputTokens × price_out`) exceeds the client's deposit on
//! the settlement contract. The balance is read from the chain and cached.

use std::time::{Duration, Instant};

use lloom_core::U256;
use lloom_core::chain::Settlement;
use tokio::sync::Mutex;

use crate::error::Result;

/// Reads (and caches) this client's escrow.
#[derive(Debug)]
pub struct EscrowGuard {
    settlement: Settlement,
    cache_for: Duration,
    cached: Mutex<Option<(U256, Instant)>>,
}

impl EscrowGuard {
    /// A guard reading the sender's escrow from `settlement`, at most every `cache_for`.
    pub fn new(settlement: Settlement, cache_for: Duration) -> Self {
        Self { settlement, cache_for, cached: Mutex::new(None) }
    }

    /// The client's escrow, in wei.
    pub async fn escrow(&self) -> Result<U256> {
        let mut cached = self.cached.lock().await;
        if let Some((escrow, at)) = *cached
            && at.elapsed() < self.cache_for
        {
            return Ok(escrow);
        }
        let escrow = self.settlement.escrow_of(self.settlement.sender()).await?;
        *cached = Some((escrow, Instant::now()));
        Ok(escrow)
    }
}

//! Liveness checks of listed executors. When an executor's last connection to the validator
//! closes, the validator dials the addresses it announces, once; an executor that cannot be
//! reached there (it crashed, or its host went away, without withdrawing) leaves the registry
//! at once instead of staying listed, and sending clients to a dead address, until its stale
//! window ends. An executor still up answers the dial and stays; one that only moved
//! announces its new addresses with a newer sequence, which lists it again.

use std::collections::HashSet;
use std::time::Duration;

use lloom_core::PeerId;
use lloom_core::network::NetworkHandle;
use tokio::sync::mpsc;

use crate::registry::LivenessCheck;

/// How long a check's dial may take before the executor counts as unreachable.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Most checks under way at once; a disconnection beyond it is left to the stale window.
pub const MAX_CHECKS: usize = 64;

/// A finished check: the executor could not be reached when `unreachable` holds its reason.
#[derive(Debug)]
pub struct CheckOutcome {
    /// What was checked.
    pub check: LivenessCheck,
    /// Why the dial failed, if it did.
    pub unreachable: Option<String>,
}

/// The checks under way, bounded by [`MAX_CHECKS`], one per executor.
#[derive(Debug)]
pub struct LivenessChecks {
    network: NetworkHandle,
    under_way: HashSet<PeerId>,
    outcomes: mpsc::Sender<CheckOutcome>,
}

impl LivenessChecks {
    /// Checks report to `outcomes`.
    pub fn new(network: NetworkHandle, outcomes: mpsc::Sender<CheckOutcome>) -> Self {
        Self { network, under_way: HashSet::new(), outcomes }
    }

    /// Starts `check` unless one for the same executor is under way or too many are; returns
    /// whether it started.
    pub fn start(&mut self, check: LivenessCheck) -> bool {
        if self.under_way.len() >= MAX_CHECKS || !self.under_way.insert(check.peer) {
            return false;
        }
        let network = self.network.clone();
        let outcomes = self.outcomes.clone();
        tokio::spawn(async move {
            let dial = network.connect(check.peer, check.addrs.clone());
            let unreachable = match tokio::time::timeout(CHECK_TIMEOUT, dial).await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some(format!("no connection within {CHECK_TIMEOUT:?}")),
            };
            let _ = outcomes.send(CheckOutcome { check, unreachable }).await;
        });
        true
    }

    /// Marks the check of `peer` as finished.
    pub fn finished(&mut self, peer: &PeerId) {
        self.under_way.remove(peer);
    }
}

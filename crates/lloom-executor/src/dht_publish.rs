//! Publishing the executor in the DHT, so clients find it without any validator's registry:
//! its latest signed announcement under its own key, and a provider record per model.
//!
//! The announcer calls [`DhtPublisher::offer`] with each announcement it signs; a publication
//! runs when the models changed or the last one is older than the interval (records expire
//! after the network's `dht_record_ttl` unless republished), one at a time, in the background.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lloom_core::SignedAnnouncement;
use lloom_core::network::NetworkHandle;
use tokio::task::JoinHandle;

/// Decides when to publish and runs one publication at a time.
#[derive(Debug)]
pub(crate) struct DhtPublisher {
    every: Duration,
    last: Option<Instant>,
    provided: BTreeSet<String>,
    running: Option<JoinHandle<()>>,
}

impl DhtPublisher {
    /// Publishes at least every `every`.
    pub(crate) fn new(every: Duration) -> Self {
        Self { every, last: None, provided: BTreeSet::new(), running: None }
    }

    /// Publishes `announcement` (and provides its models) when due.
    pub(crate) fn offer(&mut self, network: &NetworkHandle, announcement: &SignedAnnouncement) {
        if self.running.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let models: BTreeSet<String> =
            announcement.body.offers.iter().map(|o| o.model.clone()).collect();
        let due = self.last.is_none_or(|t| t.elapsed() >= self.every);
        if !due && models == self.provided {
            return;
        }
        self.last = Some(Instant::now());
        self.provided = models.clone();
        let (network, announcement) = (network.clone(), announcement.clone());
        self.running = Some(tokio::spawn(async move {
            if let Err(error) = network.put_announcement(&announcement).await {
                tracing::debug!(%error, "announcement not stored in the DHT");
            }
            for model in &models {
                if let Err(error) = network.provide_model(model).await {
                    tracing::debug!(%model, %error, "provider record not stored in the DHT");
                }
            }
        }));
    }
}

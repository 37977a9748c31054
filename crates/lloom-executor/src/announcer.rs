//! The announcer: publishes the executor's signed offers on start, on every change, on a
//! heartbeat, when asked to ([`Republish`]: a validator that restarted), and their withdrawal
//! on shutdown.

use std::sync::Arc;
use std::time::Duration;

use lloom_core::network::NetworkHandle;
use lloom_core::{AnnouncementBody, DomainConfig, NodeKey, SignedAnnouncement, unix_now};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::dht_publish::DhtPublisher;
use crate::error::Result;

/// First retry delay after a failed publish (e.g. no validator subscribed yet); doubles up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// Longest retry delay.
const MAX_RETRY: Duration = Duration::from_secs(2);
/// Least time between an announcement and one [`Republish`] asks for: however often it is
/// asked (a peer subscribing again and again), at most one signature a second.
const MIN_REPUBLISH_GAP: Duration = Duration::from_secs(1);
/// Longest the shutdown waits for the withdrawal to be stored in the DHT.
const DHT_WITHDRAWAL_TIMEOUT: Duration = Duration::from_secs(2);

/// How often and for which domain the executor announces.
#[derive(Clone, Copy, Debug)]
pub struct AnnouncerConfig {
    /// Time between heartbeats; validators expire an executor after several missed ones.
    pub heartbeat: Duration,
    /// The signature domain.
    pub domain: DomainConfig,
    /// Time between publications in the DHT (announcement record and provider records);
    /// keep it below the network's `dht_record_ttl`.
    pub dht_interval: Duration,
}

impl Default for AnnouncerConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(10),
            domain: DomainConfig::default(),
            dht_interval: Duration::from_secs(60),
        }
    }
}

/// Controls a running announcer.
#[derive(Debug)]
pub struct Announcer {
    offers: watch::Sender<AnnouncementBody>,
    latest: watch::Receiver<Option<SignedAnnouncement>>,
    republish: Republish,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
}

/// Asks a running announcer to announce again now, without waiting for the heartbeat; asks
/// that come together are answered by one announcement, at most one a second.
#[derive(Clone, Debug, Default)]
pub struct Republish(Arc<Notify>);

impl Republish {
    /// Announce again as soon as allowed.
    pub fn now(&self) {
        self.0.notify_one();
    }
}

/// Strictly increasing sequence numbers that stay ahead across restarts: unix milliseconds,
/// or one more than the last, whichever is larger.
#[derive(Debug, Default)]
struct Sequence(u64);

impl Sequence {
    fn next(&mut self) -> u64 {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or_default();
        self.0 = now_ms.max(self.0.saturating_add(1));
        self.0
    }
}

impl Announcer {
    /// Starts announcing `offers` for `key` on `network`.
    pub fn spawn(
        key: NodeKey,
        network: NetworkHandle,
        offers: AnnouncementBody,
        config: AnnouncerConfig,
    ) -> Self {
        let (offers_tx, offers_rx) = watch::channel(offers);
        let (latest_tx, latest) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel();
        let republish = Republish::default();
        let asked = republish.0.clone();
        let task = tokio::spawn(run(key, network, offers_rx, latest_tx, asked, stop_rx, config));
        Self { offers: offers_tx, latest, republish, stop: Some(stop_tx), task }
    }

    /// A handle that makes this announcer announce again now (for a validator that has just
    /// subscribed: restarted, or reconnected, and holding nothing of this executor).
    pub fn republisher(&self) -> Republish {
        self.republish.clone()
    }

    /// The announcement signed last (`None` before the first), for answering peers that ask
    /// this executor directly.
    pub fn latest(&self) -> watch::Receiver<Option<SignedAnnouncement>> {
        self.latest.clone()
    }

    /// Replaces the offers (models, prices, load); announced immediately.
    pub fn update(&self, offers: AnnouncementBody) {
        // The task only ends through `shutdown`, which consumes `self`.
        let _ = self.offers.send(offers);
    }

    /// A sender that replaces the offers, for tasks that outlive a borrow of the announcer.
    pub fn sender(&self) -> watch::Sender<AnnouncementBody> {
        self.offers.clone()
    }

    /// Publishes the withdrawal and stops; a withdrawal that cannot be published (no
    /// validator connected) is logged, not an error.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }
}

/// When to announce after a [`Republish`] request at `now`, given the announcement planned
/// for `next` and the last one made at `last`: `None` for at once; otherwise not before
/// [`MIN_REPUBLISH_GAP`] after the last one, and never later than planned (a retry after a
/// failed publish stays as soon as it was).
fn republish_at(next: Instant, last: Option<Instant>, now: Instant) -> Option<Instant> {
    let earliest = last? + MIN_REPUBLISH_GAP;
    (earliest > now).then(|| next.min(earliest))
}

async fn run(
    key: NodeKey,
    network: NetworkHandle,
    mut offers: watch::Receiver<AnnouncementBody>,
    latest: watch::Sender<Option<SignedAnnouncement>>,
    asked: Arc<Notify>,
    mut stop: oneshot::Receiver<()>,
    config: AnnouncerConfig,
) -> Result<()> {
    let mut sequence = Sequence::default();
    let mut dht = DhtPublisher::new(config.dht_interval);
    // When to announce next (a heartbeat, or a retry after a failed publish).
    let mut next = Instant::now();
    let mut retry = FIRST_RETRY;
    let mut last: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            changed = offers.changed() => if changed.is_err() { break },
            () = tokio::time::sleep_until(next) => {}
            () = asked.notified() => {
                if let Some(at) = republish_at(next, last, Instant::now()) {
                    next = at;
                    continue;
                }
            }
        }
        last = Some(Instant::now());
        let body = offers.borrow_and_update().clone();
        let ann = SignedAnnouncement::sign(
            &key,
            config.domain,
            sequence.next(),
            unix_now(),
            body,
            false,
        )?;
        dht.offer(&network, &ann);
        latest.send_replace(Some(ann.clone()));
        let delay = match network.publish_announcement(ann).await {
            Ok(()) => {
                retry = FIRST_RETRY;
                config.heartbeat
            }
            Err(error) => {
                tracing::debug!(%error, ?retry, "announcement not published; retrying");
                let now = retry;
                retry = (retry * 2).min(MAX_RETRY);
                now
            }
        };
        next = Instant::now() + delay;
    }
    let body = offers.borrow().clone();
    let bye =
        SignedAnnouncement::sign(&key, config.domain, sequence.next(), unix_now(), body, true)?;
    // Nothing is lost when it cannot be sent (no validator was ever reached, or none is
    // connected now): validators drop an executor whose heartbeats stop. The withdrawal also
    // replaces the announcement stored in the DHT, so clients looking the model up there do
    // not find this executor either (at most DHT_WITHDRAWAL_TIMEOUT: the shutdown goes on).
    let in_dht = tokio::time::timeout(DHT_WITHDRAWAL_TIMEOUT, network.put_announcement(&bye));
    let (gossiped, stored) = tokio::join!(network.publish_announcement(bye.clone()), in_dht);
    if let Err(error) = gossiped {
        tracing::info!(%error, "the withdrawal was not published; validators drop this executor once its heartbeats stop");
    }
    match stored {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::debug!(%error, "the withdrawal was not stored in the DHT; the announcement there expires");
        }
        Err(_) => tracing::debug!("the withdrawal's DHT put timed out"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_republish_comes_at_once_or_after_the_gap_but_never_delays_a_planned_announcement() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        // Nothing announced yet, or the last one long enough ago: at once.
        assert_eq!(republish_at(now + ms(10_000), None, now), None);
        assert_eq!(republish_at(now + ms(10_000), Some(now - ms(1_500)), now), None);
        // Too soon after the last one: when the gap has passed, not at the heartbeat.
        let last = now - ms(100);
        assert_eq!(republish_at(now + ms(10_000), Some(last), now), Some(last + MIN_REPUBLISH_GAP));
        // A retry planned sooner than that stays (the first announcement of a starting
        // executor, retried every 50 ms until a validator subscribes).
        assert_eq!(republish_at(now + ms(50), Some(last), now), Some(now + ms(50)));
    }

    #[test]
    fn sequences_strictly_increase_even_within_one_millisecond() {
        let mut s = Sequence::default();
        let mut last = 0;
        for _ in 0..10_000 {
            let n = s.next();
            assert!(n > last);
            last = n;
        }
    }
}

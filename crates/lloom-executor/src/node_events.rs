//! What the executor does with its network's events: it answers registry queries about
//! itself ([`crate::self_registry`]), and announces again when one of the validators it
//! bootstraps from subscribes to announcements. A validator that subscribes has just
//! (re)connected: restarted with an empty registry, or dropped the executor while the
//! connection was down (a relayed executor it could not dial back). Announcing at once lists
//! the executor there again in about a second instead of at the next heartbeat.

use std::collections::HashSet;

use lloom_core::network::{NetworkEvent, NetworkHandle};
use lloom_core::{PeerId, SignedAnnouncement};
use tokio::sync::{mpsc, watch};

use crate::announcer::Republish;

/// Handles `events` until the network stops; events the executor does not act on are dropped.
pub(crate) async fn handle_events(
    network: NetworkHandle,
    mut events: mpsc::Receiver<NetworkEvent>,
    latest: watch::Receiver<Option<SignedAnnouncement>>,
    republish: Republish,
    validators: HashSet<PeerId>,
) {
    while let Some(event) = events.recv().await {
        match event {
            NetworkEvent::RegistryQuery { request, responder, .. } => {
                let current = latest.borrow().clone();
                let response =
                    crate::self_registry::answer(&request, current, &network.local_peer_id());
                if network.respond_registry(responder, response).await.is_err() {
                    break;
                }
            }
            NetworkEvent::Subscribed(peer) if validators.contains(&peer) => {
                tracing::debug!(validator = %peer, "validator subscribed; announcing again");
                republish.now();
            }
            _ => {}
        }
    }
}

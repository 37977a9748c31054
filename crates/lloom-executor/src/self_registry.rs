//! Answers registry queries about this executor alone, so a client that reaches it directly
//! (a known address, or mDNS on a LAN with no validator up) learns its signed offers without
//! any validator. The answers carry the executor's own latest signed announcement, which the
//! client verifies like one relayed by a validator.

use lloom_core::network::{NetworkEvent, NetworkHandle};
use lloom_core::registry_query::{ExecutorInfo, ModelSummary, RegistryRequest, RegistryResponse};
use lloom_core::{SignedAnnouncement, unix_now};
use tokio::sync::{mpsc, watch};

/// Answers every registry query among `events` from the latest announcement; other events are
/// dropped (the executor acts on none). Returns when the network stops.
pub(crate) async fn answer_queries(
    network: NetworkHandle,
    mut events: mpsc::Receiver<NetworkEvent>,
    latest: watch::Receiver<Option<SignedAnnouncement>>,
) {
    while let Some(event) = events.recv().await {
        if let NetworkEvent::RegistryQuery { request, responder, .. } = event {
            let current = latest.borrow().clone();
            let response = answer(&request, current, &network);
            if network.respond_registry(responder, response).await.is_err() {
                break;
            }
        }
    }
}

fn answer(
    request: &RegistryRequest,
    latest: Option<SignedAnnouncement>,
    network: &NetworkHandle,
) -> RegistryResponse {
    let Some(announcement) = latest.filter(|a| !a.commitment.withdrawn) else {
        return RegistryResponse::Refused { reason: "not announced yet".into() };
    };
    let info = ExecutorInfo {
        peer_id: network.local_peer_id().to_string(),
        last_seen: unix_now(),
        announcement,
    };
    let offers = &info.announcement.body.offers;
    match request {
        RegistryRequest::Snapshot { cursor: None, .. } => {
            RegistryResponse::Executors { executors: vec![info], next_cursor: None }
        }
        RegistryRequest::Snapshot { cursor: Some(_), .. } => {
            RegistryResponse::Executors { executors: vec![], next_cursor: None }
        }
        RegistryRequest::Executor { executor } => RegistryResponse::Executor(
            (*executor == info.announcement.executor()).then(|| Box::new(info)),
        ),
        RegistryRequest::FindExecutors(find) => {
            let serves = offers.iter().any(|o| {
                o.model == find.model
                    && find.max_price_per_input_token.is_none_or(|m| o.price_per_input_token <= m)
                    && find.max_price_per_output_token.is_none_or(|m| o.price_per_output_token <= m)
                    && find.min_context.is_none_or(|m| o.context_length >= m)
            });
            let first_page = find.cursor.is_none();
            let executors = if serves && first_page { vec![info] } else { vec![] };
            RegistryResponse::Executors { executors, next_cursor: None }
        }
        RegistryRequest::ListModels { cursor, .. } => {
            let mut models: Vec<ModelSummary> = offers
                .iter()
                .filter(|o| cursor.as_ref().is_none_or(|c| o.model > *c))
                .map(|o| ModelSummary {
                    model: o.model.clone(),
                    executors: 1,
                    price_per_input_token: (o.price_per_input_token, o.price_per_input_token),
                    price_per_output_token: (o.price_per_output_token, o.price_per_output_token),
                    max_context: o.context_length,
                })
                .collect();
            models.sort_by(|a, b| a.model.cmp(&b.model));
            RegistryResponse::Models { models, next_cursor: None }
        }
    }
}

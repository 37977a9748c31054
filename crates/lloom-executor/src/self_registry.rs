//! Answers registry queries about this executor alone, so a client that reaches it directly
//! (a known address, or mDNS on a LAN with no validator up) learns its signed offers without
//! any validator. The answers carry the executor's own latest signed announcement, which the
//! client verifies like one relayed by a validator.

use lloom_core::registry_query::{ExecutorInfo, ModelSummary, RegistryRequest, RegistryResponse};
use lloom_core::{PeerId, SignedAnnouncement, unix_now};

/// The answer to `request` from the announcement signed last by the executor `me`.
pub(crate) fn answer(
    request: &RegistryRequest,
    latest: Option<SignedAnnouncement>,
    me: &PeerId,
) -> RegistryResponse {
    let Some(announcement) = latest.filter(|a| !a.commitment.withdrawn) else {
        // Nothing signed yet (or withdrawn): an empty answer, not a refusal, so a client that
        // bootstraps from this executor while it starts connects and finds it a moment later.
        return match request {
            RegistryRequest::Executor { .. } => RegistryResponse::Executor(None),
            RegistryRequest::ListModels { .. } => {
                RegistryResponse::Models { models: vec![], next_cursor: None }
            }
            RegistryRequest::Snapshot { .. } | RegistryRequest::FindExecutors(_) => {
                RegistryResponse::Executors { executors: vec![], next_cursor: None }
            }
        };
    };
    let info = ExecutorInfo { peer_id: me.to_string(), last_seen: unix_now(), announcement };
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

#[cfg(test)]
mod tests {
    use super::*;
    use lloom_core::registry_query::FindExecutors;
    use lloom_core::{AnnouncementBody, DomainConfig, ExecutorLoad, ModelOffer, NodeKey, U256};

    fn signed(key: &NodeKey, withdrawn: bool) -> SignedAnnouncement {
        let offer = |model: &str, price: u64| ModelOffer {
            model: model.into(),
            context_length: 4096,
            price_per_input_token: U256::from(price),
            price_per_output_token: U256::from(price),
            weights_sha256: None,
            quantization: None,
            capabilities: vec![],
        };
        let body = AnnouncementBody {
            offers: vec![offer("b", 5), offer("a", 1)],
            load: ExecutorLoad::default(),
            listen_addrs: vec![],
        };
        SignedAnnouncement::sign(key, DomainConfig::default(), 1, unix_now(), body, withdrawn)
            .unwrap()
    }

    #[test]
    fn an_executor_describes_only_itself() {
        let key = NodeKey::generate();
        let me = key.peer_id();
        let latest = Some(signed(&key, false));
        let ask = |request: RegistryRequest| answer(&request, latest.clone(), &me);

        let RegistryResponse::Executors { executors, next_cursor: None } =
            ask(RegistryRequest::Snapshot { cursor: None, limit: 10 })
        else {
            panic!("expected executors")
        };
        assert_eq!(executors.len(), 1);
        assert_eq!(executors[0].peer_id, me.to_string());
        assert_eq!(Some(executors[0].announcement.clone()), latest);
        let later = ask(RegistryRequest::Snapshot { cursor: Some(key.address()), limit: 10 });
        assert!(
            matches!(later, RegistryResponse::Executors { executors, .. } if executors.is_empty())
        );

        let find = |model: &str, max: Option<u64>| {
            let request = FindExecutors {
                model: model.into(),
                max_price_per_input_token: max.map(U256::from),
                limit: 10,
                ..FindExecutors::default()
            };
            match ask(RegistryRequest::FindExecutors(request)) {
                RegistryResponse::Executors { executors, .. } => executors.len(),
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!((find("a", None), find("b", Some(2)), find("c", None)), (1, 0, 0));

        let RegistryResponse::Models { models, .. } =
            ask(RegistryRequest::ListModels { cursor: None, limit: 10 })
        else {
            panic!("expected models")
        };
        let names: Vec<_> = models.iter().map(|m| m.model.as_str()).collect();
        assert_eq!(names, ["a", "b"]);

        let other = NodeKey::generate().address();
        assert!(matches!(
            ask(RegistryRequest::Executor { executor: other }),
            RegistryResponse::Executor(None)
        ));
        assert!(matches!(
            ask(RegistryRequest::Executor { executor: key.address() }),
            RegistryResponse::Executor(Some(_))
        ));

        // Before the first announcement, and after withdrawing, it has nothing to say: empty
        // answers (a refusal would fail a client that bootstraps from it while it starts).
        let snapshot = RegistryRequest::Snapshot { cursor: None, limit: 10 };
        let empty = |r: RegistryResponse| match r {
            RegistryResponse::Executors { executors, next_cursor: None } => executors.is_empty(),
            RegistryResponse::Models { models, next_cursor: None } => models.is_empty(),
            RegistryResponse::Executor(found) => found.is_none(),
            _ => false,
        };
        assert!(empty(answer(&snapshot, None, &me)));
        let gone = Some(signed(&key, true));
        assert!(empty(answer(&snapshot, gone.clone(), &me)));
        let find = RegistryRequest::FindExecutors(FindExecutors {
            model: "a".into(),
            limit: 10,
            ..FindExecutors::default()
        });
        assert!(empty(answer(&find, gone.clone(), &me)));
        let models = RegistryRequest::ListModels { cursor: None, limit: 10 };
        assert!(empty(answer(&models, None, &me)));
        let one = RegistryRequest::Executor { executor: key.address() };
        assert!(empty(answer(&one, gone, &me)));
    }
}

//! Answers to the registry query protocol.

use std::ops::Bound;

use lloom_core::registry_query::{
    ExecutorInfo, FindExecutors, MAX_PAGE, ModelSummary, RegistryRequest, RegistryResponse,
};
use lloom_core::{Address, ModelOffer, U256};

use super::{Entry, Registry};

fn page_size(limit: u32) -> usize {
    limit.clamp(1, MAX_PAGE) as usize
}

fn info(entry: &Entry) -> ExecutorInfo {
    ExecutorInfo {
        announcement: entry.announcement.clone(),
        peer_id: entry.peer_id.to_string(),
        last_seen: entry.last_seen,
    }
}

fn offer<'a>(entry: &'a Entry, model: &str) -> Option<&'a ModelOffer> {
    entry.announcement.body.offers.iter().find(|o| o.model == model)
}

fn after<T: Ord>(cursor: Option<T>) -> (Bound<T>, Bound<T>) {
    match cursor {
        Some(c) => (Bound::Excluded(c), Bound::Unbounded),
        None => (Bound::Unbounded, Bound::Unbounded),
    }
}

impl Registry {
    /// Answers one registry request.
    pub fn answer(&self, request: &RegistryRequest) -> RegistryResponse {
        match request {
            RegistryRequest::ListModels { cursor, limit } => {
                self.list_models(cursor.clone(), *limit)
            }
            RegistryRequest::FindExecutors(query) => self.find_executors(query),
            RegistryRequest::Executor { executor } => {
                RegistryResponse::Executor(self.executors.get(executor).map(|e| Box::new(info(e))))
            }
            RegistryRequest::Snapshot { cursor, limit } => self.snapshot(*cursor, *limit),
        }
    }

    /// Models on offer with executor counts and price ranges, by name.
    pub fn list_models(&self, cursor: Option<String>, limit: u32) -> RegistryResponse {
        let size = page_size(limit);
        let mut models = Vec::with_capacity(size);
        let mut range = self.by_model.range::<String, _>(after(cursor));
        for (model, executors) in range.by_ref().take(size) {
            models.push(self.summarize(model, executors));
        }
        let next_cursor = match range.next() {
            Some(_) => models.last().map(|m| m.model.clone()),
            None => None,
        };
        RegistryResponse::Models { models, next_cursor }
    }

    fn summarize(
        &self,
        model: &str,
        executors: &std::collections::BTreeSet<Address>,
    ) -> ModelSummary {
        let mut in_range = (U256::MAX, U256::ZERO);
        let mut out_range = (U256::MAX, U256::ZERO);
        let mut max_context = 0;
        let mut count = 0u32;
        for offer in
            executors.iter().filter_map(|a| self.executors.get(a)).filter_map(|e| offer(e, model))
        {
            count += 1;
            in_range = (
                in_range.0.min(offer.price_per_input_token),
                in_range.1.max(offer.price_per_input_token),
            );
            out_range = (
                out_range.0.min(offer.price_per_output_token),
                out_range.1.max(offer.price_per_output_token),
            );
            max_context = max_context.max(offer.context_length);
        }
        ModelSummary {
            model: model.to_owned(),
            executors: count,
            price_per_input_token: in_range,
            price_per_output_token: out_range,
            max_context,
        }
    }

    /// Executors serving a model that pass the filters, by address.
    pub fn find_executors(&self, query: &FindExecutors) -> RegistryResponse {
        let size = page_size(query.limit);
        let Some(candidates) = self.by_model.get(&query.model) else {
            return RegistryResponse::Executors { executors: Vec::new(), next_cursor: None };
        };
        let accepts = |o: &ModelOffer| {
            query.max_price_per_input_token.is_none_or(|max| o.price_per_input_token <= max)
                && query
                    .max_price_per_output_token
                    .is_none_or(|max| o.price_per_output_token <= max)
                && query.min_context.is_none_or(|min| o.context_length >= min)
        };
        let mut matching = candidates
            .range(after(query.cursor))
            .filter_map(|a| self.executors.get(a))
            .filter(|e| offer(e, &query.model).is_some_and(accepts));
        let executors: Vec<ExecutorInfo> = matching.by_ref().take(size).map(info).collect();
        let next_cursor = match matching.next() {
            Some(_) => executors.last().map(|e| e.announcement.executor()),
            None => None,
        };
        RegistryResponse::Executors { executors, next_cursor }
    }

    /// Every live announcement, by executor address.
    pub fn snapshot(&self, cursor: Option<Address>, limit: u32) -> RegistryResponse {
        let size = page_size(limit);
        let mut range = self.executors.range(after(cursor));
        let executors: Vec<ExecutorInfo> =
            range.by_ref().take(size).map(|(_, e)| info(e)).collect();
        let next_cursor = match range.next() {
            Some(_) => executors.last().map(|e| e.announcement.executor()),
            None => None,
        };
        RegistryResponse::Executors { executors, next_cursor }
    }
}

//! What one chat has committed the client to pay, and the checkpoint of an attempt that is
//! cancelled mid-stream.
//!
//! An executor can settle any verified checkpoint it sent, so a chat owes the last checkpoint
//! of every attempt that broke after streaming began, the final answer if one came, and, when
//! the chat is dropped mid-stream, the last checkpoint of the attempt under way. The client
//! keeps each of these in its receipt store; [`ChatCost`] adds them up for the chat's reader
//! (the gateway charges API keys with it).

use std::sync::{Mutex, PoisonError};

use lloom_core::{SignedRequest, SignedResponse, U256};

/// The running cost of one chat, shared by its task and its [`crate::ChatStream`].
#[derive(Debug, Default)]
pub(crate) struct ChatCost {
    state: Mutex<CostState>,
}

#[derive(Debug, Default)]
struct CostState {
    /// What attempts that ended committed the client to (their checkpoints or final answer).
    ended: U256,
    /// The latest verified checkpoint of the attempt under way.
    current: U256,
}

impl ChatCost {
    fn state(&self) -> std::sync::MutexGuard<'_, CostState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The attempt under way sent a verified checkpoint worth `cost`.
    pub(crate) fn checkpoint(&self, cost: U256) {
        self.state().current = cost;
    }

    /// The attempt under way ended, committing the client to `cost` (its last checkpoint, its
    /// final answer, or nothing).
    pub(crate) fn attempt_ended(&self, cost: U256) {
        let mut state = self.state();
        state.ended = state.ended.saturating_add(cost);
        state.current = U256::ZERO;
    }

    /// Everything so far.
    pub(crate) fn total(&self) -> U256 {
        let state = self.state();
        state.ended.saturating_add(state.current)
    }
}

/// Where a checkpoint goes when the attempt holding it is dropped mid-stream.
pub(crate) trait KeepCheckpoint: Sync {
    /// Keeps `checkpoint` of `request` (from a task of its own: this runs in a `Drop`).
    fn keep_later(&self, request: SignedRequest, checkpoint: SignedResponse);
}

/// The latest verified checkpoint of the attempt under way. If the attempt is dropped while
/// it holds one (its chat was cancelled), the checkpoint goes to its keeper; an attempt that
/// ends hands it back with [`OpenCheckpoint::close`].
pub(crate) struct OpenCheckpoint<'a> {
    latest: Option<(SignedRequest, SignedResponse)>,
    cost: &'a ChatCost,
    keeper: &'a dyn KeepCheckpoint,
}

impl<'a> OpenCheckpoint<'a> {
    /// No checkpoint yet; `keeper` takes the one held when the attempt is dropped.
    pub(crate) fn new(cost: &'a ChatCost, keeper: &'a dyn KeepCheckpoint) -> Self {
        Self { latest: None, cost, keeper }
    }

    /// A verified checkpoint of `request` arrived.
    pub(crate) fn record(&mut self, request: &SignedRequest, checkpoint: &SignedResponse) {
        self.cost.checkpoint(checkpoint.commitment.totalCost);
        match &mut self.latest {
            Some((_, latest)) => *latest = checkpoint.clone(),
            None => self.latest = Some((request.clone(), checkpoint.clone())),
        }
    }

    /// The attempt ended: its last checkpoint, if any, is the caller's to keep.
    pub(crate) fn close(mut self) -> Option<SignedResponse> {
        self.latest.take().map(|(_, checkpoint)| checkpoint)
    }
}

impl Drop for OpenCheckpoint<'_> {
    fn drop(&mut self) {
        if let Some((request, checkpoint)) = self.latest.take() {
            self.keeper.keep_later(request, checkpoint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lloom_core::{Address, B256, DomainConfig, NodeKey, RequestCommitment, ResponseCommitment};

    fn request() -> SignedRequest {
        let commitment = RequestCommitment {
            client: Address::ZERO,
            executor: Address::ZERO,
            model: "m".into(),
            requestHash: B256::ZERO,
            maxInputTokens: 10,
            maxOutputTokens: 10,
            pricePerInputToken: U256::from(1),
            pricePerOutputToken: U256::from(1),
            nonce: 1,
            deadline: 0,
        };
        let body = lloom_core::RequestBody { messages: vec![], sampling: Default::default() };
        SignedRequest::sign(&NodeKey::generate(), DomainConfig::default(), commitment, body)
            .unwrap()
    }

    fn checkpoint(cost: u64) -> SignedResponse {
        let commitment = ResponseCommitment {
            requestDigest: B256::ZERO,
            client: Address::ZERO,
            executor: Address::ZERO,
            model: "m".into(),
            contentHash: B256::ZERO,
            inputTokens: 1,
            outputTokens: 2,
            totalCost: U256::from(cost),
            finishReason: 0,
            timestamp: 0,
        };
        SignedResponse::sign(&NodeKey::generate(), DomainConfig::default(), commitment).unwrap()
    }

    #[test]
    fn a_chat_owes_its_ended_attempts_and_the_checkpoint_under_way() {
        let cost = ChatCost::default();
        cost.checkpoint(U256::from(10));
        cost.checkpoint(U256::from(16)); // a later checkpoint replaces the earlier one
        assert_eq!(cost.total(), U256::from(16));
        cost.attempt_ended(U256::from(16)); // the stream broke: its last checkpoint is owed
        cost.checkpoint(U256::from(4));
        assert_eq!(cost.total(), U256::from(20));
        cost.attempt_ended(U256::from(30)); // the next attempt answered for 30
        assert_eq!(cost.total(), U256::from(46));
    }

    #[test]
    fn a_checkpoint_held_when_the_attempt_is_dropped_goes_to_the_keeper() {
        struct Kept(Mutex<Vec<U256>>);
        impl KeepCheckpoint for Kept {
            fn keep_later(&self, _: SignedRequest, checkpoint: SignedResponse) {
                self.0.lock().unwrap().push(checkpoint.commitment.totalCost);
            }
        }
        let kept = Kept(Mutex::new(Vec::new()));
        let cost = ChatCost::default();
        let request = request();
        let mut open = OpenCheckpoint::new(&cost, &kept);
        open.record(&request, &checkpoint(7));
        open.record(&request, &checkpoint(9));
        drop(open);
        assert_eq!(*kept.0.lock().unwrap(), vec![U256::from(9)]);
        assert_eq!(cost.total(), U256::from(9));
        // An attempt that ends hands its checkpoint back instead.
        let mut open = OpenCheckpoint::new(&cost, &kept);
        open.record(&request, &checkpoint(3));
        assert_eq!(open.close().map(|cp| cp.commitment.totalCost), Some(U256::from(3)));
        // And one without a checkpoint keeps nothing.
        drop(OpenCheckpoint::new(&cost, &kept));
        assert_eq!(kept.0.lock().unwrap().len(), 1);
    }
}

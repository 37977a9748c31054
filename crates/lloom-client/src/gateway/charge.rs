//! A completion whose cost is charged to its API key however it ends: answered, failed, or
//! dropped because the HTTP client went away mid-answer.

use std::sync::Arc;

use super::GatewayState;
use super::auth::KeyName;
use crate::client::{ChatEvent, ChatStream, Receipt};
use crate::error::{Error, Result};

/// A chat under way for `key`. Its cost ([`ChatStream::cost`]: the final answer and the
/// checkpoints executors can settle) is charged once, by [`KeyedAnswer::settle`] or, when it is
/// dropped before, by a task that cancels the chat, waits for it to stop and charges what it
/// cost.
pub(super) struct KeyedAnswer {
    answer: Option<ChatStream>,
    gateway: Arc<GatewayState>,
    key: Option<KeyName>,
}

impl KeyedAnswer {
    pub(super) fn new(
        answer: ChatStream,
        gateway: Arc<GatewayState>,
        key: Option<KeyName>,
    ) -> Self {
        Self { answer: Some(answer), gateway, key }
    }

    /// The key the answer is for.
    pub(super) fn key(&self) -> Option<&KeyName> {
        self.key.as_ref()
    }

    /// The gateway it is answered by.
    pub(super) fn gateway(&self) -> &GatewayState {
        &self.gateway
    }

    /// The next event of the chat (`None` once settled).
    pub(super) async fn next(&mut self) -> Option<Result<ChatEvent>> {
        self.answer.as_mut()?.next().await
    }

    /// Reads the rest of the answer and returns its receipt ([`ChatStream::receipt`]).
    pub(super) async fn receipt(&mut self) -> Result<Receipt> {
        match self.answer.as_mut() {
            Some(answer) => answer.receipt().await,
            None => Err(Error::State("the answer was already settled".into())),
        }
    }

    /// Charges the key what the chat cost; call it once the chat has ended (after `Done` or an
    /// error), before the answer's last bytes are sent.
    pub(super) async fn settle(&mut self) {
        if let Some(answer) = self.answer.take() {
            let cost = answer.cancel().await;
            self.gateway.charge(self.key.as_ref(), cost).await;
        }
    }
}

impl Drop for KeyedAnswer {
    fn drop(&mut self) {
        let Some(answer) = self.answer.take() else { return };
        if self.key.is_none() {
            return; // nothing to charge; dropping the answer cancels it
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (gateway, key) = (self.gateway.clone(), self.key.take());
        runtime.spawn(async move {
            let cost = answer.cancel().await;
            gateway.charge(key.as_ref(), cost).await;
        });
    }
}

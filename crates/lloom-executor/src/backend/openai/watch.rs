//! Watching the server while serving: a probe every interval keeps the backend's health and
//! context current, so that the executor withdraws its offer while the server is down (clients
//! stop routing to it instead of each paying a failed attempt), offers it again once the
//! server answers, and announces a context the server changed (Ollama and LM Studio report
//! theirs only while the model is loaded, and may load it again with another).

use std::time::Duration;

use super::OpenAiBackend;
use crate::backend::Backend;

/// What a probe found, as far as the offer is concerned.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    healthy: bool,
    context: Option<u32>,
}

impl OpenAiBackend {
    /// Probes the server ([`OpenAiBackend::probe`]) every `every`, forever: run it as a task
    /// and abort it to stop. Each probe is bounded by the read timeout; one runs at a time.
    /// Logs when the server stops answering, answers again, or reports another context.
    pub async fn watch(&self, every: Duration) {
        let mut last = self.seen();
        loop {
            tokio::time::sleep(every).await;
            let probed = self.probe().await;
            let now = self.seen();
            match probed {
                Err(e) if last.healthy => tracing::warn!(
                    model = %self.config.served_model,
                    "the model's server does not answer; the offer is withdrawn until it does: {e}"
                ),
                Ok(_) if !last.healthy => tracing::info!(
                    model = %self.config.served_model,
                    "the model's server answers again; the model is offered"
                ),
                _ => {}
            }
            if now.context != last.context
                && let Some(tokens) = now.context
            {
                tracing::info!(
                    model = %self.config.served_model,
                    "the server now gives a request {tokens} tokens of context; announced"
                );
            }
            last = now;
        }
    }

    fn seen(&self) -> Seen {
        Seen { healthy: self.health().is_ok(), context: self.context_length() }
    }
}

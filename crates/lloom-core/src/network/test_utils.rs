//! In-process multi-node harness (feature `test-utils`): real swarms on loopback, port 0,
//! mDNS off, and waits that always have a time limit.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{NetworkConfig, NetworkEvent, NetworkHandle, start};
use crate::error::{Error, Result};
use crate::identity::NodeKey;
use crate::verify::VerifyPolicy;

/// Default limit of every wait in the harness.
pub const WAIT: Duration = Duration::from_secs(15);

/// A running node: its key, handle, events and event-loop task.
#[derive(Debug)]
pub struct TestNode {
    /// The node's key.
    pub key: NodeKey,
    /// Its network handle.
    pub handle: NetworkHandle,
    /// Its event stream.
    pub events: mpsc::Receiver<NetworkEvent>,
    /// The event loop task.
    pub task: JoinHandle<()>,
}

impl TestNode {
    /// Starts a node with a fresh key on loopback (mDNS off), bootstrapping from `bootstrap`.
    pub async fn spawn(server_mode: bool, bootstrap: Vec<super::Multiaddr>) -> Result<Self> {
        let config = NetworkConfig { server_mode, bootstrap, ..NetworkConfig::local() };
        Self::spawn_with(config).await
    }

    /// Starts a node with a fresh key and `config`.
    pub async fn spawn_with(config: NetworkConfig) -> Result<Self> {
        let key = NodeKey::generate();
        let (handle, events, event_loop) = start(&key, config, VerifyPolicy::default()).await?;
        let task = tokio::spawn(event_loop.run());
        Ok(Self { key, handle, events, task })
    }

    /// The node's first listen address, with `/p2p/<id>`.
    pub async fn addr(&self) -> Result<super::Multiaddr> {
        self.handle.listen_addrs().await?.into_iter().next().ok_or(Error::NetworkStopped)
    }

    /// Waits (at most [`WAIT`]) for the first event `pick` maps to `Some`, skipping others.
    pub async fn wait_for<T>(
        &mut self,
        mut pick: impl FnMut(NetworkEvent) -> Option<T>,
    ) -> Result<T> {
        let events = &mut self.events;
        tokio::time::timeout(WAIT, async {
            while let Some(event) = events.recv().await {
                if let Some(found) = pick(event) {
                    return Ok(found);
                }
            }
            Err(Error::NetworkStopped)
        })
        .await
        .map_err(|_| Error::Timeout(WAIT))?
    }
}

impl NetworkHandle {
    /// Publishes arbitrary bytes on the announcement topic, to test how peers treat garbage.
    pub async fn publish_raw_gossip(&self, data: Vec<u8>) -> Result<()> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.commands
            .send(super::handle::Command::PublishRaw { data, reply })
            .await
            .map_err(|_| Error::NetworkStopped)?;
        answer.await.map_err(|_| Error::NetworkStopped)?
    }
}

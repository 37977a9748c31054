//! The nonce rule's store access: in memory when the nonce store defers its writes, through
//! the group-commit writer when every write is synced.

use std::sync::Arc;
use std::time::Duration;

use lloom_core::{Address, ReplayStore};

use lloom_core::group_commit::{CommitDelay, GroupCommit};

/// `(client, nonce, deadline)` to record, and whether it was new.
type NonceWriter = GroupCommit<(Address, u64, u64), lloom_core::Result<()>>;

/// Records accepted nonces and refuses replays.
pub(crate) enum NonceGate {
    /// Deferred writes: the check is a lookup under a lock, done on the caller's task.
    Held(Arc<ReplayStore>),
    /// Synced writes: concurrent checks share one durable transaction on a writer thread.
    Synced(NonceWriter),
}

impl NonceGate {
    /// A gate for `store`: `deferred` says whether the store holds nonces in memory; `delay`
    /// is the writer's commit delay (see [`GroupCommit::spawn`]).
    pub(crate) fn new(
        store: Arc<ReplayStore>,
        deferred: bool,
        capacity: usize,
        delay: Duration,
    ) -> std::io::Result<Self> {
        if deferred {
            return Ok(Self::Held(store));
        }
        let writer = GroupCommit::spawn(
            "lloom-nonces",
            capacity,
            MAX_GROUP,
            CommitDelay::new(delay),
            move |ops| match store.check_and_record_batch(&ops, lloom_core::unix_now()) {
                Ok(results) => results,
                Err(e) => {
                    let message = format!("replay store: {e}");
                    ops.iter()
                        .map(|_| Err(lloom_core::Error::Io(std::io::Error::other(message.clone()))))
                        .collect()
                }
            },
        )?;
        Ok(Self::Synced(writer))
    }

    /// Records `(client, nonce)`; `Err(NonceReplayed)` if it was seen before, `None` if the
    /// writer has stopped.
    pub(crate) async fn record(
        &self,
        client: Address,
        nonce: u64,
        deadline: u64,
    ) -> Option<lloom_core::Result<()>> {
        match self {
            Self::Held(store) => {
                Some(store.check_and_record(client, nonce, deadline, lloom_core::unix_now()))
            }
            Self::Synced(writer) => writer.submit((client, nonce, deadline)).await,
        }
    }
}

/// Most writes committed in one transaction.
pub(crate) const MAX_GROUP: usize = 256;

//! Group commit: one writer thread per store takes every write waiting in its queue and
//! applies them in a single durable transaction, so concurrent requests share one disk sync
//! instead of queueing for the store's single writer one sync at a time. Each caller still gets
//! its own result only after the transaction holding its write has committed.

use std::sync::Mutex;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

/// A queue of writes in front of a writer thread.
pub(crate) struct GroupCommit<Op, Out> {
    jobs: Option<mpsc::Sender<(Op, oneshot::Sender<Out>)>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<Op: Send + 'static, Out: Send + 'static> GroupCommit<Op, Out> {
    /// Starts the writer; `apply` commits a batch and returns one output per operation, in order.
    pub(crate) fn spawn(
        name: &str,
        capacity: usize,
        max_batch: usize,
        apply: impl Fn(Vec<Op>) -> Vec<Out> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (jobs, mut queue) = mpsc::channel::<(Op, oneshot::Sender<Out>)>(capacity.max(1));
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            while let Some(first) = queue.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let (ops, replies): (Vec<Op>, Vec<oneshot::Sender<Out>>) =
                    batch.into_iter().unzip();
                for (reply, out) in replies.into_iter().zip(apply(ops)) {
                    let _ = reply.send(out);
                }
            }
        })?;
        Ok(Self { jobs: Some(jobs), thread: Mutex::new(Some(thread)) })
    }

    /// Queues `op` and waits until its batch has committed; `None` if the writer has stopped.
    pub(crate) async fn submit(&self, op: Op) -> Option<Out> {
        let (reply, answer) = oneshot::channel();
        self.jobs.as_ref()?.send((op, reply)).await.ok()?;
        answer.await.ok()
    }
}

impl<Op, Out> Drop for GroupCommit<Op, Out> {
    fn drop(&mut self) {
        // Closing the queue ends the writer after its last batch; wait so the store is closed.
        drop(self.jobs.take());
        if let Ok(mut thread) = self.thread.lock()
            && let Some(handle) = thread.take()
        {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_batches_and_each_gets_its_result() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let writer = Arc::new(
            GroupCommit::spawn("test-writer", 1024, 64, move |ops: Vec<u32>| {
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(2)); // a disk sync
                ops.into_iter().map(|n| n * 2).collect()
            })
            .unwrap(),
        );
        let tasks: Vec<_> = (0..200u32)
            .map(|n| {
                let writer = writer.clone();
                tokio::spawn(async move { (n, writer.submit(n).await) })
            })
            .collect();
        for task in tasks {
            let (n, out) = task.await.unwrap();
            assert_eq!(out, Some(n * 2));
        }
        assert!(batches.load(Ordering::SeqCst) < 200, "writes were grouped");
    }
}

//! Group commit: one writer thread per store takes every write waiting in its queue and
//! applies them in a single durable transaction, so concurrent requests share one disk sync
//! instead of queueing for the store's single writer one sync at a time. Each caller still gets
//! its own result only after the transaction holding its write has committed.
//!
//! Like PostgreSQL's `commit_delay`, a writer that finds other writes already waiting behind
//! the first one waits a little for more before it commits: under load the sync count drops
//! and each sync carries more writes. Like its `commit_siblings`, a writer holding a single
//! write also waits when enough other operations are under way to send theirs soon (see
//! [`CommitDelay::with_siblings`]). A lone write on an idle store never waits.

use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// Operations under way, beyond those in the batch, that make a single write wait for
/// company (PostgreSQL's `commit_siblings` defaults to 5 other transactions).
pub const COMMIT_SIBLINGS: usize = 4;

/// When a writer waits for more writes before it commits.
pub struct CommitDelay {
    wait: Duration,
    in_progress: Option<Box<dyn Fn() -> usize + Send>>,
}

impl CommitDelay {
    /// Never waits: every batch commits as soon as the writer takes it.
    pub fn none() -> Self {
        Self { wait: Duration::ZERO, in_progress: None }
    }

    /// Waits `wait` when the batch the writer took already holds more than one write.
    pub fn new(wait: Duration) -> Self {
        Self { wait, in_progress: None }
    }

    /// Also waits with a single write when `in_progress()`, the operations under way that
    /// will each submit a write (the batch's own included), exceeds the batch by at least
    /// [`COMMIT_SIBLINGS`]: a busy store then syncs once for many writes instead of once for
    /// each that happens to arrive alone.
    pub fn with_siblings(self, in_progress: impl Fn() -> usize + Send + 'static) -> Self {
        Self { in_progress: Some(Box::new(in_progress)), ..self }
    }

    /// Whether a batch of `len` writes (at most `max`) waits for more.
    fn waits(&self, len: usize, max: usize) -> bool {
        if self.wait.is_zero() || len >= max {
            return false;
        }
        len > 1
            || self
                .in_progress
                .as_ref()
                .is_some_and(|in_progress| in_progress() >= len + COMMIT_SIBLINGS)
    }
}

/// A queue of writes in front of a writer thread (the thread ends when this is dropped, after
/// its last batch).
pub struct GroupCommit<Op, Out> {
    jobs: Option<mpsc::Sender<(Op, oneshot::Sender<Out>)>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<Op: Send + 'static, Out: Send + 'static> GroupCommit<Op, Out> {
    /// Starts the writer; `apply` commits a batch and returns one output per operation, in order.
    /// `delay` says when a batch waits for more writes before it commits.
    pub fn spawn(
        name: &str,
        capacity: usize,
        max_batch: usize,
        delay: CommitDelay,
        apply: impl Fn(Vec<Op>) -> Vec<Out> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (jobs, mut queue) = mpsc::channel::<(Op, oneshot::Sender<Out>)>(capacity.max(1));
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            while let Some(first) = queue.blocking_recv() {
                let mut batch = vec![first];
                take_waiting(&mut queue, &mut batch, max_batch);
                if delay.waits(batch.len(), max_batch) {
                    std::thread::sleep(delay.wait);
                    take_waiting(&mut queue, &mut batch, max_batch);
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
    pub async fn submit(&self, op: Op) -> Option<Out> {
        let (reply, answer) = oneshot::channel();
        self.jobs.as_ref()?.send((op, reply)).await.ok()?;
        answer.await.ok()
    }
}

/// Moves the writes waiting in `queue` into `batch`, up to `max_batch` in all.
fn take_waiting<T>(queue: &mut mpsc::Receiver<T>, batch: &mut Vec<T>, max_batch: usize) {
    while batch.len() < max_batch {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
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
            GroupCommit::spawn(
                "test-writer",
                1024,
                64,
                CommitDelay::none(),
                move |ops: Vec<u32>| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(2)); // a disk sync
                    ops.into_iter().map(|n| n * 2).collect()
                },
            )
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_write_commits_at_once_whatever_the_delay() {
        let long = Duration::from_secs(60);
        // Without siblings, and with fewer under way than `COMMIT_SIBLINGS` beyond it.
        let few = COMMIT_SIBLINGS;
        for delay in [CommitDelay::new(long), CommitDelay::new(long).with_siblings(move || few)] {
            let writer =
                GroupCommit::spawn("test-writer", 16, 64, delay, |ops| ops).expect("starts");
            let out = tokio::time::timeout(Duration::from_secs(20), writer.submit(7u32)).await;
            assert_eq!(out.expect("did not wait for the delay"), Some(7));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_write_waits_for_company_while_enough_others_are_under_way() {
        let wait = Duration::from_millis(300);
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let delay = CommitDelay::new(wait).with_siblings(|| 1 + COMMIT_SIBLINGS);
        let writer = GroupCommit::spawn("test-writer", 16, 64, delay, move |ops: Vec<u32>| {
            seen.lock().expect("not poisoned").push(ops.clone());
            ops
        })
        .expect("starts");
        let writer = Arc::new(writer);
        let started = std::time::Instant::now();
        let first = tokio::spawn({
            let writer = writer.clone();
            async move { writer.submit(1).await }
        });
        // Well inside the wait, a second write arrives and joins the first one's batch.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(writer.submit(2).await, Some(2));
        assert_eq!(first.await.expect("joins"), Some(1));
        assert!(started.elapsed() >= wait, "committed after {:?}", started.elapsed());
        assert_eq!(*batches.lock().expect("not poisoned"), vec![vec![1, 2]]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_waiting_together_wait_the_delay_for_more() {
        let (started, first_started) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Mutex::new(released);
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let writer = Arc::new(
            GroupCommit::spawn(
                "test-writer",
                64,
                64,
                CommitDelay::new(Duration::from_secs(1)),
                move |ops: Vec<u32>| {
                    if ops == [0] {
                        // The first batch holds the writer until the test has queued two writes.
                        let _ = started.send(());
                        let _ = released.lock().map(|r| r.recv());
                    }
                    seen.lock().expect("not poisoned").push(ops.len());
                    ops
                },
            )
            .expect("starts"),
        );
        let submit = |n: u32| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.submit(n).await })
        };
        let gate = submit(0);
        tokio::task::spawn_blocking(move || first_started.recv())
            .await
            .expect("joins")
            .expect("starts");
        let queued: Vec<_> = (1..=2).map(submit).collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        release.send(()).expect("writer waits");
        // Within the delay the writer is still gathering: these join the same batch.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let later: Vec<_> = (3..=7).map(submit).collect();
        for (n, task) in (0..).zip(std::iter::once(gate).chain(queued).chain(later)) {
            assert_eq!(task.await.expect("joins"), Some(n));
        }
        assert_eq!(*sizes.lock().expect("not poisoned"), vec![1, 7]);
    }
}

//! One llama.cpp computation at a time on the CPU, across every engine in the process.
//!
//! llama.cpp is built without OpenMP (see the workspace manifest), so ggml's worker threads
//! wait for each other at a barrier by spinning. Two engines decoding at once put twice as
//! many spinning threads on the cores as there are cores, and every barrier then waits for a
//! thread the kernel has descheduled: measured on 2 cores, two concurrent single streams fell
//! from about 105 to about 4 tok/s each. Taking turns, each decode step runs on all cores,
//! and the engines share the machine's speed instead of destroying it.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Tickets handed out and the ticket being served: engines get the CPU in the order they
/// asked for it, so one that loops straight back cannot starve the others.
struct Tickets {
    next: u64,
    serving: u64,
}

static TICKETS: Mutex<Tickets> = Mutex::new(Tickets { next: 0, serving: 0 });
static TURN_ENDED: Condvar = Condvar::new();

fn tickets() -> MutexGuard<'static, Tickets> {
    // Two counters that are never left half-updated: a panic elsewhere breaks nothing here.
    TICKETS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The CPU's turn, held while one engine runs a decode step; the others wait, first come
/// first served. Released on drop.
pub(super) struct CpuTurn(());

impl CpuTurn {
    /// Waits until every engine that asked earlier has had its turn.
    pub(super) fn take() -> Self {
        let mut state = tickets();
        let ticket = state.next;
        state.next += 1;
        while state.serving != ticket {
            state = TURN_ENDED.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        Self(())
    }
}

impl Drop for CpuTurn {
    fn drop(&mut self) {
        tickets().serving += 1;
        TURN_ENDED.notify_all();
    }
}

/// Whether an engine computes (partly) on the CPU, and so must take turns: always in a build
/// without GPU support; in a `cuda` build, unless every one of the model's layers is offloaded.
pub(super) fn computes_on_cpu(gpu_layers: u32, model_layers: u32) -> bool {
    !cfg!(feature = "cuda") || gpu_layers < model_layers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The turns are process-wide: the tests that take them run one at a time.
    static ONE_TEST_AT_A_TIME: Mutex<()> = Mutex::new(());

    #[test]
    fn only_a_fully_offloaded_model_in_a_cuda_build_skips_the_turns() {
        assert!(computes_on_cpu(0, 30));
        assert!(computes_on_cpu(29, 30));
        assert_eq!(computes_on_cpu(30, 30), !cfg!(feature = "cuda"));
        assert_eq!(computes_on_cpu(999, 30), !cfg!(feature = "cuda"));
    }

    #[test]
    fn a_turn_excludes_the_next_until_it_is_dropped() {
        let _serial = ONE_TEST_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let first = CpuTurn::take();
        let (taken_tx, taken_rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _second = CpuTurn::take();
            let _ = taken_tx.send(());
        });
        assert!(taken_rx.recv_timeout(std::time::Duration::from_millis(100)).is_err());
        drop(first);
        assert!(taken_rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok());
        waiter.join().unwrap();
    }

    #[test]
    fn turns_are_served_in_the_order_they_were_asked_for() {
        let _serial = ONE_TEST_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let first = CpuTurn::take();
        let (order_tx, order_rx) = std::sync::mpsc::channel();
        let mut waiters = Vec::new();
        for n in 0..3 {
            let order = order_tx.clone();
            waiters.push(std::thread::spawn(move || {
                let _turn = CpuTurn::take();
                let _ = order.send(n);
            }));
            // Each waiter holds its ticket before the next one asks.
            let asked = tickets().next;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while tickets().next == asked && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        drop(first);
        let order: Vec<i32> = (0..3)
            .map(|_| order_rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(order, vec![0, 1, 2]);
        for waiter in waiters {
            waiter.join().unwrap();
        }
    }
}

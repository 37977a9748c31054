//! The CPU's cores, shared out among the engines of the process one decode step at a time.
//!
//! llama.cpp is built without OpenMP (see the workspace manifest), so ggml's worker threads
//! wait for each other at a barrier by spinning. Two engines decoding at once with more
//! threads in all than the machine has cores make every barrier wait for a thread the kernel
//! has descheduled: measured on 2 cores, two concurrent single streams of 2 threads each fell
//! from about 105 to about 4 tok/s. So each decode step first takes as many cores as its
//! engine has threads; steps whose threads fit together run side by side (two engines of 8
//! threads on 16 cores), the others wait their turn, first come first served.

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

/// Cores handed out to decode steps, with a queue of tickets so that a step needing many
/// cores is not overtaken forever by steps needing few.
#[derive(Debug)]
struct CoreBudget {
    capacity: usize,
    state: Mutex<Tickets>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Tickets {
    /// The next ticket to hand out.
    next: u64,
    /// The oldest ticket still waiting (or the next one, when none waits).
    head: u64,
    /// Cores held by running steps.
    in_use: usize,
}

impl CoreBudget {
    fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), state: Mutex::default(), changed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Tickets> {
        // Counters that are never left half-updated: a panic elsewhere breaks nothing here.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until every earlier ticket has its cores and `cores` more fit (a step wanting
    /// more than the machine has runs alone).
    fn take(&self, cores: usize) -> CpuTurn<'_> {
        let cores = cores.max(1);
        let mut state = self.lock();
        let ticket = state.next;
        state.next += 1;
        while state.head != ticket || (state.in_use > 0 && state.in_use + cores > self.capacity) {
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.head += 1;
        state.in_use += cores;
        drop(state);
        // The next ticket may fit beside this one.
        self.changed.notify_all();
        CpuTurn { budget: self, cores }
    }
}

/// Cores held by one decode step; given back on drop.
#[derive(Debug)]
pub(super) struct CpuTurn<'a> {
    budget: &'a CoreBudget,
    cores: usize,
}

impl CpuTurn<'static> {
    /// Waits for `threads` of this machine's cores (see the module documentation).
    pub(super) fn take(threads: usize) -> Self {
        static MACHINE: OnceLock<CoreBudget> = OnceLock::new();
        MACHINE
            .get_or_init(|| {
                CoreBudget::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
            })
            .take(threads)
    }
}

impl Drop for CpuTurn<'_> {
    fn drop(&mut self) {
        self.budget.lock().in_use -= self.cores;
        self.budget.changed.notify_all();
    }
}

/// Whether an engine computes (partly) on the CPU, and so must take turns: always in a build
/// without GPU support; in a `cuda` build, unless every one of the model's layers is offloaded.
pub(super) fn computes_on_cpu(gpu_layers: u32, model_layers: u32) -> bool {
    !cfg!(feature = "cuda") || gpu_layers < model_layers
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc::{Receiver, channel};
    use std::time::{Duration, Instant};

    use super::*;

    /// Takes `cores` of `budget` on a thread of its own, holds them until told, and reports
    /// `name` once it has them.
    fn step(
        budget: &Arc<CoreBudget>,
        cores: usize,
        name: &'static str,
        started: &std::sync::mpsc::Sender<&'static str>,
    ) -> std::sync::mpsc::Sender<()> {
        let (release_tx, release_rx) = channel::<()>();
        let (budget, started) = (budget.clone(), started.clone());
        std::thread::spawn(move || {
            let _turn = budget.take(cores);
            let _ = started.send(name);
            let _ = release_rx.recv();
        });
        release_tx
    }

    /// Waits until `budget` has handed out `tickets` tickets (the steps asked, in this order).
    fn asked(budget: &CoreBudget, tickets: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while budget.lock().next < tickets && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The next step to get its cores within 200 ms (`None`: every other step still waits).
    fn next_started(started: &Receiver<&'static str>) -> Option<&'static str> {
        started.recv_timeout(Duration::from_millis(200)).ok()
    }

    /// The next step to get its cores, waiting as long as a loaded machine may need.
    fn awaited(started: &Receiver<&'static str>) -> Option<&'static str> {
        started.recv_timeout(Duration::from_secs(10)).ok()
    }

    #[test]
    fn only_a_fully_offloaded_model_in_a_cuda_build_skips_the_turns() {
        assert!(computes_on_cpu(0, 30));
        assert!(computes_on_cpu(29, 30));
        assert_eq!(computes_on_cpu(30, 30), !cfg!(feature = "cuda"));
        assert_eq!(computes_on_cpu(999, 30), !cfg!(feature = "cuda"));
    }

    #[test]
    fn steps_that_fit_together_run_side_by_side_and_the_others_wait() {
        let budget = Arc::new(CoreBudget::new(2));
        let (started_tx, started) = channel();
        let one = step(&budget, 1, "one", &started_tx);
        let two = step(&budget, 1, "two", &started_tx);
        let mut first = [next_started(&started), next_started(&started)];
        first.sort();
        assert_eq!(first, [Some("one"), Some("two")]);

        let wide = step(&budget, 2, "wide", &started_tx);
        assert_eq!(next_started(&started), None, "two cores in use, two more do not fit");
        drop(one);
        assert_eq!(next_started(&started), None, "one core free, two wanted");
        drop(two);
        assert_eq!(awaited(&started), Some("wide"));
        drop(wide);
    }

    #[test]
    fn a_wide_step_is_not_overtaken_by_narrow_ones_that_asked_later() {
        let budget = Arc::new(CoreBudget::new(2));
        let (started_tx, started) = channel();
        let running = step(&budget, 1, "running", &started_tx);
        assert_eq!(next_started(&started), Some("running"));
        let wide = step(&budget, 2, "wide", &started_tx);
        asked(&budget, 2);
        let narrow = step(&budget, 1, "narrow", &started_tx);
        asked(&budget, 3);
        // One core is free and `narrow` would fit, but `wide` asked first.
        assert_eq!(next_started(&started), None);
        drop(running);
        assert_eq!(awaited(&started), Some("wide"));
        assert_eq!(next_started(&started), None);
        drop(wide);
        assert_eq!(awaited(&started), Some("narrow"));
        drop(narrow);
    }

    #[test]
    fn a_step_wanting_more_cores_than_the_machine_has_runs_alone() {
        let budget = Arc::new(CoreBudget::new(2));
        let (started_tx, started) = channel();
        let greedy = step(&budget, 8, "greedy", &started_tx);
        assert_eq!(next_started(&started), Some("greedy"));
        let small = step(&budget, 1, "small", &started_tx);
        assert_eq!(next_started(&started), None);
        drop(greedy);
        assert_eq!(awaited(&started), Some("small"));
        drop(small);
        // Every core comes back once the steps end.
        let deadline = Instant::now() + Duration::from_secs(10);
        while budget.lock().in_use > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let state = budget.lock();
        assert_eq!((state.in_use, state.head, state.next), (0, 2, 2));
    }
}

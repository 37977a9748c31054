//! Several models under one memory budget, and fair queuing between clients, with the real
//! default model.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use lloom_core::Address;
use lloom_executor::Error;
use lloom_executor::backend::llama::{EngineConfig, LlamaEngine, ModelPool, PoolEntry};
use lloom_executor::backend::{Backend, GenerateRequest, GenerationEvent};
use lloom_executor::memory::ServingDevice;
use lloom_executor::models::{DEFAULT_MODEL, plan_engine};

mod common;
use common::{FRANCE, ask, model_path};

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn small_engine() -> EngineConfig {
    EngineConfig { n_ctx: 1024, max_sequences: 2, ..EngineConfig::default() }
}

/// Two names for the default model, each planned; the budget fits one of them, not both.
fn two_model_pool() -> Arc<ModelPool> {
    let (engine, _, bytes) =
        plan_engine(&model_path(), &small_engine(), ServingDevice::Host, u64::MAX).unwrap();
    let entry = |name: &str| PoolEntry {
        name: name.into(),
        path: model_path(),
        engine: engine.clone(),
        bytes,
    };
    ModelPool::new(vec![entry("a"), entry("b")], bytes * 3 / 2).unwrap()
}

fn state_of(pool: &ModelPool, name: &str) -> &'static str {
    pool.status().into_iter().find(|s| s.name == name).unwrap().state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_load_on_demand_and_the_idle_one_is_evicted_never_the_busy_one() {
    let pool = two_model_pool();
    let (a, b) = (pool.backend("a").unwrap(), pool.backend("b").unwrap());
    assert_eq!((state_of(&pool, "a"), state_of(&pool, "b")), ("unloaded", "unloaded"));

    // The first request loads the model, then is answered.
    let (text, _) = a.generate(ask(FRANCE, 32, &[])).unwrap().collect().await.unwrap();
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!(state_of(&pool, "a"), "loaded");

    // b does not fit beside a; a is idle, so a is unloaded to make room.
    let mut long = b.generate(ask("Write a long story about a dragon.", 400, &[])).unwrap();
    assert!(matches!(long.events.recv().await, Some(GenerationEvent::Started { .. })));
    assert_eq!((state_of(&pool, "a"), state_of(&pool, "b")), ("unloaded", "loaded"));
    assert!(pool.used_bytes() <= pool.budget());

    // b is in use: a request for a cannot evict it and is answered Busy, with the numbers.
    match a.generate(ask(FRANCE, 8, &[])) {
        Err(Error::Busy(reason)) => assert!(reason.contains("memory budget"), "{reason}"),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(state_of(&pool, "b"), "loaded");

    // Once b's request ends, a can come back.
    long.cancel();
    while long.events.recv().await.is_some() {}
    eventually("b is idle", || pool.status().iter().all(|s| s.in_use == 0)).await;
    let (text, _) = a.generate(ask(FRANCE, 32, &[])).unwrap().collect().await.unwrap();
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!((state_of(&pool, "a"), state_of(&pool, "b")), ("loaded", "unloaded"));
}

#[tokio::test]
async fn bad_pool_configurations_and_failed_loads_are_clear_errors() {
    let entry = |name: &str, path, bytes| PoolEntry {
        name: String::from(name),
        path,
        engine: small_engine(),
        bytes,
    };
    let too_big = ModelPool::new(vec![entry("big", model_path(), 10 << 30)], 1 << 30);
    assert!(matches!(too_big, Err(Error::EngineConfig(m)) if m.contains("memory budget")));
    let twice = ModelPool::new(vec![entry("x", model_path(), 1), entry("x", model_path(), 1)], 9);
    assert!(matches!(twice, Err(Error::EngineConfig(m)) if m.contains("twice")));

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"not a model").unwrap();
    let pool = ModelPool::new(vec![entry("junk", junk, 1)], 1 << 30).unwrap();
    assert!(matches!(pool.backend("nope"), Err(Error::UnknownModel(_))));
    let err = pool.backend("junk").unwrap().generate(ask(FRANCE, 4, &[])).unwrap().collect().await;
    assert!(err.unwrap_err().contains("cannot load model junk"));
    // The failed load leaves the model unloaded (a later request tries again) and holds nothing.
    assert_eq!((state_of(&pool, "junk"), pool.used_bytes()), ("unloaded", 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_one_client_does_not_starve_another() {
    let config = EngineConfig { n_ctx: 1024, max_sequences: 1, ..EngineConfig::default() };
    let engine = LlamaEngine::load(DEFAULT_MODEL.name, &model_path(), config).unwrap();
    let from = |client: Address| GenerateRequest { client: Some(client), ..ask(FRANCE, 8, &[]) };
    let (greedy, patient) = (Address::repeat_byte(0xaa), Address::repeat_byte(0xbb));
    // One slot: greedy's first request runs, its next three and patient's one wait.
    let mut order = Vec::new();
    for label in ["greedy 1", "greedy 2", "greedy 3", "greedy 4"] {
        order.push((label, engine.generate(from(greedy)).unwrap()));
    }
    order.push(("patient", engine.generate(from(patient)).unwrap()));
    let started = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (label, mut generation) in order {
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            if let Some(GenerationEvent::Started { .. }) = generation.events.recv().await {
                started.lock().unwrap().push(label);
            }
            generation.collect().await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let started = started.lock().unwrap().clone();
    let position = |label| started.iter().position(|l| *l == label).unwrap();
    // FIFO would start patient last; in turn, it starts right after greedy's second request.
    assert!(position("patient") < position("greedy 3"), "start order: {started:?}");
    assert_eq!(started.len(), 5);
}

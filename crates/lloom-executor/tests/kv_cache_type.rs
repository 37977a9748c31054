//! The engine with a quantized KV cache, over the real default model: it still answers, and
//! its cache takes the memory the plan says (about half of f16's for `q8_0`), and the prompt
//! cache works over it. One test in
//! this binary, so nothing else moves the process's memory while it measures.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use lloom_core::{Address, ChatMessage, Role, SamplingParams};
use lloom_executor::backend::llama::{EngineConfig, LlamaEngine};
use lloom_executor::backend::{Backend, GenerateRequest};
use lloom_executor::memory::{KvType, MemoryRequest, ModelGeometry, RepackedTypes, plan};
use lloom_executor::models::DEFAULT_MODEL;

mod common;
use common::{FRANCE, ask, model_path};

/// Anonymous resident memory of this process, in bytes.
fn resident_anonymous() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    let kb: u64 = line["RssAnon:".len()..].trim().trim_end_matches("kB").trim().parse().unwrap();
    kb * 1024
}

/// The KV cache the plan gives `config` over the default model, in bytes.
fn planned_kv_bytes(config: &EngineConfig) -> u64 {
    let path = model_path();
    let meta = lloom_executor::memory::read_metadata(&path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    let geometry = ModelGeometry::from_gguf(&meta, size).unwrap();
    let request = MemoryRequest {
        n_ctx: u64::from(config.n_ctx),
        max_sequences: u64::from(config.max_sequences),
        kv: config.kv_cache,
        n_ubatch: 512,
        gpu_budget: None,
        gpu_layers: lloom_executor::memory::GpuLayers::Auto,
        repacked: RepackedTypes::NONE,
    };
    let p = plan(&geometry, &request).unwrap();
    p.kv_bytes_per_sequence * p.max_sequences
}

async fn answer(engine: &LlamaEngine, request: GenerateRequest) -> String {
    engine.generate(request).unwrap().collect().await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quantized_kv_cache_answers_in_about_half_the_memory() {
    let config = |kv_cache| EngineConfig {
        n_ctx: 16_384,
        max_sequences: 4,
        kv_cache,
        ..EngineConfig::default()
    };
    // Each engine is loaded and asked before the next, and all stay loaded, so each load's
    // growth is its own: weights are mapped from the file, the cache and buffers are
    // anonymous memory, cleared (so touched) when the context is made.
    let mut grown = Vec::new();
    let mut engines = Vec::new();
    for kv in [KvType::Q8_0, KvType::F16, KvType::Q4_0] {
        let before = resident_anonymous();
        let engine = LlamaEngine::load(DEFAULT_MODEL.name, &model_path(), config(kv)).unwrap();
        let text = answer(&engine, ask(FRANCE, 48, &[])).await;
        eprintln!("{kv}: {text:?}");
        assert!(text.contains("Paris"), "{kv}: {text:?}");
        grown.push(resident_anonymous().saturating_sub(before));
        engines.push(engine);
    }
    let [q8, f16, q4] = [grown[0], grown[1], grown[2]];
    let planned = |kv| planned_kv_bytes(&config(kv));
    eprintln!(
        "grown: q8_0 {} MiB, f16 {} MiB, q4_0 {} MiB; planned KV: {} / {} / {} MiB",
        q8 >> 20,
        f16 >> 20,
        q4 >> 20,
        planned(KvType::Q8_0) >> 20,
        planned(KvType::F16) >> 20,
        planned(KvType::Q4_0) >> 20
    );
    // The difference between two loads is the difference between their caches (the rest of
    // what a load allocates is the same), within 10 %.
    let close = |measured: u64, planned: u64| measured.abs_diff(planned) * 10 <= planned;
    let f16_over_q8 = planned(KvType::F16) - planned(KvType::Q8_0);
    assert!(close(f16.saturating_sub(q8), f16_over_q8), "f16 {f16} q8_0 {q8}");
    let q8_over_q4 = planned(KvType::Q8_0) - planned(KvType::Q4_0);
    assert!(close(q8.saturating_sub(q4), q8_over_q4), "q8_0 {q8} q4_0 {q4}");

    // The prompt cache works over a quantized cache: a conversation's second turn starts from
    // the first's, and its answer still knows what only the first turn said.
    let q8_engine = &engines[0];
    let client = Some(Address::repeat_byte(7));
    let mut turns = vec![user("My name is Zorblax. What is the capital of France?")];
    let first = q8_engine.generate(GenerateRequest { client, ..turn(&turns) }).unwrap();
    let (reply, first_usage) = first.collect().await.unwrap();
    turns.push(ChatMessage { role: Role::Assistant, content: reply });
    turns.push(user("What is my name?"));
    let second = q8_engine.generate(GenerateRequest { client, ..turn(&turns) }).unwrap();
    let (text, _) = second.collect().await.unwrap();
    let reused = q8_engine.prompt_tokens_reused();
    assert!(reused >= first_usage.input_tokens, "{reused} < {}", first_usage.input_tokens);
    assert!(text.contains("Zorblax"), "{text:?}");
}

fn user(content: &str) -> ChatMessage {
    ChatMessage { role: Role::User, content: content.into() }
}

/// A greedy request for `turns`, 24 tokens at most, from no client.
fn turn(turns: &[ChatMessage]) -> GenerateRequest {
    GenerateRequest {
        messages: turns.to_vec(),
        sampling: SamplingParams::default(),
        max_tokens: 24,
        max_input_tokens: None,
        client: None,
    }
}

//! Engine figures: the embedded engine against a plain single-sequence llama.cpp greedy loop
//! over the same model and thread count, in the same run (the same code as
//! `lloom-executor bench`).
//!
//! `cargo bench -p lloom-executor --bench engine`
//!
//! Reports, for the default model: time to first token, prompt processing and decode tokens/s
//! for one stream, aggregate decode tokens/s for 4 and 8 concurrent streams, and the model's
//! memory against the plan. Under `cargo test` (no `--bench` argument) it runs a few tokens as
//! a smoke test.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use lloom_executor::bench::{EngineBenchOptions, run_engine_bench};
use lloom_executor::models::{DEFAULT_MODEL, ModelCache};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let path =
        ModelCache::new(ModelCache::default_dir()).pull(&DEFAULT_MODEL, false, &()).unwrap().path;
    let options = EngineBenchOptions {
        path,
        max_tokens: if benching { 128 } else { 8 },
        concurrent: vec![4, 8],
        threads: None,
        baseline: true,
        rounds: if benching { 5 } else { 1 },
        churn: false,
        format: lloom_core::OutputFormat::Text,
        kv_cache: lloom_executor::memory::KvType::F16,
    };
    let report = run_engine_bench(&options).await.unwrap();
    println!("{report}");
}

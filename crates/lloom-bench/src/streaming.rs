//! P2: time to first token of the embedded default model through the network (client →
//! executor → engine → client, signed and verified) vs the same engine called directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lloom_client::{ChatEvent, ChatRequest};
use lloom_core::{ChatMessage, Role, SamplingParams};
use lloom_executor::backend::llama::{EngineConfig, LlamaEngine};
use lloom_executor::backend::{Backend, GenerateRequest, GenerationEvent};
use lloom_executor::models::{DEFAULT_MODEL, ModelCache};

use crate::net;

const PROMPT: &str = "What is the capital of France?";

pub(crate) async fn run(requests: usize) -> anyhow::Result<()> {
    let path = tokio::task::spawn_blocking(|| {
        ModelCache::new(ModelCache::default_dir()).pull(&DEFAULT_MODEL, false, &())
    })
    .await??
    .path;
    // Every prompt computed whole on both paths: the network's requests (signed by one
    // client) would otherwise start from the cache the previous one kept, and the direct ones
    // (no client) would not.
    let config = EngineConfig {
        n_ctx: 4096,
        max_sequences: 2,
        prompt_cache: false,
        ..EngineConfig::default()
    };
    let engine: Arc<LlamaEngine> = Arc::new(
        tokio::task::spawn_blocking(move || LlamaEngine::load(net::MODEL, &path, config)).await??,
    );
    let network = net::start(vec![engine.clone()], 32).await?;
    let client = network.client().await?;

    let mut direct = Vec::new();
    let mut through = Vec::new();
    let mut ratios = Vec::new();
    for i in 0..requests + 2 {
        // The two take turns at going first, so drift in the machine's speed favours neither.
        let (d, n) = if i % 2 == 0 {
            let d = direct_first_token(&engine).await?;
            (d, network_first_token(&client).await?)
        } else {
            let n = network_first_token(&client).await?;
            (direct_first_token(&engine).await?, n)
        };
        if i >= 2 {
            direct.push(d);
            through.push(n);
            ratios.push(n.as_secs_f64() / d.as_secs_f64().max(1e-9));
        }
    }
    let (d50, d99) = net::percentiles(&mut direct);
    let (n50, n99) = net::percentiles(&mut through);
    ratios.sort_by(f64::total_cmp);
    let paired = ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN);
    println!("P2 time to first token, default model, {requests} requests each (after 2 warm-up)");
    println!("  engine directly     : p50 {:7.1} ms   p99 {:7.1} ms", d50 / 1e3, d99 / 1e3);
    println!("  through the network : p50 {:7.1} ms   p99 {:7.1} ms", n50 / 1e3, n99 / 1e3);
    println!("  ratio (p50)         : {:.3}   (goal ≤ 1.02)", n50 / d50.max(1.0));
    println!("  median paired ratio : {paired:.3}   (each request over its neighbour)");
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

/// Time to the first text of the engine, called in-process.
async fn direct_first_token(engine: &LlamaEngine) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut g = engine.generate(GenerateRequest {
        messages: vec![ChatMessage { role: Role::User, content: PROMPT.into() }],
        sampling: SamplingParams::default(),
        max_tokens: 8,
        max_input_tokens: None,
        client: None,
    })?;
    let mut first = None;
    while let Some(event) = g.events.recv().await {
        match event {
            GenerationEvent::Text { .. } => {
                first.get_or_insert_with(|| start.elapsed());
            }
            GenerationEvent::Done(_) => break,
            GenerationEvent::Failed(e)
            | GenerationEvent::Refused(e)
            | GenerationEvent::ContextExceeded(e) => anyhow::bail!(e),
            GenerationEvent::Started { .. } => {}
        }
    }
    first.ok_or_else(|| anyhow::anyhow!("the engine produced no text"))
}

/// Time to the first text through the network: signed, sent, streamed back, verified.
async fn network_first_token(client: &lloom_client::Client) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut answer =
        client.chat(ChatRequest { max_tokens: 8, ..ChatRequest::user(net::MODEL, PROMPT) }).await?;
    let mut first = None;
    while let Some(event) = answer.next().await {
        match event? {
            ChatEvent::Text(_) => {
                first.get_or_insert_with(|| start.elapsed());
            }
            ChatEvent::Done(_) => break,
            _ => {}
        }
    }
    first.ok_or_else(|| anyhow::anyhow!("the answer had no text"))
}

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
    let config = EngineConfig { n_ctx: 4096, max_sequences: 2, ..EngineConfig::default() };
    let engine: Arc<LlamaEngine> = Arc::new(
        tokio::task::spawn_blocking(move || LlamaEngine::load(net::MODEL, &path, config)).await??,
    );
    let network = net::start(vec![engine.clone()], 32).await?;
    let client = network.client().await?;

    let mut direct = Vec::new();
    let mut through = Vec::new();
    for i in 0..requests + 2 {
        // Direct: the engine in-process.
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
                GenerationEvent::Failed(e) => anyhow::bail!(e),
                GenerationEvent::Started { .. } => {}
            }
        }
        // Through the network.
        let start = Instant::now();
        let mut answer = client
            .chat(ChatRequest { max_tokens: 8, ..ChatRequest::user(net::MODEL, PROMPT) })
            .await?;
        let mut net_first = None;
        while let Some(event) = answer.next().await {
            match event? {
                ChatEvent::Text(_) => {
                    net_first.get_or_insert_with(|| start.elapsed());
                }
                ChatEvent::Done(_) => break,
                _ => {}
            }
        }
        if i >= 2 {
            direct.push(first.unwrap_or_default());
            through.push(net_first.unwrap_or_default());
        }
    }
    let (d50, d99) = net::percentiles(&mut direct);
    let (n50, n99) = net::percentiles(&mut through);
    println!("P2 time to first token, default model, {requests} requests each (after 2 warm-up)");
    println!("  engine directly     : p50 {:7.1} ms   p99 {:7.1} ms", d50 / 1e3, d99 / 1e3);
    println!("  through the network : p50 {:7.1} ms   p99 {:7.1} ms", n50 / 1e3, n99 / 1e3);
    println!("  ratio (p50)         : {:.3}   (goal ≤ 1.02)", n50 / d50.max(1.0));
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

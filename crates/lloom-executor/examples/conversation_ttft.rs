//! Time to the first token of each turn of a conversation, with the engine's prompt cache and
//! without: the conversation (a system prompt, then `TURNS` questions, each sent with the whole
//! history, as `lloom-client chat -i` and chat UIs send it) is held once with each engine, one
//! turn after another, greedy, answers of at most 48 tokens. With the cache, each turn computes
//! only what the last one did not leave in its slot (the new question, and the template's
//! tokens around it).
//!
//! ```sh
//! cargo run --profile perf -p lloom-executor --example conversation_ttft -- [TURNS]
//! ```
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lloom_core::{Address, ChatMessage, Role, SamplingParams};
use lloom_executor::backend::llama::{EngineConfig, LlamaEngine};
use lloom_executor::backend::{Backend, GenerateRequest, GenerationEvent};
use lloom_executor::models::{DEFAULT_MODEL, ModelCache};

const SYSTEM: &str = "You are a patient tutor. Answer each question in two or three plain \
    sentences, without lists or headings, and build on what was said earlier in the \
    conversation when it helps.";

const QUESTIONS: [&str; 8] = [
    "What is photosynthesis?",
    "Where in the plant does it happen?",
    "Why are most leaves green?",
    "What happens to the oxygen it makes?",
    "Can plants do it at night?",
    "How do desert plants save water while doing it?",
    "Which came first on Earth, photosynthesis or animals?",
    "Summarise what we discussed in one sentence.",
];

/// One turn: the time to its first token, its answer, and its prompt's tokens.
async fn turn(engine: &LlamaEngine, history: &[ChatMessage]) -> Result<(Duration, String, u64)> {
    let request = GenerateRequest {
        messages: history.to_vec(),
        sampling: SamplingParams::default(),
        max_tokens: 48,
        max_input_tokens: None,
        client: Some(Address::repeat_byte(1)),
    };
    let started = Instant::now();
    let mut generation = engine.generate(request)?;
    let (mut first, mut text, mut input) = (None, String::new(), 0);
    while let Some(event) = generation.events.recv().await {
        match event {
            GenerationEvent::Started { input_tokens } => input = input_tokens,
            GenerationEvent::Text { text: piece, .. } => {
                first.get_or_insert_with(|| started.elapsed());
                text.push_str(&piece);
            }
            GenerationEvent::Done(_) => break,
            GenerationEvent::Failed(e)
            | GenerationEvent::Refused(e)
            | GenerationEvent::ContextExceeded(e) => bail!("{e}"),
        }
    }
    Ok((first.unwrap_or_else(|| started.elapsed()), text, input))
}

/// The conversation held with `engine`: per turn, the time to its first token and its prompt's
/// tokens; and the answers.
async fn converse(
    engine: &LlamaEngine,
    turns: usize,
) -> Result<(Vec<(Duration, u64)>, Vec<String>)> {
    let mut history = vec![ChatMessage { role: Role::System, content: SYSTEM.into() }];
    let (mut figures, mut answers) = (Vec::new(), Vec::new());
    for question in QUESTIONS.iter().cycle().take(turns) {
        history.push(ChatMessage { role: Role::User, content: (*question).into() });
        let (ttft, answer, input) = turn(engine, &history).await?;
        history.push(ChatMessage { role: Role::Assistant, content: answer.clone() });
        figures.push((ttft, input));
        answers.push(answer);
    }
    Ok((figures, answers))
}

/// One question from another client, so that the engine has run once.
async fn warm_up(engine: &LlamaEngine) -> Result<()> {
    let request = GenerateRequest {
        messages: vec![ChatMessage { role: Role::User, content: "Hello!".into() }],
        sampling: SamplingParams::default(),
        max_tokens: 8,
        max_input_tokens: None,
        client: Some(Address::repeat_byte(2)),
    };
    engine.generate(request)?.collect().await.map_err(anyhow::Error::msg)?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let turns: usize = std::env::args().nth(1).map_or(Ok(8), |t| t.parse()).context("TURNS")?;
    let path = ModelCache::new(ModelCache::default_dir()).pull(&DEFAULT_MODEL, false, &())?.path;
    let load = |prompt_cache| {
        let config =
            EngineConfig { n_ctx: 8192, max_sequences: 2, prompt_cache, ..EngineConfig::default() };
        LlamaEngine::load(DEFAULT_MODEL.name, &path, config)
    };
    let (cached, whole) = (load(true)?, load(false)?);
    // One turn each, unmeasured, so that both start warm (another client's: it leaves the
    // measured conversation nothing to start from).
    warm_up(&cached).await?;
    warm_up(&whole).await?;
    let (with, with_answers) = converse(&cached, turns).await?;
    let (without, without_answers) = converse(&whole, turns).await?;
    println!("turn  prompt tokens  first token with the cache  without   ratio");
    for (i, ((t_with, input), (t_without, _))) in with.iter().zip(&without).enumerate() {
        println!(
            "{:>4}  {input:>13}  {:>23.0} ms  {:>7.0} ms  {:>5.2}",
            i + 1,
            t_with.as_secs_f64() * 1e3,
            t_without.as_secs_f64() * 1e3,
            t_with.as_secs_f64() / t_without.as_secs_f64()
        );
    }
    for (i, (a, b)) in with_answers.iter().zip(&without_answers).enumerate() {
        if a != b {
            println!("turn {} answered otherwise:\n  with:    {a:?}\n  without: {b:?}", i + 1);
        }
    }
    let total =
        |figures: &[(Duration, u64)]| figures.iter().map(|(t, _)| t.as_secs_f64()).sum::<f64>();
    println!(
        "all turns: {:.2} s to first tokens with the cache, {:.2} s without; {} prompt tokens reused; same answers: {}",
        total(&with),
        total(&without),
        cached.prompt_tokens_reused(),
        with_answers == without_answers
    );
    Ok(())
}

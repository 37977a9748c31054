//! The embedded llama.cpp engine with the real default model (SmolLM2-135M-Instruct, fetched
//! into the model cache on first use).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use lloom_core::FinishReason;
use lloom_executor::Error;
use lloom_executor::backend::llama::{EngineConfig, LlamaEngine};
use lloom_executor::backend::{Backend, GenerateRequest, GenerationEvent};
use lloom_executor::models::DEFAULT_MODEL;

mod common;
use common::{FRANCE, ask, model_path};

fn engine(config: EngineConfig) -> LlamaEngine {
    LlamaEngine::load(DEFAULT_MODEL.name, &model_path(), config).unwrap()
}

#[tokio::test]
async fn greedy_answer_mentions_paris_with_exact_usage() {
    let engine = engine(EngineConfig::default());
    let (text, usage) = engine.generate(ask(FRANCE, 64, &[])).unwrap().collect().await.unwrap();
    eprintln!("answer: {text:?} {usage:?}");
    assert!(text.contains("Paris"), "answer: {text:?}");
    assert!(usage.input_tokens > 5 && usage.input_tokens < 100, "{usage:?}");
    assert!(usage.output_tokens > 0 && usage.output_tokens <= 64, "{usage:?}");
    assert!(matches!(usage.finish, FinishReason::Stop | FinishReason::Length));
    assert_eq!(engine.models(), vec![DEFAULT_MODEL.name.to_owned()]);

    // Greedy decoding is deterministic.
    let (again, usage2) = engine.generate(ask(FRANCE, 64, &[])).unwrap().collect().await.unwrap();
    assert_eq!((again, usage2), (text, usage));
}

#[tokio::test]
async fn max_tokens_and_stop_sequences_end_generation() {
    let engine = engine(EngineConfig::default());
    let (_, usage) = engine.generate(ask(FRANCE, 3, &[])).unwrap().collect().await.unwrap();
    assert_eq!((usage.output_tokens, usage.finish), (3, FinishReason::Length));

    let (text, usage) =
        engine.generate(ask(FRANCE, 64, &["Paris"])).unwrap().collect().await.unwrap();
    assert!(!text.contains("Paris"), "stop sequence leaked: {text:?}");
    assert_eq!(usage.finish, FinishReason::Stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_and_all_answered() {
    let engine =
        std::sync::Arc::new(engine(EngineConfig { max_sequences: 4, ..EngineConfig::default() }));
    let questions = [FRANCE, "Name a color.", "What is 2 + 2?", "Say hello."];
    let generations: Vec<_> =
        questions.iter().map(|q| engine.generate(ask(q, 32, &[])).unwrap()).collect();
    let mut answers = Vec::new();
    for g in generations {
        answers.push(g.collect().await.unwrap());
    }
    assert!(answers[0].0.contains("Paris"), "{:?}", answers[0]);
    for (text, usage) in &answers {
        assert!(!text.is_empty() && usage.output_tokens > 0, "{text:?} {usage:?}");
    }
    // Nothing leaks between the sequences of one batch: asked alone, each gives the same answer.
    for (question, batched) in questions.iter().zip(&answers) {
        let alone = engine.generate(ask(question, 32, &[])).unwrap().collect().await.unwrap();
        assert_eq!(&alone, batched, "{question}");
    }
}

/// Sequences that end at different steps free slots below others; the ones above move down,
/// KV cache and all, and go on as if nothing happened: each answer is the one given alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_moved_into_freed_slots_answer_as_alone() {
    let moves = sequences_ending_below_others_leave_the_answers_unchanged(true).await;
    // The 4-token answer ends at the bottom of the run (nothing to move); the 8-token one ends
    // inside it, below a 40-token one, which moves down.
    assert!(moves > 0, "a sequence ended inside the run: one above it moves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_left_in_place_answer_as_alone() {
    let moves = sequences_ending_below_others_leave_the_answers_unchanged(false).await;
    assert_eq!(moves, 0, "moving is off");
}

/// Four requests of different lengths decoded together, the shortest first in the lowest
/// slot, give the greedy answers they give alone, and so does one admitted into a freed slot
/// afterwards; returns the sequences the engine moved.
async fn sequences_ending_below_others_leave_the_answers_unchanged(move_sequences: bool) -> u64 {
    let config = EngineConfig { max_sequences: 4, move_sequences, ..EngineConfig::default() };
    let engine = std::sync::Arc::new(engine(config));
    let asks = [(FRANCE, 4), ("Name a color.", 40), ("What is 2 + 2?", 8), ("Say hello.", 40)];
    let mut alone = Vec::new();
    for (question, max_tokens) in asks {
        alone.push(
            engine.generate(ask(question, max_tokens, &[])).unwrap().collect().await.unwrap(),
        );
    }
    assert_eq!(engine.sequence_moves(), 0, "one sequence at a time never moves");
    let generations: Vec<_> =
        asks.iter().map(|(q, n)| engine.generate(ask(q, *n, &[])).unwrap()).collect();
    let mut together = Vec::new();
    for g in generations {
        together.push(g.collect().await.unwrap());
    }
    assert_eq!(together, alone);
    // A later request, admitted into a freed slot, is not disturbed either.
    let again = engine.generate(ask(asks[1].0, asks[1].1, &[])).unwrap().collect().await.unwrap();
    assert_eq!(again, alone[1]);
    engine.sequence_moves()
}

/// Two engines generating at once, each with `threads` threads (all cores: they take turns;
/// one each: side by side), give the greedy answer they give alone.
async fn two_models_at_once_answer_as_alone(threads: Option<u32>) {
    let config = EngineConfig { n_ctx: 1024, max_sequences: 2, threads, ..EngineConfig::default() };
    let (first, second) = (engine(config.clone()), engine(config));
    let alone = first.generate(ask(FRANCE, 48, &[])).unwrap().collect().await.unwrap();
    let (a, b) = tokio::join!(
        first.generate(ask(FRANCE, 48, &[])).unwrap().collect(),
        second.generate(ask(FRANCE, 48, &[])).unwrap().collect()
    );
    assert_eq!(a.unwrap(), alone);
    assert_eq!(b.unwrap(), alone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_decoding_at_once_take_turns_and_answer_as_alone() {
    two_models_at_once_answer_as_alone(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_single_threaded_models_decode_side_by_side_and_answer_as_alone() {
    two_models_at_once_answer_as_alone(Some(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_prompt_is_prefilled_in_chunks_while_others_keep_decoding() {
    let engine = engine(EngineConfig { n_ctx: 4096, max_sequences: 2, ..EngineConfig::default() });
    let story = "Write a detailed story about a lighthouse keeper and a storm.";
    let mut running = engine.generate(ask(story, 400, &[])).unwrap();
    let mut decoded = 0;
    // The running stream has its first token before the long prompt arrives.
    while decoded == 0 {
        if let Some(GenerationEvent::Text { tokens, .. }) = running.events.recv().await {
            decoded = tokens;
        }
    }
    // About 1,300 tokens: six chunks of at most 256.
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(130);
    let mut long_one = engine.generate(ask(&long, 4, &[])).unwrap();
    let (mut at_admission, mut at_first_token) = (None, None);
    while at_first_token.is_none() {
        tokio::select! {
            // The running stream first: its events sent before the long one's are counted.
            biased;
            Some(event) = running.events.recv() => match event {
                GenerationEvent::Text { tokens, .. } => decoded = tokens,
                other => panic!("the running stream ended early: {other:?}"),
            },
            Some(event) = long_one.events.recv() => match event {
                GenerationEvent::Started { input_tokens } => {
                    assert!(input_tokens > 5 * 256, "{input_tokens}");
                    at_admission = Some(decoded);
                }
                GenerationEvent::Text { .. } | GenerationEvent::Done(_) => {
                    at_first_token = Some(decoded);
                }
                GenerationEvent::Failed(message)
                | GenerationEvent::Refused(message)
                | GenerationEvent::ContextExceeded(message) => {
                    panic!("{message}")
                }
            },
        }
    }
    // One step per chunk, and each step also decoded the running stream's next token (a
    // single-step prefill would give 1 here).
    let during_prefill = at_first_token.unwrap() - at_admission.unwrap();
    assert!(during_prefill >= 3, "{during_prefill} tokens decoded while the prompt was prefilled");
}

/// With OpenMP, every engine's worker thread owns a team of its own, and libgomp spins far
/// less at its barriers once the teams outnumber the cores: a second loaded, idle model
/// slowed the first from about 105 to about 44 tok/s on 2 cores.
#[cfg(target_os = "linux")]
#[test]
fn llama_cpp_is_built_without_openmp() {
    // Load a model so that this binary surely links and maps all of llama.cpp.
    let _engine = engine(EngineConfig { n_ctx: 256, max_sequences: 1, ..EngineConfig::default() });
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        !maps.contains("libgomp"),
        "llama.cpp links OpenMP: keep llama-cpp-2's default features off"
    );
}

#[tokio::test]
async fn cancellation_frees_the_slot() {
    let engine = engine(EngineConfig { max_sequences: 1, ..EngineConfig::default() });
    let mut long = engine.generate(ask("Write a long story about a dragon.", 500, &[])).unwrap();
    let started = long.events.recv().await.unwrap();
    assert!(matches!(started, GenerationEvent::Started { input_tokens } if input_tokens > 0));
    let first = long.events.recv().await.unwrap();
    assert!(matches!(first, GenerationEvent::Text { tokens: 1.., .. }), "{first:?}");
    long.cancel();
    let mut done = None;
    while let Some(event) = long.events.recv().await {
        if let GenerationEvent::Done(usage) = event {
            done = Some(usage);
        }
    }
    let usage = done.expect("a cancelled generation still reports usage");
    assert_eq!(usage.finish, FinishReason::Cancelled);
    assert!(usage.output_tokens < 500);

    // Dropping a generation also frees the only slot: the next request is served.
    drop(engine.generate(ask("Write a long story.", 500, &[])).unwrap());
    let (text, _) = engine.generate(ask(FRANCE, 32, &[])).unwrap().collect().await.unwrap();
    assert!(text.contains("Paris"));
}

#[tokio::test]
async fn oversized_prompts_exceed_the_context_and_a_full_queue_is_busy() {
    let config =
        EngineConfig { n_ctx: 512, max_sequences: 1, queue_capacity: 1, ..EngineConfig::default() };
    let engine = engine(config);
    // Too long for the context, or for the request's own prompt bound: typed, before any work.
    let exceeded = |mut generation: lloom_executor::backend::Generation| async move {
        match generation.events.recv().await {
            Some(GenerationEvent::ContextExceeded(message)) => {
                assert_eq!(generation.events.recv().await, None, "nothing follows");
                message
            }
            other => panic!("expected ContextExceeded, got {other:?}"),
        }
    };
    let huge = "word ".repeat(2000);
    let err = exceeded(engine.generate(ask(&huge, 16, &[])).unwrap()).await;
    assert!(err.contains("exceeds the 512 tokens per sequence"), "{err}");
    let limited = GenerateRequest { max_input_tokens: Some(3), ..ask(FRANCE, 8, &[]) };
    let err = exceeded(engine.generate(limited).unwrap()).await;
    assert!(err.contains("more than the 3 allowed"), "{err}");
    let err = engine.generate(ask(FRANCE, 0, &[])).unwrap().collect().await.unwrap_err();
    assert!(err.contains("max_tokens"), "{err}");

    let mut held = Vec::new();
    let mut busy = false;
    for _ in 0..5 {
        match engine.generate(ask("Write a long story.", 400, &[])) {
            Ok(g) => held.push(g),
            Err(Error::Busy(_)) => busy = true,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(busy, "a full queue must answer Busy");
}

#[test]
fn bad_model_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = LlamaEngine::load("x", &dir.path().join("none.gguf"), EngineConfig::default());
    assert!(matches!(missing, Err(Error::EngineLoad(m)) if m.contains("no model file")));
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"this is not a gguf file").unwrap();
    assert!(matches!(
        LlamaEngine::load("x", &junk, EngineConfig::default()),
        Err(Error::EngineLoad(_))
    ));
    assert!(matches!(
        LlamaEngine::load("x", &junk, EngineConfig { max_sequences: 0, ..EngineConfig::default() }),
        Err(Error::EngineConfig(_))
    ));
}

#[test]
fn the_default_model_geometry_is_read_from_its_header() {
    use lloom_executor::memory::{
        KvType, MemoryRequest, ModelGeometry, RepackedTypes, TiedEmbedding, plan, read_metadata,
    };
    let path = model_path();
    let meta = read_metadata(&path).unwrap();
    assert_eq!(meta.architecture(), Some("llama"));
    let size = std::fs::metadata(&path).unwrap().len();
    let g = ModelGeometry::from_gguf(&meta, size).unwrap();
    assert_eq!((g.n_layers, g.n_embd, g.n_head, g.n_head_kv, g.head_dim), (30, 576, 9, 3, 64));
    assert_eq!(g.n_vocab, 49_152);
    // The tensor table accounts for the file (the rest is the header and padding).
    let weights = g.weights_bytes();
    assert!(weights <= size && weights > size * 9 / 10, "{weights} of {size}");
    // 2 × 3 KV heads × 64 × 2 bytes × 30 layers = 23,040 bytes per token.
    assert_eq!(g.kv_bytes_per_token(KvType::F16), 23_040);
    // Its Q8_0 token embedding (49,152 × 576) is also its output projection.
    let tied = TiedEmbedding { ggml_type: 8, bytes: 49_152 * 576 / 32 * 34 };
    assert_eq!(g.tied_embedding, Some(tied));
    let request = MemoryRequest {
        n_ctx: 8192,
        max_sequences: 4,
        kv: KvType::F16,
        n_ubatch: 512,
        gpu_budget: Some(1 << 30),
        gpu_layers: lloom_executor::memory::GpuLayers::All,
        repacked: RepackedTypes::of_this_build(),
    };
    let p = plan(&g, &request).unwrap();
    assert_eq!((p.gpu_layers, p.max_sequences), (30, 4));

    // Not a GGUF file, and a truncated one.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, b"not a model at all").unwrap();
    assert!(read_metadata(&fake).unwrap_err().to_string().contains("no GGUF magic"));
    let mut head = vec![0u8; 4096];
    std::io::Read::read_exact(&mut std::fs::File::open(&path).unwrap(), &mut head).unwrap();
    std::fs::write(&fake, &head).unwrap();
    assert!(read_metadata(&fake).is_err());
}

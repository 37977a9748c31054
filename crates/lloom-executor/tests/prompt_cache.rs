//! Prompt caching in the embedded engine with the real default model: a conversation's next
//! turn starts from the cache its last turn left and answers as when computed whole, and no
//! client starts from another's cache.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use lloom_core::{Address, ChatMessage, Role, SamplingParams};
use lloom_executor::backend::llama::{EngineConfig, LlamaEngine};
use lloom_executor::backend::{Backend, GenerateRequest, GenerationEvent, Usage};
use lloom_executor::models::DEFAULT_MODEL;

mod common;
use common::model_path;

const SYSTEM: &str = "You are a helpful assistant.";

/// The first turn: the user names itself, which the second turn's answer can only know from
/// the first (without it the model names someone else).
const FIRST: &str = "My name is Zorblax. What is the capital of France?";

const SECOND: &str = "What is my name?";

fn engine(prompt_cache: bool) -> LlamaEngine {
    engine_of(2, prompt_cache)
}

fn engine_of(max_sequences: u32, prompt_cache: bool) -> LlamaEngine {
    let config = EngineConfig { max_sequences, prompt_cache, ..EngineConfig::default() };
    LlamaEngine::load(DEFAULT_MODEL.name, &model_path(), config).unwrap()
}

fn message(role: Role, content: &str) -> ChatMessage {
    ChatMessage { role, content: content.into() }
}

fn request(client: Option<u8>, turns: &[ChatMessage], max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        messages: turns.to_vec(),
        sampling: SamplingParams::default(),
        max_tokens,
        max_input_tokens: None,
        client: client.map(Address::repeat_byte),
    }
}

async fn answer(
    engine: &LlamaEngine,
    client: Option<u8>,
    turns: &[ChatMessage],
) -> (String, Usage) {
    engine.generate(request(client, turns, 24)).unwrap().collect().await.unwrap()
}

/// The two turns of the conversation the tests hold, and the second's answer computed whole.
async fn conversation() -> (Vec<ChatMessage>, Vec<ChatMessage>, (String, Usage)) {
    let whole = engine(false);
    let first = vec![message(Role::System, SYSTEM), message(Role::User, FIRST)];
    let (reply, _) = answer(&whole, Some(1), &first).await;
    let mut second = first.clone();
    second.push(message(Role::Assistant, &reply));
    second.push(message(Role::User, SECOND));
    let expected = answer(&whole, Some(1), &second).await;
    (first, second, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversations_next_turn_starts_from_the_cache_its_last_turn_left() {
    let cached = engine(true);
    let mut turns = vec![message(Role::System, SYSTEM), message(Role::User, FIRST)];
    let (first, first_usage) = answer(&cached, Some(1), &turns).await;
    assert_eq!(cached.prompt_tokens_reused(), 0, "nothing kept yet");

    turns.push(message(Role::Assistant, &first));
    turns.push(message(Role::User, SECOND));
    let (second, second_usage) = answer(&cached, Some(1), &turns).await;
    let reused = cached.prompt_tokens_reused();
    eprintln!(
        "turn 1: {first_usage:?}; turn 2: {second:?} {second_usage:?}, {reused} tokens reused"
    );
    // At least the first turn's whole prompt came from the cache; the new turn was computed.
    assert!(reused >= first_usage.input_tokens, "{reused} < {}", first_usage.input_tokens);
    assert!(reused < second_usage.input_tokens);

    // The same answer as computed whole (in content: the cached tokens were computed one at a
    // time, as they were generated, and a whole prompt's in one batch, so sums may round
    // otherwise and a close choice between two tokens go the other way, as with llama.cpp's
    // `cache_prompt`), and the same count.
    let whole = engine(false);
    let (recomputed, recomputed_usage) = answer(&whole, Some(1), &turns).await;
    assert!(
        second.contains("Zorblax") && recomputed.contains("Zorblax"),
        "{second:?} {recomputed:?}"
    );
    assert_eq!(second_usage.input_tokens, recomputed_usage.input_tokens);
    assert_eq!(whole.prompt_tokens_reused(), 0, "off means off");

    // A request with no client starts from no cache (and keeps none: it took the free slot
    // that kept nothing, as did the next)...
    answer(&cached, None, &turns).await;
    assert_eq!(cached.prompt_tokens_reused(), reused);
    // ... nor does another client, even for the very same prompt.
    let others = answer(&cached, Some(2), &turns).await;
    assert_eq!(others, (recomputed, recomputed_usage), "computed whole, as the other engine did");
    assert_eq!(cached.prompt_tokens_reused(), reused);

    // The same client asking the same again starts from all but the prompt's last token
    // (its cache is still kept: the other requests took the other slot).
    let (again, again_usage) = answer(&cached, Some(1), &turns).await;
    assert!(again.contains("Zorblax"), "{again:?}");
    assert_eq!(again_usage.input_tokens, second_usage.input_tokens);
    assert_eq!(cached.prompt_tokens_reused(), reused + second_usage.input_tokens - 1);
}

/// A kept cache in a slot that would split the run of ids in use is copied into the slot the
/// request takes, cut back to the shared prefix there, and answers as computed whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_cache_is_copied_where_the_slot_it_is_in_would_split_the_run() {
    let (first, second, expected) = conversation().await;
    let cached = engine_of(4, true);
    // Slot 0 keeps client 1's first turn.
    let (_, first_usage) = answer(&cached, Some(1), &first).await;
    // Three long answers of other clients take slots 1, 2 and 3 (not 0: it keeps a cache);
    // the one in slot 1 is then cancelled, so 2 and 3 run.
    let long = async |client| {
        let ask = [message(Role::User, "Write a long story about a lighthouse keeper.")];
        let mut generation = cached.generate(request(Some(client), &ask, 2000)).unwrap();
        let first =
            tokio::time::timeout(std::time::Duration::from_secs(60), generation.events.recv());
        let started = matches!(first.await.unwrap(), Some(GenerationEvent::Started { .. }));
        assert!(started, "admitted");
        generation
    };
    let slot_1 = long(3).await;
    let slot_2 = long(4).await;
    let slot_3 = long(5).await;
    drop(slot_1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while cached.in_use() > 2 {
        assert!(std::time::Instant::now() < deadline, "the cancelled answer never ended");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The next turn takes slot 1 (slot 0 would split the run 2–3) from slot 0's copy.
    let reused_before = cached.prompt_tokens_reused();
    let next = answer(&cached, Some(1), &second).await;
    let reused = cached.prompt_tokens_reused() - reused_before;
    assert!(reused >= first_usage.input_tokens, "{reused} < {}", first_usage.input_tokens);
    assert!(next.0.contains("Zorblax") && expected.0.contains("Zorblax"), "{next:?} {expected:?}");
    assert_eq!(next.1.input_tokens, expected.1.input_tokens);
    drop((slot_2, slot_3));
}

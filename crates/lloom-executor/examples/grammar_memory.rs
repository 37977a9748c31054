//! How much memory one sequence's grammar holds, the part of a constrained answer's memory
//! the memory plan does not count: for a few schemas, `COPIES` grammar samplers are loaded
//! over the default model's vocabulary (as `COPIES` concurrent sequences would load them), then
//! each is walked through `STEPS` tokens of an answer; the resident memory they add is
//! reported per copy, with the time one takes to load. One copy is walked first, unmeasured,
//! so that the allocator already holds what a step allocates and frees (the grammar decodes
//! every candidate token on each step) and only what the copies keep is counted.
//!
//! ```sh
//! cargo run --profile perf -p lloom-executor --example grammar_memory -- [COPIES] [STEPS]
//! ```
#![allow(clippy::print_stdout)]

use std::time::Instant;

use anyhow::{Context, Result};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use lloom_executor::models::{DEFAULT_MODEL, ModelCache};

/// Resident memory of this process, in bytes.
fn resident() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm.split_whitespace().nth(1).context("statm")?.parse()?;
    Ok(pages * 4096)
}

/// The schemas measured: what the gateway asks for tool calls, any object, and a wide and
/// deep one whose grammar is near the engine's 256 KiB limit.
fn schemas() -> Vec<(&'static str, String)> {
    let weather = r#"{"anyOf": [
        {"type": "object", "properties": {"tool_call": {"type": "object",
            "properties": {"name": {"const": "get_weather"}, "arguments": {"type": "object",
                "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]}},
            "required": ["name", "arguments"]}}, "required": ["tool_call"]},
        {"type": "object", "properties": {"response": {"type": "string"}}, "required": ["response"]}
    ]}"#;
    let wide_and_deep = |fields: usize, depth: usize| {
        let mut deep = String::from(r#"{"type": "array", "items": {"type": "string"}}"#);
        for _ in 0..depth {
            deep = format!(
                r#"{{"type": "object", "properties": {{"next": {deep}, "tag": {{"type": "string"}}}}}}"#
            );
        }
        let mut wide = String::from(r#"{"type": "object", "properties": {"#);
        let kinds = ["string", "integer", "number", "boolean"].into_iter().cycle();
        for (i, kind) in kinds.take(fields).enumerate() {
            wide.push_str(&format!(r#""field_{i}": {{"type": "{kind}"}},"#));
        }
        wide.push_str(&format!(r#""nested": {deep}}}, "required": ["field_0"]}}"#));
        wide
    };
    vec![
        ("tool call or reply", weather.to_owned()),
        ("any JSON object", r#"{"type": "object"}"#.to_owned()),
        ("300 fields, 60 deep", wide_and_deep(300, 60)),
        ("600 fields, 110 deep", wide_and_deep(600, 110)),
    ]
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let copies: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let steps: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let path = ModelCache::new(ModelCache::default_dir()).pull(&DEFAULT_MODEL, false, &())?.path;
    let backend = LlamaBackend::init()?;
    let model = LlamaModel::load_from_file(&backend, &path, &LlamaModelParams::default())?;
    let vocab = model.n_vocab();
    println!("{copies} copies each, walked {steps} tokens; vocabulary {vocab} tokens");
    let all: Vec<LlamaTokenData> =
        (0..vocab).map(|t| LlamaTokenData::new(LlamaToken(t), 0.0, 0.0)).collect();
    let mut candidates = LlamaTokenDataArray::new(all.clone(), false);
    let mut candidates = Candidates { all, array: &mut candidates };
    for (name, schema) in schemas() {
        let grammar = llama_cpp_2::json_schema_to_grammar(&schema)?;
        walk(&mut LlamaSampler::grammar(&model, &grammar, "root")?, &mut candidates, steps);
        let before = resident()?;
        let start = Instant::now();
        let mut samplers = Vec::with_capacity(copies);
        for _ in 0..copies {
            samplers.push(LlamaSampler::grammar(&model, &grammar, "root")?);
        }
        let load = start.elapsed() / u32::try_from(copies.max(1))?;
        let loaded = resident()?;
        for sampler in &mut samplers {
            walk(sampler, &mut candidates, steps);
        }
        let walked = resident()?;
        let per_copy = |bytes: u64| bytes as f64 / copies.max(1) as f64 / 1024.0;
        println!(
            "{name:>20}: grammar {:>6.1} KiB; per copy {:>7.1} KiB loaded, {:>7.1} KiB after the walk; {:>6.2} ms to load one",
            grammar.len() as f64 / 1024.0,
            per_copy(loaded.saturating_sub(before)),
            per_copy(walked.saturating_sub(before)),
            load.as_secs_f64() * 1e3,
        );
        drop(samplers);
    }
    Ok(())
}

/// The whole vocabulary as candidates, refilled in place for each step.
struct Candidates<'a> {
    all: Vec<LlamaTokenData>,
    array: &'a mut LlamaTokenDataArray,
}

/// Accepts `steps` tokens the grammar allows (the first of the vocabulary each time), as an
/// answer being generated would, so its stacks hold a state from inside the answer.
fn walk(sampler: &mut LlamaSampler, candidates: &mut Candidates<'_>, steps: usize) {
    for _ in 0..steps {
        let array = &mut *candidates.array;
        array.data.clear();
        array.data.extend_from_slice(&candidates.all);
        (array.selected, array.sorted) = (None, false);
        sampler.apply(array);
        let Some(allowed) = array.data.iter().find(|t| t.logit().is_finite()) else {
            return;
        };
        sampler.accept(allowed.id());
    }
}

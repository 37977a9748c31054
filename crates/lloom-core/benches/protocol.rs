//! Criterion benches for the per-request cryptography and codec costs.
//!
//! `cargo bench -p lloom-core --bench protocol`. A request costs four signature operations
//! (client sign, executor verify, executor sign, client verify) plus encode/decode of each
//! message; these figures are the floor for the network throughput goal. `answer_format` is
//! what checking a JSON answer against its schema adds (client and executor both run it).
#![allow(
    clippy::panic,
    clippy::needless_pass_by_value,
    clippy::cast_possible_truncation,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lloom_core::answer_format::check_answer_format;
use lloom_core::verify::{verify_request, verify_response};
use lloom_core::wire::{content_hash, decode_frame, encode_frame, request_hash};
use lloom_core::{
    ChatMessage, DomainConfig, FinishReason, NodeKey, OutputFormat, RequestBody, RequestCommitment,
    ResponseCommitment, Role, SamplingParams, SignedRequest, SignedResponse, StreamChunk, U256,
    VerifyPolicy, WireLimits, WireMessage, signing_hash,
};

const NOW: u64 = 1_800_000_000;

fn fixtures() -> (NodeKey, NodeKey, SignedRequest, SignedResponse, String) {
    let client = NodeKey::generate();
    let executor = NodeKey::generate();
    let body = RequestBody {
        messages: vec![ChatMessage {
            role: Role::User,
            content: "What is the capital of France?".into(),
        }],
        sampling: SamplingParams::default(),
    };
    let commitment = RequestCommitment {
        client: client.address(),
        executor: executor.address(),
        model: "SmolLM2-135M-Instruct".into(),
        requestHash: request_hash(&body),
        maxInputTokens: 2048,
        maxOutputTokens: 256,
        pricePerInputToken: U256::from(1_000u64),
        pricePerOutputToken: U256::from(2_000u64),
        nonce: 1,
        deadline: NOW + 60,
    };
    let req = SignedRequest::sign(&client, DomainConfig::default(), commitment, body).unwrap();
    let text = "The capital of France is Paris.".to_owned();
    let resp_c = ResponseCommitment {
        requestDigest: req.digest(),
        client: client.address(),
        executor: executor.address(),
        model: req.commitment.model.clone(),
        contentHash: content_hash(&text),
        inputTokens: 12,
        outputTokens: 8,
        totalCost: U256::from(12u64 * 1_000 + 8 * 2_000),
        finishReason: FinishReason::Stop.code(),
        timestamp: NOW,
    };
    let resp = SignedResponse::sign(&executor, DomainConfig::default(), resp_c).unwrap();
    (client, executor, req, resp, text)
}

fn signatures(c: &mut Criterion) {
    let (client, executor, req, resp, text) = fixtures();
    let policy = VerifyPolicy::default();
    let digest = req.digest();
    let mut g = c.benchmark_group("signature");
    g.throughput(Throughput::Elements(1));
    g.bench_function("eip712_digest_request", |b| {
        b.iter(|| signing_hash(black_box(&req.commitment), black_box(&req.domain)))
    });
    g.bench_function("sign_digest", |b| b.iter(|| client.sign_digest(black_box(&digest)).unwrap()));
    g.bench_function("recover", |b| b.iter(|| req.signature.recover(black_box(&digest)).unwrap()));
    g.bench_function("verify_request_full", |b| {
        b.iter(|| verify_request(black_box(&req), Some(&client.peer_id()), &policy, NOW).unwrap())
    });
    g.bench_function("verify_response_full", |b| {
        b.iter(|| {
            verify_response(black_box(&resp), &req, &text, Some(&executor.peer_id()), &policy, NOW)
                .unwrap()
        })
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    let (_, _, req, resp, _) = fixtures();
    let limits = WireLimits::default();
    let messages = [
        ("request", WireMessage::Request(req)),
        ("response", WireMessage::Response(resp)),
        ("chunk", WireMessage::Chunk(StreamChunk { index: 7, text: " Paris".into() })),
    ];
    let mut g = c.benchmark_group("codec");
    for (name, msg) in &messages {
        let frame = encode_frame(msg, &limits).unwrap();
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(format!("encode_{name}"), |b| {
            b.iter(|| encode_frame(black_box(msg), &limits).unwrap())
        });
        g.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| decode_frame(black_box(&frame), &limits).unwrap())
        });
    }
    g.finish();
}

/// A schema with the keywords the check reads, and answers to it of two sizes.
const CITY_SCHEMA: &str = r##"{"$defs": {"city": {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 40}, "population": {"type": "integer", "minimum": 0},
    "capital": {"type": "boolean"}, "country": {"enum": ["France", "Spain", "Italy"]}},
    "required": ["name", "population"], "additionalProperties": false}},
    "type": "array", "items": {"$ref": "#/$defs/city"}}"##;

fn answer_format(c: &mut Criterion) {
    let city = r#"{"name": "Paris", "population": 2102650, "capital": true, "country": "France"}"#;
    let one = format!("[{city}]");
    // About the 32 KiB a schema may have: the longest answers this small model writes.
    let many = format!("[{}]", vec![city; 400].join(", "));
    // Alternatives 40 deep over `$ref`s: the check stops at its step bound.
    let mut defs = vec![r#""l0": {"type": "null"}"#.to_owned()];
    for level in 1..=40 {
        let below = format!("#/$defs/l{}", level - 1);
        defs.push(format!(
            r#""l{level}": {{"anyOf": [{{"$ref": "{below}"}}, {{"$ref": "{below}"}}]}}"#
        ));
    }
    let exponential = format!(r##"{{"$defs": {{{}}}, "$ref": "#/$defs/l40"}}"##, defs.join(", "));
    let cases = [
        ("one_city", CITY_SCHEMA.to_owned(), one),
        ("400_cities", CITY_SCHEMA.to_owned(), many),
        ("step_bound", exponential, "1".to_owned()),
    ];
    let mut g = c.benchmark_group("answer_format");
    for (name, schema, answer) in &cases {
        let format = OutputFormat::JsonSchema { name: "bench".into(), schema: schema.clone() };
        let sampling = SamplingParams { format, ..SamplingParams::default() };
        g.throughput(Throughput::Bytes(answer.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| {
                check_answer_format(&sampling, FinishReason::Stop, black_box(answer)).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, signatures, codec, answer_format);
criterion_main!(benches);

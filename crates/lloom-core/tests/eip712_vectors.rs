//! Known-answer EIP-712 vectors, shared with the settlement contract's tests.
//!
//! `test-vectors/eip712.json` holds, per vector, a private key, the typed data in the standard
//! `eth_signTypedData_v4` JSON form, the expected digest and the expected 65-byte signature.
//! This test rebuilds every vector from the Rust types and checks that:
//! 1. the committed file is exactly what the code produces (regenerate with
//!    `LLOOM_UPDATE_VECTORS=1 cargo test -p lloom-core --test eip712_vectors`);
//! 2. an independent EIP-712 implementation over the JSON (alloy-dyn-abi's `TypedData`) gives
//!    the same digest as the `sol!` structs, so the JSON types and the Rust types agree;
//! 3. signing the digest with the key gives the committed signature (RFC 6979, deterministic)
//!    and that signature recovers to the expected signer;
//! 4. where foundry's `cast` is installed, `cast wallet sign --data` produces the same
//!    signature (required when `LLOOM_REQUIRE_CAST=1`, as the project's test script sets).
#![allow(
    clippy::panic,
    clippy::needless_pass_by_value,
    clippy::cast_possible_truncation,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::PathBuf;

use alloy_dyn_abi::TypedData;
use alloy_primitives::{Address, B256, U256, address};
use lloom_core::wire::{content_hash, request_hash};
use lloom_core::{
    Announcement, ChatMessage, DomainConfig, ErrorCode, ErrorCommitment, FinishReason, NodeKey,
    RequestBody, RequestCommitment, ResponseCommitment, Role, SamplingParams, Signature,
    signing_hash,
};
use serde_json::{Value, json};

/// Anvil's default accounts 0 and 1: public, well-known test keys.
const EXECUTOR_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const CLIENT_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test-vectors/eip712.json")
}

fn domain_json(d: &DomainConfig) -> Value {
    json!({
        "name": "Lloom",
        "version": "1",
        "chainId": d.chain_id,
        "verifyingContract": d.verifying_contract.to_checksum(None),
    })
}

fn types_json(primary: &str) -> Value {
    let domain = json!([
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"}
    ]);
    let fields: &[(&str, &str)] = match primary {
        "RequestCommitment" => &[
            ("client", "address"),
            ("executor", "address"),
            ("model", "string"),
            ("requestHash", "bytes32"),
            ("maxInputTokens", "uint64"),
            ("maxOutputTokens", "uint64"),
            ("pricePerInputToken", "uint256"),
            ("pricePerOutputToken", "uint256"),
            ("nonce", "uint64"),
            ("deadline", "uint64"),
        ],
        "ResponseCommitment" => &[
            ("requestDigest", "bytes32"),
            ("client", "address"),
            ("executor", "address"),
            ("model", "string"),
            ("contentHash", "bytes32"),
            ("inputTokens", "uint64"),
            ("outputTokens", "uint64"),
            ("totalCost", "uint256"),
            ("finishReason", "uint8"),
            ("timestamp", "uint64"),
        ],
        "ErrorCommitment" => &[
            ("requestDigest", "bytes32"),
            ("executor", "address"),
            ("code", "uint16"),
            ("message", "string"),
            ("retryAfterMillis", "uint64"),
            ("timestamp", "uint64"),
        ],
        "Announcement" => &[
            ("executor", "address"),
            ("sequence", "uint64"),
            ("timestamp", "uint64"),
            ("offersHash", "bytes32"),
            ("withdrawn", "bool"),
        ],
        other => panic!("unknown type {other}"),
    };
    let fields: Vec<Value> = fields.iter().map(|(n, t)| json!({"name": n, "type": t})).collect();
    json!({ "EIP712Domain": domain, primary: fields })
}

fn addr(a: Address) -> Value {
    json!(a.to_checksum(None))
}
fn uint(v: impl ToString) -> Value {
    json!(v.to_string())
}

fn request_json(c: &RequestCommitment) -> Value {
    json!({
        "client": addr(c.client),
        "executor": addr(c.executor),
        "model": c.model,
        "requestHash": c.requestHash.to_string(),
        "maxInputTokens": uint(c.maxInputTokens),
        "maxOutputTokens": uint(c.maxOutputTokens),
        "pricePerInputToken": uint(c.pricePerInputToken),
        "pricePerOutputToken": uint(c.pricePerOutputToken),
        "nonce": uint(c.nonce),
        "deadline": uint(c.deadline),
    })
}

fn response_json(c: &ResponseCommitment) -> Value {
    json!({
        "requestDigest": c.requestDigest.to_string(),
        "client": addr(c.client),
        "executor": addr(c.executor),
        "model": c.model,
        "contentHash": c.contentHash.to_string(),
        "inputTokens": uint(c.inputTokens),
        "outputTokens": uint(c.outputTokens),
        "totalCost": uint(c.totalCost),
        "finishReason": uint(c.finishReason),
        "timestamp": uint(c.timestamp),
    })
}

fn error_json(c: &ErrorCommitment) -> Value {
    json!({
        "requestDigest": c.requestDigest.to_string(),
        "executor": addr(c.executor),
        "code": uint(c.code),
        "message": c.message,
        "retryAfterMillis": uint(c.retryAfterMillis),
        "timestamp": uint(c.timestamp),
    })
}

fn announcement_json(c: &Announcement) -> Value {
    json!({
        "executor": addr(c.executor),
        "sequence": uint(c.sequence),
        "timestamp": uint(c.timestamp),
        "offersHash": c.offersHash.to_string(),
        "withdrawn": c.withdrawn,
    })
}

/// One vector: its JSON and the digest the `sol!` types give.
struct Built {
    json: Value,
    sol_digest: B256,
}

fn vector(
    name: &str,
    key_hex: &str,
    primary: &str,
    domain: &DomainConfig,
    message: Value,
    sol_digest: B256,
) -> Built {
    let key = NodeKey::from_hex(key_hex).unwrap();
    let signature = key.sign_digest(&sol_digest).unwrap();
    let json = json!({
        "name": name,
        "privateKey": key_hex,
        "signer": addr(key.address()),
        "typedData": {
            "types": types_json(primary),
            "primaryType": primary,
            "domain": domain_json(domain),
            "message": message,
        },
        "digest": sol_digest.to_string(),
        "signature": signature.to_string(),
    });
    Built { json, sol_digest }
}

fn build_all() -> Vec<Built> {
    let client = NodeKey::from_hex(CLIENT_KEY).unwrap().address();
    let executor = NodeKey::from_hex(EXECUTOR_KEY).unwrap().address();
    let default_domain = DomainConfig::default();
    let deployed = DomainConfig::new(1, address!("5FbDB2315678afecb367f032d93F642f64180aa3"));

    let body = RequestBody {
        messages: vec![ChatMessage {
            role: Role::User,
            content: "What is the capital of France?".into(),
        }],
        sampling: SamplingParams::default(),
    };
    let request = RequestCommitment {
        client,
        executor,
        model: "SmolLM2-135M-Instruct".into(),
        requestHash: request_hash(&body),
        maxInputTokens: 2048,
        maxOutputTokens: 256,
        pricePerInputToken: U256::from(1_000_000_000u64),
        pricePerOutputToken: U256::from(2_000_000_000u64),
        nonce: 1,
        deadline: 1_800_000_000,
    };
    let request_digest = signing_hash(&request, &default_domain);

    let extreme = RequestCommitment {
        client,
        executor,
        model: "モデル-λ/𝔽 \"quoted\"".into(),
        requestHash: B256::repeat_byte(0xab),
        maxInputTokens: u64::MAX,
        maxOutputTokens: u64::MAX,
        pricePerInputToken: U256::MAX,
        pricePerOutputToken: U256::from(1u8) << 255,
        nonce: u64::MAX,
        deadline: u64::MAX,
    };

    let text = "The capital of France is Paris.";
    let final_response = ResponseCommitment {
        requestDigest: request_digest,
        client,
        executor,
        model: request.model.clone(),
        contentHash: content_hash(text),
        inputTokens: 12,
        outputTokens: 8,
        totalCost: U256::from(12u64 * 1_000_000_000 + 8 * 2_000_000_000),
        finishReason: FinishReason::Stop.code(),
        timestamp: 1_799_999_000,
    };
    let checkpoint = ResponseCommitment {
        contentHash: content_hash("The capital"),
        outputTokens: 2,
        totalCost: U256::from(12u64 * 1_000_000_000 + 2 * 2_000_000_000),
        finishReason: FinishReason::Partial.code(),
        timestamp: 1_799_998_990,
        ..final_response.clone()
    };
    let busy = ErrorCommitment {
        requestDigest: request_digest,
        executor,
        code: ErrorCode::Busy.code(),
        message: "queue full".into(),
        retryAfterMillis: 5_000,
        timestamp: 1_799_999_000,
    };

    let heartbeat = Announcement {
        executor,
        sequence: 1_800_000_000_123,
        timestamp: 1_800_000_000,
        offersHash: B256::repeat_byte(0x0f),
        withdrawn: false,
    };
    let withdrawal =
        Announcement { withdrawn: true, sequence: heartbeat.sequence + 1, ..heartbeat };

    vec![
        vector(
            "announcement/heartbeat",
            EXECUTOR_KEY,
            "Announcement",
            &default_domain,
            announcement_json(&heartbeat),
            signing_hash(&heartbeat, &default_domain),
        ),
        vector(
            "announcement/withdrawn",
            EXECUTOR_KEY,
            "Announcement",
            &deployed,
            announcement_json(&withdrawal),
            signing_hash(&withdrawal, &deployed),
        ),
        vector(
            "request/default-domain",
            CLIENT_KEY,
            "RequestCommitment",
            &default_domain,
            request_json(&request),
            request_digest,
        ),
        vector(
            "request/deployed-domain-extreme-values",
            CLIENT_KEY,
            "RequestCommitment",
            &deployed,
            request_json(&extreme),
            signing_hash(&extreme, &deployed),
        ),
        vector(
            "response/final",
            EXECUTOR_KEY,
            "ResponseCommitment",
            &default_domain,
            response_json(&final_response),
            signing_hash(&final_response, &default_domain),
        ),
        vector(
            "response/checkpoint",
            EXECUTOR_KEY,
            "ResponseCommitment",
            &default_domain,
            response_json(&checkpoint),
            signing_hash(&checkpoint, &default_domain),
        ),
        vector(
            "error/busy",
            EXECUTOR_KEY,
            "ErrorCommitment",
            &default_domain,
            error_json(&busy),
            signing_hash(&busy, &default_domain),
        ),
    ]
}

fn render(built: &[Built]) -> String {
    let doc = json!({
        "description": "Lloom EIP-712 known-answer vectors. Each typedData is in eth_signTypedData_v4 form; digest is its EIP-712 signing hash; signature is r||s||v (v in {27,28}) by privateKey (RFC 6979). Generated by crates/lloom-core/tests/eip712_vectors.rs; checked by that test and by the contract's forge tests.",
        "vectors": built.iter().map(|b| b.json.clone()).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&doc).unwrap() + "\n"
}

#[test]
fn committed_vectors_match_the_code() {
    let built = build_all();
    let rendered = render(&built);
    let path = vectors_path();
    if std::env::var_os("LLOOM_UPDATE_VECTORS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(&path).expect("test-vectors/eip712.json exists");
    if let Some((line, (old, new))) =
        committed.lines().zip(rendered.lines()).enumerate().find(|(_, (a, b))| a != b)
    {
        panic!(
            "test-vectors/eip712.json is stale at line {}: has `{old}`, code gives `{new}`; \
             regenerate with LLOOM_UPDATE_VECTORS=1",
            line + 1
        );
    }
    assert_eq!(committed.len(), rendered.len(), "test-vectors/eip712.json is stale (length)");
}

#[test]
fn json_typed_data_digest_equals_sol_digest_and_signatures_check() {
    for b in build_all() {
        let v = &b.json;
        let typed: TypedData = serde_json::from_value(v["typedData"].clone()).unwrap();
        let dyn_digest = typed.eip712_signing_hash().unwrap();
        assert_eq!(dyn_digest, b.sol_digest, "{}: JSON types disagree with sol! types", v["name"]);

        let key = NodeKey::from_hex(v["privateKey"].as_str().unwrap()).unwrap();
        let sig: Signature = v["signature"].as_str().unwrap().parse().unwrap();
        assert_eq!(key.sign_digest(&b.sol_digest).unwrap(), sig, "{}", v["name"]);
        assert_eq!(sig.recover(&b.sol_digest).unwrap(), key.address());
        assert_eq!(v["signer"].as_str().unwrap(), key.address().to_checksum(None));
    }
}

fn find_cast() -> Option<PathBuf> {
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../node_modules/.bin/cast");
    if local.exists() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|p| p.join("cast")).find(|p| p.is_file())
    })
}

#[test]
fn vectors_agree_with_foundry_cast() {
    let Some(cast) = find_cast() else {
        assert!(
            std::env::var_os("LLOOM_REQUIRE_CAST").is_none(),
            "LLOOM_REQUIRE_CAST is set but cast was not found (npm install in the repo root)"
        );
        eprintln!("SKIPPED vectors_agree_with_foundry_cast: `cast` not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for b in build_all() {
        let v = &b.json;
        let file = dir.path().join("typed.json");
        std::fs::write(&file, serde_json::to_string(&v["typedData"]).unwrap()).unwrap();
        let out = std::process::Command::new(&cast)
            .args(["wallet", "sign", "--private-key"])
            .arg(v["privateKey"].as_str().unwrap())
            .args(["--data", "--from-file"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "cast failed: {}", String::from_utf8_lossy(&out.stderr));
        let cast_sig = String::from_utf8(out.stdout).unwrap();
        assert_eq!(cast_sig.trim(), v["signature"].as_str().unwrap(), "{}", v["name"]);
    }
}

#[test]
fn protocol_page_documents_the_exact_type_strings() {
    use alloy_sol_types::SolStruct;
    let page = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/src/developer-guide/protocol.md"),
    )
    .unwrap();
    for encode_type in [
        RequestCommitment::eip712_encode_type(),
        ResponseCommitment::eip712_encode_type(),
        ErrorCommitment::eip712_encode_type(),
        Announcement::eip712_encode_type(),
    ] {
        assert!(page.contains(encode_type.as_ref()), "protocol.md lacks `{encode_type}`");
    }
}

//! The committed contract artifact (ABI and bytecode used by the Rust bindings) was built from
//! the current Solidity sources: its `sources_sha256` is the hash of `contracts/foundry.toml`
//! followed by `contracts/src/*.sol` in name order, as `contracts/build.sh` computes it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use sha2::{Digest, Sha256};

#[test]
fn the_contract_artifact_is_up_to_date_with_its_sources() {
    let contracts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contracts");
    let mut sources: Vec<_> = std::fs::read_dir(contracts.join("src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sol"))
        .collect();
    sources.sort();
    let mut hasher = Sha256::new();
    hasher.update(std::fs::read(contracts.join("foundry.toml")).unwrap());
    for source in &sources {
        hasher.update(std::fs::read(source).unwrap());
    }
    let expected = hex::encode(hasher.finalize());
    let artifact: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/LloomSettlement.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        artifact["sources_sha256"].as_str().unwrap(),
        expected,
        "crates/lloom-core/artifacts/LloomSettlement.json is stale: run contracts/build.sh"
    );
    let bytecode = artifact["bytecode"].as_str().unwrap();
    assert!(bytecode.starts_with("0x") && bytecode.len() > 1000, "bytecode present");
}

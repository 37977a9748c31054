//! `sol!` bindings generated from the contract artifact.

#![allow(missing_docs, unreachable_pub, clippy::too_many_arguments)] // generated code

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    LloomSettlement,
    "artifacts/LloomSettlement.json"
);

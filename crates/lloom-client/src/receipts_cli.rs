//! `lloom-client receipts list | show`: the verified receipts `chat` and `serve` keep.

use std::io::Write;

use lloom_core::cli::{NodeArgs, Role};

use crate::cli::ReceiptsCommand;
use crate::error::{Error, Result};
use crate::receipts::ReceiptStore;

pub(crate) fn receipts_path(node: &NodeArgs) -> std::path::PathBuf {
    node.data_dir(Role::Client).join("receipts.redb")
}

pub(crate) fn receipts(
    cmd: &ReceiptsCommand,
    node: &NodeArgs,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let store = ReceiptStore::open(&receipts_path(node))?;
    match cmd {
        ReceiptsCommand::List { limit } => {
            let list = store.latest(*limit)?;
            if node.json {
                let rows: Vec<_> = list.iter().map(stored_json).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&rows).unwrap_or_default())?;
            } else if list.is_empty() {
                writeln!(out, "no receipts yet")?;
            } else {
                writeln!(
                    out,
                    "{:<66}  {:<42}  {:>6}  {:>6}  {:>20}  KIND",
                    "REQUEST DIGEST", "EXECUTOR", "IN", "OUT", "COST WEI"
                )?;
                for r in &list {
                    let c = &r.response.commitment;
                    let kind = if r.text.is_some() { "final" } else { "checkpoint" };
                    writeln!(
                        out,
                        "{:<66}  {:<42}  {:>6}  {:>6}  {:>20}  {kind}",
                        r.digest().to_string(),
                        r.executor().to_checksum(None),
                        c.inputTokens,
                        c.outputTokens,
                        c.totalCost.to_string()
                    )?;
                }
            }
        }
        ReceiptsCommand::Show { digest } => {
            let receipt = store
                .get(digest)?
                .ok_or_else(|| Error::State(format!("no receipt for request {digest}")))?;
            // In full: what was asked, as signed, besides what was answered.
            let mut json = stored_json(&receipt);
            if let Some(fields) = json.as_object_mut() {
                let body = &receipt.request.body;
                fields.insert("messages".into(), serde_json::json!(body.messages));
                fields.insert("sampling".into(), serde_json::json!(body.sampling));
                // The signed limits and prices the cost was checked against.
                let q = &receipt.request.commitment;
                fields.insert("max_input_tokens".into(), q.maxInputTokens.into());
                fields.insert("max_output_tokens".into(), q.maxOutputTokens.into());
                fields.insert(
                    "price_per_input_token".into(),
                    q.pricePerInputToken.to_string().into(),
                );
                fields.insert(
                    "price_per_output_token".into(),
                    q.pricePerOutputToken.to_string().into(),
                );
                fields.insert("deadline".into(), q.deadline.into());
            }
            writeln!(out, "{}", serde_json::to_string_pretty(&json).unwrap_or_default())?;
        }
    }
    Ok(())
}

fn stored_json(r: &crate::receipts::StoredReceipt) -> serde_json::Value {
    let (q, c) = (&r.request.commitment, &r.response.commitment);
    serde_json::json!({
        "request_digest": r.digest().to_string(),
        "executor": r.executor().to_checksum(None),
        "client": q.client.to_checksum(None),
        "model": q.model,
        "nonce": q.nonce,
        "input_tokens": c.inputTokens,
        "output_tokens": c.outputTokens,
        "cost_wei": c.totalCost.to_string(),
        "finish_reason": c.finishReason,
        "final": r.text.is_some(),
        "text": r.text,
        "stored_at": r.stored_at,
        "request_signature": r.request.signature.to_string(),
        "response_signature": r.response.signature.to_string(),
    })
}

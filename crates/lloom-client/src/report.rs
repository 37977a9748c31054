//! How a verified receipt is shown: a human summary and a JSON object.

use crate::client::Receipt;

/// A multi-line summary: executor, usage, cost, the checks passed, and failed attempts.
pub fn render_receipt(receipt: &Receipt, verbose: bool) -> String {
    let c = &receipt.request.commitment;
    let mut lines = vec![
        "── verified receipt ─────────────────────────────────────".to_owned(),
        format!("executor       {} ({})", receipt.executor.to_checksum(None), receipt.peer),
        format!("model          {}", c.model),
        format!(
            "tokens         {} in, {} out (finish: {})",
            receipt.input_tokens,
            receipt.output_tokens,
            receipt.finish.as_str()
        ),
        format!(
            "cost           {} wei = {} × {} + {} × {}",
            receipt.cost,
            receipt.input_tokens,
            c.pricePerInputToken,
            receipt.output_tokens,
            c.pricePerOutputToken
        ),
        format!("request digest {}", receipt.request.digest()),
        format!("time to first  {:.0} ms", receipt.ttft.as_secs_f64() * 1000.0),
        "signatures     request signed by this client; response signed by the executor".to_owned(),
    ];
    for check in &receipt.checks {
        lines.push(format!("  ✓ {check}"));
    }
    let failed: Vec<_> = receipt.attempts.iter().filter(|a| a.failure.is_some()).collect();
    if verbose || !failed.is_empty() {
        for attempt in failed {
            let failure = attempt.failure.as_ref().map(ToString::to_string).unwrap_or_default();
            let cooldown = match attempt.cooldown {
                Some(d) => format!(" (cooled down {d:?})"),
                None => " (it had moved: tried again where it announces itself now)".to_owned(),
            };
            lines.push(format!("  ✗ {}: {failure}{cooldown}", attempt.executor));
        }
    }
    lines.join("\n")
}

/// The receipt as JSON (the signed request and response included, for settlement tools).
pub fn receipt_json(receipt: &Receipt) -> serde_json::Value {
    let r = &receipt.response;
    serde_json::json!({
        "text": receipt.text,
        "executor": receipt.executor.to_checksum(None),
        "peer_id": receipt.peer.to_string(),
        "model": receipt.request.commitment.model,
        "input_tokens": receipt.input_tokens,
        "output_tokens": receipt.output_tokens,
        "cost_wei": receipt.cost.to_string(),
        "finish_reason": receipt.finish.as_str(),
        "ttft_ms": receipt.ttft.as_secs_f64() * 1000.0,
        "request_digest": receipt.request.digest().to_string(),
        "request_signature": receipt.request.signature.to_string(),
        "response_digest": r.digest().to_string(),
        "response_signature": r.signature.to_string(),
        "content_hash": r.commitment.contentHash.to_string(),
        "checks": receipt.checks,
        "attempts": receipt.attempts.iter().map(|a| serde_json::json!({
            "executor": a.executor.to_checksum(None),
            "failure": a.failure.as_ref().map(ToString::to_string),
            "cooldown_secs": a.cooldown.map(|d| d.as_secs_f64()),
        })).collect::<Vec<_>>(),
    })
}

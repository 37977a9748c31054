//! `lloom-client executors`: each verified offer on its own line, with the weights it
//! serves, so a user can see exactly whom a request may go to and for what.

use serde_json::{Value, json};

use crate::directory::Candidate;

/// The offers as an aligned table: executor, model, prices, context, quantization, the first
/// bytes of the weights' sha256, load and capabilities.
pub fn render_executors(offers: &[Candidate]) -> String {
    if offers.is_empty() {
        return "no executors on offer".to_owned();
    }
    let rows: Vec<Vec<String>> = offers
        .iter()
        .map(|c| {
            let o = &c.offer;
            vec![
                c.address.to_checksum(None),
                o.model.clone(),
                o.price_per_input_token.to_string(),
                o.price_per_output_token.to_string(),
                o.context_length.to_string(),
                o.quantization.clone().unwrap_or_else(|| "-".into()),
                o.weights_sha256.map_or_else(
                    || "-".into(),
                    |h| format!("{}…", h.to_string().chars().take(10).collect::<String>()),
                ),
                format!(
                    "{}/{} free, {} queued",
                    c.load.free_slots, c.load.max_concurrency, c.load.queue_depth
                ),
                if o.capabilities.is_empty() { "-".into() } else { o.capabilities.join(",") },
            ]
        })
        .collect();
    let header = [
        "EXECUTOR",
        "MODEL",
        "INPUT WEI/TOKEN",
        "OUTPUT WEI/TOKEN",
        "CONTEXT",
        "QUANT",
        "WEIGHTS SHA256",
        "SLOTS",
        "CAPABILITIES",
    ];
    crate::table::aligned(&header, &rows)
}

/// The offers as JSON, in full (peer id, addresses and the whole sha256 included).
pub fn executors_json(offers: &[Candidate]) -> Value {
    Value::Array(
        offers
            .iter()
            .map(|c| {
                let o = &c.offer;
                json!({
                    "executor": c.address.to_checksum(None),
                    "peer_id": c.peer.to_string(),
                    "addrs": c.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "model": o.model,
                    "input_price_wei": o.price_per_input_token.to_string(),
                    "output_price_wei": o.price_per_output_token.to_string(),
                    "context_length": o.context_length,
                    "quantization": o.quantization,
                    "weights_sha256": o.weights_sha256.map(|h| h.to_string()),
                    "capabilities": o.capabilities,
                    "free_slots": c.load.free_slots,
                    "max_concurrency": c.load.max_concurrency,
                    "queue_depth": c.load.queue_depth,
                    "free_memory_bytes": c.load.free_memory_bytes,
                })
            })
            .collect(),
    )
}

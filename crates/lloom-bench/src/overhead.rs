//! P1: a full signed round trip (client → executor → instant backend → client, every
//! signature made and checked) next to a direct HTTP call to an equally instant
//! OpenAI-compatible server, in the same run; and the same call through the client's
//! OpenAI-compatible gateway (HTTP in, the signed round trip, HTTP out), what an SDK sees,
//! without and with an API key that has a budget (each answer then commits its cost to the
//! gateway's spend ledger before it is sent).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use lloom_client::ChatRequest;
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::serve::{Receipt, ReceiptStore};

use crate::net::{self, MODEL};

const WARMUP: usize = 200;
/// Receipt commits timed alone for the floor.
const FLOOR_COMMITS: usize = 500;

/// p50 and p99 of one durable commit of a receipt, alone: each of `receipts` (real ones, from
/// the run) put into a fresh receipt store in the same temporary directory the executor's
/// stores use. The floor the required receipt sync puts under P1 on this disk.
fn receipt_commit_cost(receipts: &[Receipt]) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let store = ReceiptStore::open(&dir.path().join("floor.redb"))?;
    let mut samples = Vec::with_capacity(receipts.len());
    for receipt in receipts {
        let start = Instant::now();
        store.put(receipt)?;
        samples.push(start.elapsed());
    }
    Ok(net::percentiles(&mut samples))
}

/// The instant OpenAI-compatible server: one content chunk, usage, `[DONE]`.
async fn instant_completion() -> impl IntoResponse {
    let body = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1}}\n\n",
        "data: [DONE]\n\n"
    );
    ([("content-type", "text/event-stream")], body)
}

/// Times `requests` streamed completions posted to `url` (after [`WARMUP`]), with `bearer` as
/// the API key if given.
async fn time_http(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
    requests: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(requests);
    for i in 0..WARMUP + requests {
        let start = Instant::now();
        let mut post = http.post(url).json(body);
        if let Some(key) = bearer {
            post = post.bearer_auth(key);
        }
        let response = post.send().await?;
        anyhow::ensure!(response.status().is_success(), "{url} answered {}", response.status());
        let text = response.text().await?;
        anyhow::ensure!(text.ends_with("data: [DONE]\n\n"), "unexpected answer {text}");
        if i >= WARMUP {
            samples.push(start.elapsed());
        }
    }
    Ok(samples)
}

/// The key of the gateway with a budget.
const API_KEY: &str = "bench-key-0123456789abcdef";

/// A gateway whose one API key has a budget (more than the run spends); returns its
/// completions URL, what stops it, and the directory of its spend ledger (and receipts).
async fn keyed_gateway(
    network: &net::LocalNet,
    client_receipts: bool,
) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>, tempfile::TempDir)> {
    use lloom_client::gateway::{ApiKeys, GatewayConfig, SpendLedger};
    let dir = tempfile::tempdir()?;
    let client = network.client_with(net::client_receipts(&dir, client_receipts)?).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/chat/completions", listener.local_addr()?);
    let api_keys = ApiKeys::single(API_KEY)?.with_default_budget(lloom_core::U256::from(u64::MAX));
    let ledger = SpendLedger::open(&dir.path().join("gateway-spend.redb"))?;
    let config = GatewayConfig {
        api_keys,
        spend_ledger: Some(Arc::new(ledger)),
        ..GatewayConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(lloom_client::gateway::serve(client, listener, config, async move {
        let _ = stopped.await;
    }));
    Ok((url, stop, dir))
}

pub(crate) async fn run(requests: usize, client_receipts: bool) -> anyhow::Result<()> {
    let backend = Arc::new(ScriptedBackend::new(Script::answer(MODEL, "ok")));
    let network = net::start(vec![backend], 0).await?;
    let receipts_dir = tempfile::tempdir()?;
    let client = network.client_with(net::client_receipts(&receipts_dir, client_receipts)?).await?;
    let ask = || ChatRequest { max_tokens: 1, ..ChatRequest::user(MODEL, "hi") };
    let mut lloom = Vec::with_capacity(requests);
    for i in 0..WARMUP + requests {
        let start = Instant::now();
        client.chat(ask()).await?.collect().await?;
        if i >= WARMUP {
            lloom.push(start.elapsed());
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/chat/completions", listener.local_addr()?);
    let app =
        axum::Router::new().route("/v1/chat/completions", axum::routing::post(instant_completion));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let body = serde_json::json!({
        "model": MODEL, "stream": true, "max_tokens": 1,
        "messages": [{"role": "user", "content": "hi"}],
    });
    let mut direct = time_http(&http, &url, None, &body, requests).await?;

    let gateway_client =
        network.client_with(net::client_receipts(&receipts_dir, client_receipts)?).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway_url = format!("http://{}/v1/chat/completions", listener.local_addr()?);
    let config = lloom_client::gateway::GatewayConfig::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(lloom_client::gateway::serve(gateway_client, listener, config, async move {
        let _ = stopped.await;
    }));
    let mut gateway = time_http(&http, &gateway_url, None, &body, requests).await?;
    let _ = stop.send(());

    let (keyed_url, stop_keyed, _ledger_dir) = keyed_gateway(&network, client_receipts).await?;
    let mut keyed = time_http(&http, &keyed_url, Some(API_KEY), &body, requests).await?;
    let _ = stop_keyed.send(());

    let (l50, l99) = net::percentiles(&mut lloom);
    let (d50, d99) = net::percentiles(&mut direct);
    let (g50, g99) = net::percentiles(&mut gateway);
    let (k50, k99) = net::percentiles(&mut keyed);
    let keeping = if client_receipts { ", the client keeping receipts" } else { "" };
    println!("P1 overhead, {requests} sequential requests each (after {WARMUP} warm-up){keeping}");
    println!("  signed round trip over libp2p : p50 {l50:8.0} µs   p99 {l99:8.0} µs");
    println!("  direct HTTP to instant server : p50 {d50:8.0} µs   p99 {d99:8.0} µs");
    println!(
        "  added by Lloom                : p50 {:8.0} µs   p99 {:8.0} µs   (goal ≤ 500 / ≤ 2000)",
        l50 - d50,
        l99 - d99
    );
    println!(
        "  through the OpenAI gateway    : p50 {g50:8.0} µs   p99 {g99:8.0} µs   (HTTP in and out, streamed)"
    );
    println!(
        "  gateway added over direct HTTP: p50 {:8.0} µs   p99 {:8.0} µs",
        g50 - d50,
        g99 - d99
    );
    println!(
        "  gateway, API key with a budget: p50 {k50:8.0} µs   p99 {k99:8.0} µs   (each answer's cost committed to the spend ledger)"
    );
    let receipts = match network.executors.first() {
        Some(executor) => executor.server.receipts().all(FLOOR_COMMITS)?,
        None => Vec::new(),
    };
    let (f50, f99) = tokio::task::spawn_blocking(move || receipt_commit_cost(&receipts)).await??;
    println!(
        "  of which one receipt commit   : p50 {f50:8.0} µs   p99 {f99:8.0} µs   (the durable write the protocol requires; measured alone)"
    );
    drop(client);
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

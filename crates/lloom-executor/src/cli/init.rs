//! `lloom-executor init`: writes a commented configuration file with every setting.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use lloom_core::cli::{NodeArgs, Role};

use super::start_args::{DEFAULT_PRICE_PER_INPUT_TOKEN, DEFAULT_PRICE_PER_OUTPUT_TOKEN};
use crate::backend::llama::EngineConfig;
use crate::error::{Error, Result};

/// Options of `lloom-executor init`.
#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    /// Where to write the file [default: DATA_DIR/lloom.toml].
    #[arg(long, value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

/// The commented configuration, with the defaults filled in.
pub fn template() -> String {
    let engine = EngineConfig::default();
    format!(
        r#"# Lloom executor configuration. Flags and LLOOM_* environment variables override it.
# Use it with: lloom-executor --config <this file> start

[network]
# Where to listen (TCP and QUIC on a random port by default).
listen = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
# Validators to join, each ending in /p2p/<peer id>.
bootstrap = []
# Find peers on the local network with mDNS.
mdns = true

[executor]
# A GGUF file to serve; leave unset to serve the default model (fetched on first start).
# model_path = "/models/my-model.Q4_K_M.gguf"
# The model name clients ask for (default: the file stem).
# model_name = "my-model"
# Prices in wei per token.
price_per_input_token = {price_in}
price_per_output_token = {price_out}
# Sequences decoded together (continuous batching) and the KV cache they share, in tokens.
max_sequences = {sequences}
n_ctx = {n_ctx}
# Element type of the KV cache: "f16", or "q8_0" / "q4_0" to hold about 2x / 3.5x the tokens
# in the same memory (more sequences fit the budget) at a small cost in accuracy.
kv_cache_type = "{kv_cache}"
# Layers to offload to the GPU in a cuda build: "auto" (as many as the memory budget holds),
# "all", or a number (0 keeps the model on the CPU); a number or "all" that does not fit is
# refused at start.
gpu_layers = "{offload}"
# A signed checkpoint every this many output tokens (0: none).
checkpoint_every = 32
# Per-client limits.
requests_per_minute = 600
# tokens_per_minute = 100000
# Most milliseconds between disk syncs of the nonce store (0: every request; at most 60000).
# Answered requests are refused from the receipts, which are always synced, so this only bounds
# what a crash can forget of requests that never finished.
nonce_sync_ms = 1000
# Microseconds the receipt writer waits for more receipts when others are already waiting, or
# when 4 or more other requests are being served, so a busy executor syncs less often (0: never
# wait; at most 100000). On an idle executor a request never waits.
commit_delay_us = 1000
# Requests one client may have waiting for the engine (clients are served in turn).
queue_per_client = {per_client}
# On Ctrl-C or SIGTERM: withdraw, refuse new requests (signed Busy) and let the answers under
# way finish for up to this many seconds before stopping (0: stop at once; at most 3600).
drain_secs = 30
# Memory the models may use: a size ("20GiB") or a share of the memory free at start ("0.9");
# host RAM, or GPU memory (read through NVML) in a cuda build.
memory_budget = "0.9"

# Several models instead of model_path: planned within the memory budget, the first loaded at
# start, the others on their first request; the least recently used idle model is unloaded
# when the budget is full. Unset keys take the [executor] values.
# [[executor.models]]
# name = "SmolLM2-135M-Instruct"
# [[executor.models]]
# path = "/models/other.Q4_K_M.gguf"
# name = "other"
# price_per_output_token = 4000
# n_ctx = 16384
"#,
        per_client = engine.queue_per_client,
        price_in = DEFAULT_PRICE_PER_INPUT_TOKEN,
        price_out = DEFAULT_PRICE_PER_OUTPUT_TOKEN,
        sequences = engine.max_sequences,
        n_ctx = engine.n_ctx,
        kv_cache = engine.kv_cache,
        offload = engine.offload,
    )
}

pub(super) fn run(args: &InitArgs, node: &NodeArgs, out: &mut (dyn Write + Send)) -> Result<()> {
    let path =
        args.path.clone().unwrap_or_else(|| node.data_dir(Role::Executor).join("lloom.toml"));
    if path.exists() && !args.force {
        return Err(Error::EngineConfig(format!(
            "{} exists; pass --force to replace it",
            path.display()
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, template())?;
    writeln!(out, "wrote {}", path.display())?;
    writeln!(out, "start with: lloom-executor --config {} start", path.display())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_a_valid_config_with_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lloom.toml");
        std::fs::write(&path, template()).unwrap();
        let file = lloom_core::cli::ConfigFile::load(&path).unwrap();
        assert_eq!(file.executor.price_per_input_token, Some(DEFAULT_PRICE_PER_INPUT_TOKEN));
        assert_eq!(file.executor.max_sequences, Some(EngineConfig::default().max_sequences));
        assert_eq!(file.network.mdns, Some(true));
        assert_eq!(file.executor.kv_cache_type.as_deref(), Some("f16"));
        let layers = file.executor.gpu_layers.as_ref().map(ToString::to_string);
        assert_eq!(layers.as_deref(), Some("auto"));
        assert_eq!(file.executor.model_path, None);
    }
}

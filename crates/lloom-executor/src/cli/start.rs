//! `lloom-executor start`: serve models on the network until interrupted.

use std::io::Write;
use std::time::Duration;

use lloom_core::ModelOffer;
use lloom_core::cli::{NodeArgs, Role};
use lloom_core::http::{HttpLimits, HttpServer};
use lloom_core::identity::load_key;
use std::sync::Arc;

use super::Bar;
use super::start_args::StartArgs;
use crate::backend::llama::ModelPool;
use crate::backend::openai::{OpenAiBackend, OpenAiConfig};
use crate::error::{Error, Result};
use crate::memory::{ServingDevice, format_bytes};
use crate::metrics::ExecutorMetrics;
use crate::models::{ModelChoice, PreparedModels, prepare_models};
use crate::node::{ExecutorNode, FreeMemory};
use crate::serve::{EscrowPolicy, ServedModel};
use crate::settle::{FinalRound, SettlerConfig, spawn_settler};
use lloom_core::DomainConfig;
use lloom_core::announce::CAPABILITY_JSON;
use lloom_core::chain::Settlement;
use tokio_util::sync::CancellationToken;

/// Runs `start`: loads the key and the model, joins the network, serves until a signal.
pub(super) async fn run(
    args: &StartArgs,
    node: &NodeArgs,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let file = node.config_file()?;
    // Handlers first: a signal sent as soon as the addresses are printed must stop us cleanly.
    let mut signal = lloom_core::cli::ShutdownSignal::install()?;
    let key = load_key(&node.key_path(Role::Executor), &node.password_source())?;
    let choice = args.model_choice(&file)?;
    let budget = args.memory_budget(&file)?;
    let drain = Duration::from_secs(args.drain_secs(&file)?);
    let mut config = args.executor_config(&file, node.data_dir(Role::Executor));
    // Before the model loads: a bad setting should not cost the wait.
    config.serve.validate()?;
    config.announce.domain = node.domain();
    let chain = match &args.rpc_url {
        Some(url) => {
            let contract = node.require_contract()?;
            let chain = Settlement::at(url, &key, contract)?;
            let chain_id = chain.chain_id().await?;
            if node.chain_id.is_some_and(|id| id != chain_id) {
                return Err(Error::Backend(format!(
                    "--chain-id {} does not match the chain at {url} ({chain_id})",
                    node.domain().chain_id
                )));
            }
            config.announce.domain = DomainConfig { chain_id, verifying_contract: contract };
            if let Some(minimum) = &args.min_escrow {
                let minimum = lloom_core::chain::parse_amount(minimum)?;
                let policy = EscrowPolicy::new(chain.clone(), minimum, Duration::from_secs(30));
                config.serve.escrow = Some(Arc::new(policy));
            }
            Some(chain)
        }
        None => None,
    };
    let mut pool = None;
    let mut http = None;
    let models = match &args.backend_url {
        Some(url) => {
            let (served, backend) = http_backend(args, url, &choice).await?;
            http = Some(backend);
            vec![served]
        }
        None => {
            let choices = args.model_choices(&file)?;
            writeln!(out, "loading the model ...")?;
            out.flush()?;
            let bar = Bar::stderr();
            let prepared =
                tokio::task::spawn_blocking(move || prepare_models(&choices, budget, &bar))
                    .await
                    .map_err(|e| Error::Io(std::io::Error::other(e)))??;
            write_plan(out, &prepared)?;
            config.max_concurrency = prepared
                .plans
                .iter()
                .map(|p| p.max_sequences)
                .max()
                .map_or(config.max_concurrency, |n| u32::try_from(n).unwrap_or(u32::MAX));
            config.free_memory = Some(pool_headroom(prepared.pool.clone()));
            pool = Some(prepared.pool.clone());
            prepared.served
        }
    };
    let offers: Vec<ModelOffer> = models.iter().map(|m| m.offer.clone()).collect();
    let free_memory = config.free_memory.clone();
    let mut executor = ExecutorNode::start(&key, models, config).await?;
    writeln!(out, "executor {} ({})", key.address().to_checksum(None), key.peer_id())?;
    for offer in &offers {
        writeln!(
            out,
            "serving {} ({}, sha256 {}) at {}/{} wei per input/output token, context {}",
            offer.model,
            offer.quantization.as_deref().unwrap_or("unknown quantization"),
            offer.weights_sha256.map(|h| h.to_string()).unwrap_or_default(),
            offer.price_per_input_token,
            offer.price_per_output_token,
            offer.context_length
        )?;
    }
    for addr in executor.listen_addrs().await? {
        writeln!(out, "listening on {addr}")?;
    }
    let stop = CancellationToken::new();
    if let Some(backend) = http {
        let every = Duration::from_secs(args.backend_check_secs);
        let stopped = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stopped.cancelled() => {}
                () = backend.watch(every) => {}
            }
        });
    }
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::Io(std::io::Error::new(e.kind(), format!("metrics on {addr}: {e}")))
        })?;
        writeln!(out, "metrics on http://{}/metrics", listener.local_addr()?)?;
        let metrics = ExecutorMetrics {
            server: executor.server.clone(),
            pool,
            free_memory,
            network: Some(executor.network.clone()),
        };
        let stopped = stop.clone();
        tokio::spawn(async move {
            // Scrapers need few connections; the limits keep idle ones from piling up.
            let limits = HttpLimits { max_connections: 64, ..HttpLimits::default() };
            let serve = HttpServer::new(listener, limits)
                .serve(metrics.router(), async move { stopped.cancelled().await });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "the metrics server stopped");
            }
        });
    }
    let mut settler_task = None;
    if let Some(chain) = chain {
        writeln!(
            out,
            "settling receipts with contract {} every {}s",
            chain.address(),
            args.settle_interval_secs
        )?;
        let settler = SettlerConfig {
            interval: Duration::from_secs(args.settle_interval_secs.max(1)),
            final_round: Duration::from_secs(args.settle_on_stop_secs),
            ..SettlerConfig::default()
        };
        settler_task = Some(spawn_settler(executor.server.clone(), chain, settler, stop.clone()));
    }
    out.flush()?;
    signal.next().await;
    writeln!(out, "shutting down: withdrawing the offers, refusing new requests")?;
    out.flush()?;
    let withdrawn = executor.start_draining().await;
    let in_flight = executor.server.in_flight();
    if in_flight > 0 && !drain.is_zero() {
        writeln!(
            out,
            "waiting up to {} s for {in_flight} request(s) in flight to finish (a second signal stops now)",
            drain.as_secs()
        )?;
        out.flush()?;
        let cut = tokio::select! {
            cut = executor.wait_drained(drain) => cut,
            () = signal.next() => executor.server.in_flight(),
        };
        match cut {
            0 => writeln!(out, "every request in flight finished")?,
            cut => {
                writeln!(out, "stopping with {cut} request(s) unfinished; their clients fail over")?
            }
        }
    }
    if settler_task.is_some() && args.settle_on_stop_secs > 0 {
        writeln!(
            out,
            "submitting the receipts not yet settled (at most {} s; a second signal stops now)",
            args.settle_on_stop_secs
        )?;
        out.flush()?;
    }
    stop.cancel();
    if let Some(mut task) = settler_task {
        tokio::select! {
            last = &mut task => match last {
                Ok(last) => writeln!(out, "{}", describe_final_round(&last))?,
                // The shutdown goes on (the nonces are still written): the receipts stay in
                // the store for the next start.
                Err(e) => writeln!(out, "the settler stopped abnormally ({e}); the receipts not confirmed wait for the next start")?,
            },
            () = signal.next() => {
                task.abort();
                writeln!(out, "the last settlement round was cut short; the receipts not confirmed wait for the next start")?;
            }
        }
    }
    executor.shutdown().await?;
    withdrawn
}

/// One line on how the settler's last round went.
fn describe_final_round(last: &FinalRound) -> String {
    match last {
        FinalRound::Skipped => "no last settlement round (--settle-on-stop-secs 0): the receipts not yet settled wait for the next start".into(),
        FinalRound::Done(r) if r.transactions == 0 => "no receipts were waiting to be settled".into(),
        FinalRound::Done(r) => format!(
            "settled {} receipts for {} wei in {} transaction(s){}",
            r.settled,
            r.earned,
            r.transactions,
            if r.pending > 0 {
                format!("; {} wait for their clients' escrow", r.pending)
            } else {
                String::new()
            }
        ),
        FinalRound::Failed(e) => {
            format!("the last settlement round failed ({e}); the receipts wait for the next start")
        }
        FinalRound::TimedOut => "the last settlement round ran out of time; the receipts not confirmed wait for the next start".into(),
    }
}

/// Prints the device, the budget and each model's plan.
fn write_plan(out: &mut (dyn Write + Send), prepared: &PreparedModels) -> Result<()> {
    let device = prepared.device.as_ref().map_or_else(
        || "memory unknown".to_owned(),
        |d| format!("{}: {} free of {}", d.name, format_bytes(d.free), format_bytes(d.total)),
    );
    writeln!(out, "memory budget {} ({device})", format_bytes(prepared.pool.budget()))?;
    for (model, plan) in prepared.served.iter().zip(&prepared.plans) {
        writeln!(
            out,
            "  {}: {} sequences of {} tokens ({} KV cache, {} each), {} layers on the GPU, needs {} GPU + {} host",
            model.offer.model,
            plan.max_sequences,
            plan.ctx_per_sequence,
            plan.kv,
            format_bytes(plan.kv_bytes_per_sequence),
            plan.gpu_layers,
            format_bytes(plan.gpu_bytes),
            format_bytes(plan.host_bytes)
        )?;
    }
    Ok(())
}

/// The memory the pool could still load models into; on a GPU build, also bounded by what
/// NVML reports free now (rounded down to 64 MiB so noise does not trigger announcements).
fn pool_headroom(pool: Arc<ModelPool>) -> FreeMemory {
    FreeMemory::new(move || {
        let headroom = pool.budget().saturating_sub(pool.used_bytes());
        match ServingDevice::of_this_build() {
            ServingDevice::Host => headroom,
            ServingDevice::Gpu => ServingDevice::Gpu
                .memory()
                .map_or(headroom, |m| headroom.min(m.free) & !((64 << 20) - 1)),
        }
    })
}

/// An OpenAI-compatible server as the backend (served, and for its watch); checked to list
/// the model before serving.
async fn http_backend(
    args: &StartArgs,
    url: &str,
    choice: &ModelChoice,
) -> Result<(ServedModel, Arc<OpenAiBackend>)> {
    let remote = args.backend_model.clone().or_else(|| choice.name.clone()).ok_or_else(|| {
        Error::Backend("--backend-url needs --backend-model or --model-name".into())
    })?;
    let mut config = OpenAiConfig::new(url, remote.clone());
    config.served_model = choice.name.clone().unwrap_or(remote);
    config.api_key = std::env::var(&args.backend_api_key_env).ok().filter(|k| !k.is_empty());
    config.max_concurrent = choice.engine.max_sequences.max(1) as usize * 4;
    config.context_length = args.context_length;
    let backend = Arc::new(OpenAiBackend::new(config.clone())?);
    let server = backend.probe().await?;
    let offer = ModelOffer {
        context_length: http_context_length(args.context_length, server.context_length),
        model: config.served_model,
        price_per_input_token: choice.price_per_input_token,
        price_per_output_token: choice.price_per_output_token,
        weights_sha256: None,
        quantization: None,
        capabilities: http_capabilities(args.backend_json),
    };
    Ok((ServedModel { offer, backend: backend.clone() }, backend))
}

/// The context an HTTP backend's offer announces: `--context-length` if given (with a warning
/// when it is more than the server reports), else what the server reports, else
/// [`DEFAULT_HTTP_CONTEXT`].
fn http_context_length(given: Option<u32>, reported: Option<u32>) -> u32 {
    match (given, reported) {
        (Some(given), Some(reported)) if given > reported => {
            tracing::warn!(
                "--context-length {given} is more than the {reported} tokens the server reports \
                 for a request; it will refuse prompts that need more"
            );
            given
        }
        (Some(given), _) => given,
        (None, Some(reported)) => {
            tracing::info!("the server gives a request {reported} tokens of context; announced");
            reported
        }
        (None, None) => {
            tracing::warn!(
                "the server does not report its context length; {DEFAULT_HTTP_CONTEXT} is \
                 announced (set --context-length to the server's)"
            );
            DEFAULT_HTTP_CONTEXT
        }
    }
}

/// The context announced for an HTTP backend that reports none, when none is configured.
const DEFAULT_HTTP_CONTEXT: u32 = 4096;

/// What an HTTP backend's offer announces: `json` only where the operator vouches for it.
fn http_capabilities(holds_json: bool) -> Vec<String> {
    let mut capabilities = vec!["chat".to_owned(), "stream".to_owned()];
    if holds_json {
        capabilities.push(CAPABILITY_JSON.to_owned());
    }
    capabilities
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::cli::start_args::parsed as start_args;
    use clap::Parser;

    #[test]
    fn an_http_backend_announces_the_context_given_else_the_servers_else_the_default() {
        assert_eq!(http_context_length(Some(2048), Some(8192)), 2048);
        assert_eq!(http_context_length(Some(16_384), Some(8192)), 16_384, "given wins, warned");
        assert_eq!(http_context_length(Some(2048), None), 2048);
        assert_eq!(http_context_length(None, Some(32_768)), 32_768);
        assert_eq!(http_context_length(None, None), DEFAULT_HTTP_CONTEXT);
        let url = ["--backend-url", "http://127.0.0.1:9/v1"];
        assert_eq!(start_args(&url).context_length, None);
        let argv = ["lloom-executor", "start", url[0], url[1], "--context-length", "0"];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn an_http_backend_announces_json_only_when_the_operator_says_it_holds_to_it() {
        let args = start_args(&["--backend-url", "http://127.0.0.1:1/v1", "--backend-json"]);
        assert!(args.backend_json);
        assert_eq!(http_capabilities(args.backend_json), ["chat", "stream", CAPABILITY_JSON]);
        let args = start_args(&["--backend-url", "http://127.0.0.1:1/v1"]);
        assert_eq!(http_capabilities(args.backend_json), ["chat", "stream"]);
        // Without an HTTP backend the flag means nothing, and is refused.
        let argv = ["lloom-executor", "start", "--backend-json"];
        assert!(Cli::try_parse_from(argv).is_err());
    }
}

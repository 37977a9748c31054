//! `lloom-client serve`: its options, the checks made before anything starts (API keys,
//! budgets, an open gateway beyond loopback), and running the OpenAI-compatible gateway.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use lloom_core::U256;
use lloom_core::cli::NodeArgs;
use lloom_core::http::HttpLimits;
use lloom_core::rate_limit::RateLimits;

use crate::cli::{DiscoveryArgs, EscrowArgs, RoutingArgs, connect};
use crate::error::{Error, Result};
use crate::gateway::{ApiKeys, BudgetPeriod, GatewayConfig};

/// Options of `lloom-client serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// How executors are chosen and waited for.
    #[command(flatten)]
    pub routing: RoutingArgs,
    /// Cap on the answer of a request that gives no `max_tokens` (by default it may use all
    /// the context the prompt leaves, as with OpenAI).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub default_max_tokens: Option<u32>,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds for one completion, failovers included.
    #[arg(long, default_value_t = 120)]
    pub request_timeout_secs: u64,
    /// Most completions under way at once (streams until they end); more get a 429.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_concurrent: u32,
    /// Most HTTP connections held at once; one more is closed as soon as it is accepted.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,
    /// Seconds a connection gets to send a request's headers (from its start, or the end of
    /// the previous response) before it is closed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,
    /// On Ctrl-C or SIGTERM, seconds the answers under way get to finish (no new connection is
    /// taken, idle ones close) before the gateway stops; a second signal stops at once.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_secs: u64,
    /// Seconds a request's body gets to arrive once its headers have (then 408).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_secs: u64,
    /// A key every `/v1/*` request must present as `Authorization: Bearer <key>` (16 to 256
    /// printable characters); prefer the environment variable, which `ps` does not show.
    #[arg(long, env = "LLOOM_GATEWAY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// A file of keys, one per line as `NAME KEY BUDGET`, `NAME KEY` or `KEY` (`#` starts a
    /// comment); each name labels its key's usage in `/metrics`, and a budget (wei, or ether
    /// as `0.01eth`) is the most the key may spend.
    #[arg(long, env = "LLOOM_GATEWAY_API_KEY_FILE")]
    pub api_key_file: Option<std::path::PathBuf>,
    /// The most each API key may spend (wei, or ether as `0.01eth`), for keys whose line in
    /// the key file gives no budget; a key that has spent it is answered 402.
    #[arg(long, value_parser = parse_budget)]
    pub key_budget: Option<U256>,
    /// Where each API key's spend is kept across restarts (default: `gateway-spend.redb` in
    /// the client's data directory).
    #[arg(long)]
    pub spend_ledger: Option<std::path::PathBuf>,
    /// Make every key's budget whole again each UTC day, week (from Monday) or month: `daily`,
    /// `weekly` or `monthly` (default: budgets are for the gateway's life).
    #[arg(long, value_parser = clap::builder::ValueParser::new(str::parse::<BudgetPeriod>))]
    pub key_budget_period: Option<BudgetPeriod>,
    /// Requests per minute each API key may make (burst: the same number).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub key_requests_per_minute: Option<u32>,
    /// Completion tokens per minute each API key may use (charged as answers end).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub key_tokens_per_minute: Option<u32>,
    /// A key `GET /metrics` must present as `Authorization: Bearer <key>` (16 to 256
    /// printable characters, not one of the API keys); without one `/metrics` is open, and it
    /// names every API key with its spend.
    #[arg(long, env = "LLOOM_GATEWAY_METRICS_KEY", hide_env_values = true)]
    pub metrics_api_key: Option<String>,
    /// Listen on a non-loopback address without API keys, letting anyone who reaches it spend
    /// this client's funds.
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Highest price per token (input and output, in wei) any request may pay; a request's
    /// `lloom` ceilings may lower it, never raise it.
    #[arg(long, value_name = "WEI")]
    pub max_price: Option<U256>,
    /// How to find the network.
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
    /// Escrow check.
    #[command(flatten)]
    pub escrow: EscrowArgs,
}

fn parse_budget(text: &str) -> std::result::Result<U256, String> {
    match lloom_core::chain::parse_amount(text) {
        Ok(amount) => Ok(amount),
        Err(lloom_core::Error::Chain(reason)) => Err(reason),
        Err(other) => Err(other.to_string()),
    }
}

pub(crate) async fn serve(
    args: &ServeArgs,
    node: &NodeArgs,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let api_keys = gateway_keys(args)?;
    let metrics_keys = metrics_keys(args, &api_keys)?;
    // Every key's spend is kept, budget or not, so one given later counts from the start.
    let spend_ledger = match api_keys.is_empty() {
        true => None,
        false => {
            let path = args
                .spend_ledger
                .clone()
                .unwrap_or_else(|| crate::spend_cli::default_ledger_path(node));
            Some(std::sync::Arc::new(crate::gateway::SpendLedger::open(&path)?))
        }
    };
    let mut stop = lloom_core::cli::ShutdownSignal::install()?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let access = match api_keys.len() {
        0 => "no API key asked for".to_owned(),
        1 => "1 API key".to_owned(),
        n => format!("{n} API keys"),
    };
    let config = GatewayConfig {
        max_body_bytes: args.max_body_bytes,
        body_timeout: Duration::from_secs(args.body_timeout_secs),
        default_max_tokens: args.default_max_tokens,
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        api_keys,
        max_concurrent: args.max_concurrent as usize,
        key_limits: RateLimits {
            requests_per_minute: args.key_requests_per_minute,
            tokens_per_minute: args.key_tokens_per_minute,
            ..RateLimits::default()
        },
        http: HttpLimits {
            max_connections: args.max_connections as usize,
            header_timeout: Duration::from_secs(args.header_timeout_secs),
            shutdown_grace: Duration::from_secs(args.drain_secs),
        },
        spend_ledger,
        budget_period: args.key_budget_period,
        metrics_keys,
        max_price: args.max_price,
    };
    config.check()?;
    let client = connect(&args.discovery, node, &args.routing, &args.escrow).await?;
    writeln!(
        out,
        "OpenAI-compatible gateway on http://{}/v1 (client {}; {access})",
        listener.local_addr()?,
        client.address().to_checksum(None)
    )?;
    out.flush()?;
    let (drain, draining) = tokio::sync::oneshot::channel::<()>();
    let draining = async move {
        let _ = draining.await;
    };
    let serving = crate::gateway::serve(client.clone(), listener, config, draining);
    tokio::pin!(serving);
    tokio::select! {
        served = &mut serving => served?,
        () = stop.next() => {
            let _ = drain.send(());
            // A reader that went away (`serve | head -1`) must not stop the drain.
            let _ = writeln!(
                out,
                "shutting down: finishing the answers under way (up to {} s; a second signal stops now)",
                args.drain_secs
            );
            let _ = out.flush();
            tokio::select! {
                served = &mut serving => served?,
                () = stop.next() => {}
            }
        }
    }
    client.shutdown();
    // The gateway stopped cleanly; a reader that went away (`serve | head -1`) makes this
    // last line fail, not the shutdown.
    if let Err(e) = writeln!(out, "shutting down") {
        tracing::debug!("could not say so: {e}");
    }
    Ok(())
}

/// The gateway's API keys; refuses to expose an open gateway beyond loopback unless asked to.
fn gateway_keys(args: &ServeArgs) -> Result<ApiKeys> {
    let mut keys = ApiKeys::load(args.api_key.as_deref(), args.api_key_file.as_deref())?;
    let limited = args.key_requests_per_minute.is_some()
        || args.key_tokens_per_minute.is_some()
        || args.key_budget.is_some()
        || args.key_budget_period.is_some();
    if keys.is_empty() && limited {
        return Err(Error::ApiKeys(
            "--key-requests-per-minute, --key-tokens-per-minute, --key-budget and \
             --key-budget-period limit each API key: give --api-key or --api-key-file"
                .into(),
        ));
    }
    if let Some(budget) = args.key_budget {
        keys = keys.with_default_budget(budget);
    }
    if keys.is_empty() && !args.listen.ip().is_loopback() && !args.allow_unauthenticated {
        return Err(Error::ApiKeys(format!(
            "{} is reachable from other machines, and the gateway spends this client's funds: \
             give --api-key (or LLOOM_GATEWAY_API_KEY) or --api-key-file, or pass \
             --allow-unauthenticated to serve it open",
            args.listen
        )));
    }
    Ok(keys)
}

/// The key `/metrics` asks for, if any; warns when metrics naming API keys are open beyond
/// loopback.
fn metrics_keys(args: &ServeArgs, api_keys: &ApiKeys) -> Result<ApiKeys> {
    let Some(key) = &args.metrics_api_key else {
        if !api_keys.is_empty() && !args.listen.ip().is_loopback() {
            tracing::warn!(
                "/metrics is open to anyone who reaches {} and names every API key with its \
                 spend; give --metrics-api-key (or LLOOM_GATEWAY_METRICS_KEY) to close it",
                args.listen
            );
        }
        return Ok(ApiKeys::default());
    };
    let keys = ApiKeys::single(key).map_err(|e| match e {
        Error::ApiKeys(why) => Error::ApiKeys(format!("--metrics-api-key: {why}")),
        other => other,
    })?;
    if keys.shares_a_key_with(api_keys) {
        return Err(Error::ApiKeys(
            "--metrics-api-key is also an API key: give the metrics scraper a key of its own"
                .into(),
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn serve_args(line: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from([&["lloom-client", "serve"], line].concat()).unwrap();
        let Command::Serve(args) = cli.command else { panic!("expected serve") };
        args
    }

    #[test]
    fn an_open_gateway_is_refused_beyond_loopback_unless_asked_for() {
        let key = ["--api-key", "0123456789abcdef0123"];
        assert!(gateway_keys(&serve_args(&[])).unwrap().is_empty());
        assert!(gateway_keys(&serve_args(&["--listen", "[::1]:8080"])).unwrap().is_empty());
        let error = gateway_keys(&serve_args(&["--listen", "0.0.0.0:8080"])).unwrap_err();
        let error = error.to_string();
        assert!(error.contains("0.0.0.0:8080 is reachable from other machines"), "{error}");
        assert!(error.contains("--allow-unauthenticated"), "{error}");
        let open = serve_args(&["--listen", "0.0.0.0:8080", "--allow-unauthenticated"]);
        assert!(gateway_keys(&open).unwrap().is_empty());
        let keyed = serve_args(&[&["--listen", "0.0.0.0:8080"][..], &key].concat());
        assert_eq!(gateway_keys(&keyed).unwrap().len(), 1);
        let unkeyed_limit = serve_args(&["--key-requests-per-minute", "10"]);
        let error = gateway_keys(&unkeyed_limit).unwrap_err().to_string();
        assert!(error.contains("limit each API key"), "{error}");
        let keyed_limit = serve_args(&[&key[..], &["--key-tokens-per-minute", "100"]].concat());
        assert_eq!(gateway_keys(&keyed_limit).unwrap().len(), 1);
        for bad in ["0", "-1", "lots"] {
            let cli =
                Cli::try_parse_from(["lloom-client", "serve", "--key-requests-per-minute", bad]);
            assert!(cli.is_err(), "--key-requests-per-minute {bad}");
        }
        let short = serve_args(&["--api-key", "short"]);
        assert!(gateway_keys(&short).unwrap_err().to_string().contains("16 to 256 characters"));
    }

    #[test]
    fn a_metrics_key_is_checked_like_an_api_key_and_must_differ_from_them() {
        let (api, scrape) = ("0123456789abcdef0123", "prometheus-0123456789");
        let keyed = |extra: &[&str]| serve_args(&[&["--api-key", api][..], extra].concat());
        let args = keyed(&[]);
        let api_keys = gateway_keys(&args).unwrap();
        assert!(metrics_keys(&args, &api_keys).unwrap().is_empty(), "open by default");
        let args = keyed(&["--metrics-api-key", scrape]);
        assert_eq!(metrics_keys(&args, &api_keys).unwrap().len(), 1);
        let args = keyed(&["--metrics-api-key", "short"]);
        let error = metrics_keys(&args, &api_keys).unwrap_err().to_string();
        assert!(error.contains("--metrics-api-key: a key must be 16 to 256"), "{error}");
        let args = keyed(&["--metrics-api-key", api]);
        let error = metrics_keys(&args, &api_keys).unwrap_err().to_string();
        assert!(error.contains("is also an API key"), "{error}");
    }

    #[test]
    fn a_key_budget_needs_keys_and_an_amount() {
        let key = ["--api-key", "0123456789abcdef0123"];
        let error = gateway_keys(&serve_args(&["--key-budget", "100"])).unwrap_err().to_string();
        assert!(error.contains("limit each API key"), "{error}");
        let error = gateway_keys(&serve_args(&["--key-budget-period", "monthly"])).unwrap_err();
        assert!(error.to_string().contains("limit each API key"), "{error}");
        let keys =
            gateway_keys(&serve_args(&[&key[..], &["--key-budget-period", "weekly"]].concat()));
        assert_eq!(keys.unwrap().len(), 1);
        let hourly =
            Cli::try_parse_from(["lloom-client", "serve", "--key-budget-period", "hourly"]);
        assert!(hourly.unwrap_err().to_string().contains("daily, weekly or monthly"));
        let keys = gateway_keys(&serve_args(&[&key[..], &["--key-budget", "0.5eth"]].concat()));
        let budget = keys.unwrap().budget("default");
        assert_eq!(budget, Some(U256::from(500_000_000_000_000_000u64)));
        for bad in ["lots", "-5", "1.5", ""] {
            let flag = format!("--key-budget={bad}");
            let cli = Cli::try_parse_from(["lloom-client", "serve", &flag]);
            let error = cli.unwrap_err().to_string();
            assert!(error.contains("is not an amount"), "{bad}: {error}");
        }
    }

    #[test]
    fn serve_limits_have_defaults_and_refuse_bad_values() {
        let cli = Cli::try_parse_from(["lloom-client", "serve", "--listen", "nowhere"]);
        assert!(cli.is_err(), "--listen nowhere");
        assert_eq!(serve_args(&[]).max_concurrent, 256);
        assert_eq!(
            (serve_args(&[]).drain_secs, serve_args(&["--drain-secs", "0"]).drain_secs),
            (30, 0)
        );
        for bad in ["3601", "-1", "later"] {
            assert!(Cli::try_parse_from(["lloom-client", "serve", "--drain-secs", bad]).is_err());
        }
        for flag in [
            "--max-concurrent",
            "--max-connections",
            "--header-timeout-secs",
            "--body-timeout-secs",
        ] {
            for bad in ["0", "-3", "many", "65537"] {
                let cli = Cli::try_parse_from(["lloom-client", "serve", flag, bad]);
                assert!(cli.is_err(), "{flag} {bad}");
            }
        }
        for bad in ["0", "-3", "many", "4294967296"] {
            let cli = Cli::try_parse_from(["lloom-client", "serve", "--default-max-tokens", bad]);
            assert!(cli.is_err(), "--default-max-tokens {bad}");
        }
        assert_eq!(serve_args(&[]).default_max_tokens, None, "fitted to the context");
        assert_eq!(serve_args(&["--default-max-tokens", "512"]).default_max_tokens, Some(512));
        let args = serve_args(&[]);
        assert_eq!((args.max_connections, args.header_timeout_secs), (1024, 30));
    }
}

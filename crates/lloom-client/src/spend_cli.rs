//! `lloom-client spend ...`: what each gateway API key has spent, from the gateway's spend
//! ledger, and resetting a key's spend. A running gateway holds its ledger open (ask it with
//! `GET /v1/key` instead), so these commands are for a gateway that is stopped.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use lloom_core::cli::{NodeArgs, Role};

use crate::error::{Error, Result};
use crate::gateway::{KeySpend, SpendLedger, rfc3339};

/// `lloom-client spend ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum SpendCommand {
    /// Every key's spend, in wei.
    List {
        /// The ledger (default: `gateway-spend.redb` in the client's data directory).
        #[arg(long)]
        ledger: Option<PathBuf>,
    },
    /// Sets a key's spend back to zero, so its budget is whole again.
    Reset {
        /// The key's name (as in the key file; `default` for `--api-key`).
        name: String,
        /// The ledger (default: `gateway-spend.redb` in the client's data directory).
        #[arg(long)]
        ledger: Option<PathBuf>,
    },
}

/// Where `serve` keeps its spend ledger unless told otherwise.
pub(crate) fn default_ledger_path(node: &NodeArgs) -> PathBuf {
    node.data_dir(Role::Client).join("gateway-spend.redb")
}

/// Runs a `spend` subcommand.
pub(crate) fn run(cmd: &SpendCommand, node: &NodeArgs, out: &mut (dyn Write + Send)) -> Result<()> {
    let (SpendCommand::List { ledger } | SpendCommand::Reset { ledger, .. }) = cmd;
    let path = ledger.clone().unwrap_or_else(|| default_ledger_path(node));
    let ledger = open_existing(&path)?;
    match cmd {
        SpendCommand::List { .. } => {
            let all = ledger.all();
            // A total kept for a budget period says when that period began.
            let since = |spend: &KeySpend| (spend.since > 0).then(|| rfc3339(spend.since));
            if node.json {
                let rows: Vec<_> = all
                    .iter()
                    .map(|(name, spend)| {
                        serde_json::json!({
                            "key": &**name,
                            "spent_wei": spend.spent.to_string(),
                            "since": since(spend),
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&rows).unwrap_or_default())?;
            } else if all.is_empty() {
                writeln!(out, "no spend recorded in {}", path.display())?;
            } else {
                writeln!(out, "{:<64}  {:>30}  SINCE", "KEY", "SPENT WEI")?;
                for (name, spend) in &all {
                    let since = since(spend).unwrap_or_else(|| "-".into());
                    writeln!(out, "{name:<64}  {:>30}  {since}", spend.spent.to_string())?;
                }
            }
        }
        SpendCommand::Reset { name, .. } => {
            let all = ledger.all();
            if !all.iter().any(|(known, _)| **known == **name) {
                let names: Vec<&str> = all.iter().map(|(known, _)| &**known).collect();
                let known = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
                return Err(Error::State(format!(
                    "no spend recorded for a key named `{name}` in {}; keys with spend: {known}",
                    path.display()
                )));
            }
            let before = all.iter().find(|(known, _)| **known == **name).map(|(_, s)| s.spent);
            ledger.reset(name)?;
            let before = before.unwrap_or_default();
            writeln!(out, "the spend of `{name}` is reset to 0 (it was {before} wei)")?;
        }
    }
    Ok(())
}

fn open_existing(path: &Path) -> Result<SpendLedger> {
    if !path.exists() {
        return Err(Error::State(format!(
            "no spend ledger at {}: `lloom-client serve` with API keys creates it",
            path.display()
        )));
    }
    SpendLedger::open(path)
}

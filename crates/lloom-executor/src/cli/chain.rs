//! `lloom-executor chain ...`: settle stored receipts, show and withdraw earnings.

use std::io::Write;

use clap::{Args, Subcommand};
use lloom_core::chain::{Settlement, format_ether};
use lloom_core::cli::{NodeArgs, Role};
use lloom_core::identity::load_key;

use crate::error::Result;
use crate::serve::ReceiptStore;
use crate::settle::settle_pending;

/// Where the chain is (the contract is the global --contract).
#[derive(Args, Debug, Clone)]
pub struct ChainArgs {
    /// JSON-RPC URL of the chain.
    #[arg(long, env = "LLOOM_RPC_URL")]
    pub rpc_url: String,
}

/// `lloom-executor chain ...`.
#[derive(Subcommand, Debug)]
pub enum ChainCommand {
    /// Settle every unsettled receipt in the store (the executor must be stopped; a running
    /// executor settles by itself when started with --rpc-url and --contract).
    Settle {
        /// Where the contract is.
        #[command(flatten)]
        chain: ChainArgs,
        /// Most receipts per transaction.
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
    },
    /// Show earnings on the contract and receipts in the store.
    Earnings(ChainArgs),
    /// Withdraw earnings to the executor's address.
    Withdraw(ChainArgs),
}

pub(super) async fn run(
    cmd: &ChainCommand,
    node: &NodeArgs,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let key = load_key(&node.key_path(Role::Executor), &node.password_source())?;
    let address = node.require_contract()?;
    let receipts_path = node.data_dir(Role::Executor).join("receipts.redb");
    match cmd {
        ChainCommand::Settle { chain, batch_size } => {
            let contract = Settlement::at(&chain.rpc_url, &key, address)?;
            let store = ReceiptStore::open(&receipts_path)?;
            let report = settle_pending(&store, &contract, *batch_size).await?;
            writeln!(
                out,
                "settled {} receipts in {} transactions, earning {}; {} were already settled, {} refused, {} wait for the client's escrow",
                report.settled,
                report.transactions,
                format_ether(report.earned),
                report.already_settled,
                report.rejected,
                report.pending
            )?;
        }
        ChainCommand::Earnings(chain) => {
            let contract = Settlement::at(&chain.rpc_url, &key, address)?;
            let earned = contract.earnings_of(key.address()).await?;
            writeln!(out, "earnings on chain: {} ({earned} wei)", format_ether(earned))?;
            if receipts_path.exists() {
                let (total, unsettled) = ReceiptStore::open(&receipts_path)?.counts()?;
                writeln!(out, "receipts: {total} stored, {unsettled} not yet settled")?;
            }
        }
        ChainCommand::Withdraw(chain) => {
            let contract = Settlement::at(&chain.rpc_url, &key, address)?;
            let earned = contract.earnings_of(key.address()).await?;
            let tx = contract.withdraw_earnings().await?;
            writeln!(out, "withdrew {} in transaction {tx}", format_ether(earned))?;
        }
    }
    Ok(())
}

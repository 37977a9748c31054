//! `lloom-client chain ...`: deploy the settlement contract, manage the client's escrow.

use std::io::Write;

use clap::{Args, Subcommand};
use lloom_core::chain::{Settlement, format_ether, parse_amount};
use lloom_core::cli::{NodeArgs, Role};
use lloom_core::identity::load_key;

use crate::error::Result;

/// Where the chain is (the contract is the global --contract).
#[derive(Args, Debug, Clone)]
pub struct RpcArgs {
    /// JSON-RPC URL of the chain.
    #[arg(long, env = "LLOOM_RPC_URL")]
    pub rpc_url: String,
}

/// `lloom-client chain ...`.
#[derive(Subcommand, Debug)]
pub enum ChainCommand {
    /// Deploy a settlement contract (paid by the client key); prints its address.
    Deploy {
        /// Where to deploy.
        #[command(flatten)]
        rpc: RpcArgs,
        /// Notice period of client withdrawals, in seconds.
        #[arg(long, default_value_t = 86_400)]
        withdrawal_delay_secs: u64,
    },
    /// Deposit into the client's escrow (`1500` wei or `0.5eth`).
    Deposit {
        /// The amount.
        amount: String,
        /// The contract.
        #[command(flatten)]
        contract: RpcArgs,
    },
    /// Show the client's escrow and any pending withdrawal.
    Balance(RpcArgs),
    /// Start the notice period for withdrawing an amount of escrow.
    RequestWithdrawal {
        /// The amount.
        amount: String,
        /// The contract.
        #[command(flatten)]
        contract: RpcArgs,
    },
    /// Withdraw the requested amount once the notice period is over.
    Withdraw(RpcArgs),
}

pub(crate) async fn run(
    cmd: &ChainCommand,
    node: &NodeArgs,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let key = load_key(&node.key_path(Role::Client), &node.password_source())?;
    let address = || node.require_contract();
    match cmd {
        ChainCommand::Deploy { rpc, withdrawal_delay_secs } => {
            let contract = Settlement::deploy(&rpc.rpc_url, &key, *withdrawal_delay_secs).await?;
            let chain_id = contract.chain_id().await?;
            writeln!(
                out,
                "deployed LloomSettlement at {} on chain {chain_id}",
                contract.address()
            )?;
        }
        ChainCommand::Deposit { amount, contract } => {
            let amount = parse_amount(amount)?;
            let chain = Settlement::at(&contract.rpc_url, &key, address()?)?;
            let tx = chain.deposit(amount).await?;
            let escrow = chain.escrow_of(key.address()).await?;
            writeln!(
                out,
                "deposited {} (transaction {tx}); escrow now {}",
                format_ether(amount),
                format_ether(escrow)
            )?;
        }
        ChainCommand::Balance(contract) => {
            let chain = Settlement::at(&contract.rpc_url, &key, address()?)?;
            let escrow = chain.escrow_of(key.address()).await?;
            writeln!(out, "escrow of {}: {} ({escrow} wei)", key.address(), format_ether(escrow))?;
        }
        ChainCommand::RequestWithdrawal { amount, contract } => {
            let amount = parse_amount(amount)?;
            let chain = Settlement::at(&contract.rpc_url, &key, address()?)?;
            let tx = chain.request_withdrawal(amount).await?;
            writeln!(
                out,
                "withdrawal of {} requested (transaction {tx}); run `chain withdraw` after the notice period",
                format_ether(amount)
            )?;
        }
        ChainCommand::Withdraw(contract) => {
            let chain = Settlement::at(&contract.rpc_url, &key, address()?)?;
            let tx = chain.withdraw().await?;
            let escrow = chain.escrow_of(key.address()).await?;
            writeln!(out, "withdrawn (transaction {tx}); escrow now {}", format_ether(escrow))?;
        }
    }
    Ok(())
}

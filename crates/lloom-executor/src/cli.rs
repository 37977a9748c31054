//! Command-line interface of `lloom-executor`.

use clap::{Parser, Subcommand};
use lloom_core::cli::{KeysCommand, NodeArgs, Role, run_keys};

use crate::error::Result;

/// Lloom executor: serve LLM requests on local hardware and sign what is returned.
#[derive(Parser, Debug)]
#[command(name = "lloom-executor", version, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Options shared by every Lloom node.
    #[command(flatten)]
    pub node: NodeArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `lloom-executor`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage the node key (one secp256k1 key: Ethereum address and libp2p peer id).
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// Runs a parsed command line and returns the text to print.
pub fn run(cli: &Cli) -> Result<String> {
    match &cli.command {
        Command::Keys(cmd) => Ok(run_keys(cmd, &cli.node, Role::Executor)?.render(cli.node.json)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn default_key_command_lines_parse() {
        Cli::try_parse_from(["lloom-executor", "keys", "show"]).unwrap();
        Cli::try_parse_from(["lloom-executor", "--json", "keys", "new", "--format", "hex"])
            .unwrap();
        assert!(Cli::try_parse_from(["lloom-executor", "keys", "import"]).is_err());
    }
}

//! Arguments every node binary accepts.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::identity::{DEFAULT_PASSWORD_ENV, PasswordSource};

/// Which node a binary runs; selects the default data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// `lloom-client`.
    Client,
    /// `lloom-executor`.
    Executor,
    /// `lloom-validator`.
    Validator,
}

impl Role {
    /// The role's lowercase name, used in paths.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Executor => "executor",
            Self::Validator => "validator",
        }
    }
}

/// Global arguments shared by every node binary.
#[derive(Args, Clone, Debug, Default)]
pub struct NodeArgs {
    /// Directory for this node's key and databases [default: DATA_HOME/lloom/ROLE].
    #[arg(long, global = true, env = "LLOOM_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Key file (encrypted keystore or 0600 hex file) [default: DATA_DIR/key.json].
    #[arg(long, global = true, env = "LLOOM_KEY", value_name = "PATH")]
    pub key: Option<PathBuf>,

    /// File holding the keystore password; otherwise $LLOOM_KEY_PASSWORD, otherwise a prompt.
    #[arg(long, global = true, env = "LLOOM_KEY_PASSWORD_FILE", value_name = "PATH")]
    pub password_file: Option<PathBuf>,

    /// TOML configuration file (flags and environment variables override it).
    #[arg(long, global = true, env = "LLOOM_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print machine-readable JSON instead of human text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Chain id of the EIP-712 domain every message is signed for [default: 31337]; all nodes
    /// of a network must agree.
    #[arg(long, global = true, env = "LLOOM_CHAIN_ID", value_name = "ID")]
    pub chain_id: Option<u64>,

    /// Address of the settlement contract: the verifying contract of the EIP-712 domain, and
    /// where receipts are settled [default: the zero address, no settlement].
    #[arg(long, global = true, env = "LLOOM_CONTRACT", value_name = "ADDRESS")]
    pub contract: Option<alloy_primitives::Address>,
}

impl NodeArgs {
    /// The data directory for `role`.
    pub fn data_dir(&self, role: Role) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("lloom").join(role.as_str())
        })
    }

    /// The key file for `role`.
    pub fn key_path(&self, role: Role) -> PathBuf {
        self.key.clone().unwrap_or_else(|| self.data_dir(role).join("key.json"))
    }

    /// The configuration file given with `--config`, or an empty one.
    pub fn config_file(&self) -> crate::error::Result<super::ConfigFile> {
        super::ConfigFile::load_optional(self.config.as_deref())
    }

    /// The EIP-712 domain this node signs and verifies for.
    pub fn domain(&self) -> crate::DomainConfig {
        let default = crate::DomainConfig::default();
        crate::DomainConfig {
            chain_id: self.chain_id.unwrap_or(default.chain_id),
            verifying_contract: self.contract.unwrap_or(default.verifying_contract),
        }
    }

    /// The settlement contract, or an error saying how to name it.
    pub fn require_contract(&self) -> crate::error::Result<alloy_primitives::Address> {
        self.contract.ok_or_else(|| {
            crate::Error::Chain(
                "no settlement contract: pass --contract or set LLOOM_CONTRACT".into(),
            )
        })
    }

    /// Where the keystore password comes from.
    pub fn password_source(&self) -> PasswordSource {
        PasswordSource::resolve_default(self.password_file.clone(), DEFAULT_PASSWORD_ENV)
    }
}

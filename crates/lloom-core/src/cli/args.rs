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

    /// Where the keystore password comes from.
    pub fn password_source(&self) -> PasswordSource {
        PasswordSource::resolve_default(self.password_file.clone(), DEFAULT_PASSWORD_ENV)
    }
}

//! `keys new | show | import`.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use zeroize::Zeroizing;

use super::{NodeArgs, Role};
use crate::error::{Error, Result};
use crate::identity::{KeyFormat, NodeKey, PasswordSource, load_key, save_key};

/// Manage this node's key.
#[derive(Subcommand, Clone, Debug)]
pub enum KeysCommand {
    /// Create a new random key.
    New {
        /// How to store it.
        #[arg(long, value_enum, default_value_t = FormatArg::Keystore)]
        format: FormatArg,
    },
    /// Print the address and peer id of the key.
    Show,
    /// Store an existing secret as this node's key.
    Import {
        /// Where the secret comes from.
        #[command(flatten)]
        source: ImportSource,
        /// How to store it.
        #[arg(long, value_enum, default_value_t = FormatArg::Keystore)]
        format: FormatArg,
    },
}

/// Where `keys import` reads the secret from (exactly one).
#[derive(Args, Clone, Debug)]
#[group(required = true, multiple = false)]
pub struct ImportSource {
    /// A file holding the secret as hex.
    #[arg(long, value_name = "PATH")]
    pub private_key_file: Option<PathBuf>,
    /// An environment variable holding the secret as hex.
    #[arg(long, value_name = "VAR")]
    pub private_key_env: Option<String>,
    /// Read the hex secret from standard input.
    #[arg(long)]
    pub stdin: bool,
    /// An existing v3 keystore (e.g. from `cast wallet new`), decrypted with the node's
    /// password source.
    #[arg(long, value_name = "PATH")]
    pub keystore: Option<PathBuf>,
}

/// Key storage format, as a CLI value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Encrypted Ethereum keystore v3 (needs a password).
    Keystore,
    /// Raw hex secret in a 0600 file.
    Hex,
}

impl From<FormatArg> for KeyFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Keystore => KeyFormat::Keystore,
            FormatArg::Hex => KeyFormat::Hex,
        }
    }
}

/// What a `keys` command reports. It never contains the secret.
#[derive(Clone, Debug, Serialize)]
pub struct KeyReport {
    /// What happened: `created`, `imported` or `loaded`.
    pub action: &'static str,
    /// EIP-55 checksummed Ethereum address.
    pub address: String,
    /// libp2p peer id.
    pub peer_id: String,
    /// The key file.
    pub path: PathBuf,
}

impl KeyReport {
    fn new(action: &'static str, key: &NodeKey, path: &Path) -> Self {
        Self {
            action,
            address: key.address().to_checksum(None),
            peer_id: key.peer_id().to_string(),
            path: path.to_owned(),
        }
    }

    /// Renders as pretty JSON or as human-readable lines.
    pub fn render(&self, json: bool) -> String {
        if json {
            return serde_json::to_string_pretty(self).unwrap_or_default();
        }
        format!(
            "{} key {}\naddress: {}\npeer id: {}",
            self.action,
            self.path.display(),
            self.address,
            self.peer_id
        )
    }
}

/// Runs a `keys` subcommand for `role`.
pub fn run_keys(cmd: &KeysCommand, args: &NodeArgs, role: Role) -> Result<KeyReport> {
    let path = args.key_path(role);
    let password = args.password_source();
    match cmd {
        KeysCommand::New { format } => {
            let key = NodeKey::generate();
            save_key(&key, &path, (*format).into(), Some(&password))?;
            Ok(KeyReport::new("created", &key, &path))
        }
        KeysCommand::Show => {
            let key = load_key(&path, &password)?;
            Ok(KeyReport::new("loaded", &key, &path))
        }
        KeysCommand::Import { source, format } => {
            let key = read_import(source, &password)?;
            save_key(&key, &path, (*format).into(), Some(&password))?;
            Ok(KeyReport::new("imported", &key, &path))
        }
    }
}

fn read_import(source: &ImportSource, password: &PasswordSource) -> Result<NodeKey> {
    if let Some(file) = &source.private_key_file {
        let text = Zeroizing::new(std::fs::read_to_string(file)?);
        return NodeKey::from_hex(&text);
    }
    if let Some(var) = &source.private_key_env {
        let text = Zeroizing::new(
            std::env::var(var)
                .map_err(|_| Error::InvalidKey("the named environment variable is not set"))?,
        );
        return NodeKey::from_hex(&text);
    }
    if let Some(keystore) = &source.keystore {
        return load_key(keystore, password);
    }
    if std::io::stdin().is_terminal() {
        let text = Zeroizing::new(rpassword::prompt_password("Private key (hex): ")?);
        return NodeKey::from_hex(&text);
    }
    let mut text = Zeroizing::new(String::new());
    std::io::stdin().take(1024).read_to_string(&mut text)?;
    NodeKey::from_hex(&text)
}

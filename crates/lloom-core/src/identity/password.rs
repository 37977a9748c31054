//! Where the password of an encrypted keystore comes from.

use std::io::IsTerminal;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Environment variable read for the keystore password when no other source is given.
pub const DEFAULT_PASSWORD_ENV: &str = "LLOOM_KEY_PASSWORD";

/// A source for a keystore password.
#[derive(Clone)]
pub enum PasswordSource {
    /// Read from the named environment variable.
    Env(String),
    /// Read from a file (one trailing newline is stripped).
    File(PathBuf),
    /// Ask on the terminal (fails with a clear error when stdin is not a terminal).
    Prompt,
    /// A password held in memory (tests, embedding applications).
    Value(Zeroizing<String>),
}

impl std::fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env(var) => write!(f, "Env({var})"),
            Self::File(path) => write!(f, "File({})", path.display()),
            Self::Prompt => f.write_str("Prompt"),
            Self::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

impl PasswordSource {
    /// The usual choice: a password file if given, else the env var if set, else a prompt.
    pub fn resolve_default(file: Option<PathBuf>, env_var: &str) -> Self {
        match file {
            Some(path) => Self::File(path),
            None if std::env::var_os(env_var).is_some() => Self::Env(env_var.to_owned()),
            None => Self::Prompt,
        }
    }

    /// Reads the password. `confirm` asks twice when prompting (for new keystores).
    pub fn read(&self, confirm: bool) -> Result<Zeroizing<String>> {
        match self {
            Self::Env(var) => std::env::var(var)
                .map(Zeroizing::new)
                .map_err(|_| Error::NoPassword(format!("environment variable {var} is not set"))),
            Self::File(path) => {
                let mut text = Zeroizing::new(std::fs::read_to_string(path)?);
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                Ok(text)
            }
            Self::Value(v) => Ok(v.clone()),
            Self::Prompt => prompt(confirm),
        }
    }
}

fn prompt(confirm: bool) -> Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::NoPassword(format!(
            "stdin is not a terminal; set {DEFAULT_PASSWORD_ENV} or pass --password-file"
        )));
    }
    let first = Zeroizing::new(rpassword::prompt_password("Keystore password: ")?);
    if confirm {
        let second = Zeroizing::new(rpassword::prompt_password("Repeat password: ")?);
        if *first != *second {
            return Err(Error::NoPassword("the two passwords differ".into()));
        }
    }
    Ok(first)
}

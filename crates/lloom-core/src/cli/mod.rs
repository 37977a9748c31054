//! Command-line pieces shared by the three node binaries (feature `cli`).
//!
//! Each binary flattens [`NodeArgs`] into its top-level arguments and offers
//! [`KeysCommand`] as its `keys` subcommand; [`run_keys`] does the work and returns a
//! [`KeyReport`] the binary prints as text or JSON.

mod args;
mod config_file;
mod keys;
mod logging;
mod network_args;
mod output_format;
mod prompt;
mod sampling;
mod signal;

pub use args::{NodeArgs, Role};
pub use config_file::{
    ClientSection, ConfigFile, ExecutorSection, ModelSection, NetworkSection, TextOrNumber,
    ValidatorSection,
};
pub use keys::{ImportSource, KeyReport, KeysCommand, run_keys};
pub use logging::{LOG_ENV, LOG_FORMAT_ENV, LogFormat, init_logging};
pub use network_args::NetworkArgs;
pub use output_format::OutputFormatArgs;
pub use prompt::{STDIN_PROMPT, read_prompt};
pub use sampling::SamplingArgs;
pub use signal::{ShutdownSignal, wait_for_shutdown_signal};

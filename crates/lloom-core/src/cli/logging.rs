//! Logging set-up shared by the node binaries.

/// Environment variable holding a `tracing` filter (e.g. `info`, `lloom_core=debug`).
pub const LOG_ENV: &str = "LLOOM_LOG";

/// Logs to stderr, filtered by `$LLOOM_LOG` (default: warnings, without Kademlia's noise
/// about having no peers yet).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,libp2p_kad=error"));
    // A second initialization (tests driving `run` twice) is harmless and ignored.
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

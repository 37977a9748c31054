//! Waiting for the operator to stop a node.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT and SIGTERM handlers, installed when created: a signal that arrives between
/// installation and [`ShutdownSignal::wait`] is not lost, and never kills the process with
/// the default action. Install it before telling anyone (or any test) that the node is up.
#[derive(Debug)]
pub struct ShutdownSignal {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignal {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves on Ctrl-C (SIGINT) or SIGTERM.
    pub async fn wait(mut self) {
        self.next().await;
    }

    /// Resolves on the next Ctrl-C (SIGINT) or SIGTERM, and can be awaited again: a node that
    /// drains its work on the first signal stops at once on the second.
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM received from now on.
pub async fn wait_for_shutdown_signal() -> std::io::Result<()> {
    ShutdownSignal::install()?.wait().await;
    Ok(())
}

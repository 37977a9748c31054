//! `lloom-executor`: parses the command line and hands it to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LLOOM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,libp2p_kad=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = lloom_executor::cli::Cli::parse();
    lloom_executor::cli::run(&cli, &mut std::io::stdout()).await?;
    Ok(())
}

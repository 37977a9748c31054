//! `lloom-executor`: parses the command line and hands it to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lloom_core::cli::init_logging();
    let cli = lloom_executor::cli::Cli::parse();
    lloom_executor::cli::run(&cli, &mut std::io::stdout()).await?;
    Ok(())
}

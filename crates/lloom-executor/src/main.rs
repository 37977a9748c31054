//! `lloom-executor`: parses the command line and hands it to the library.

use clap::Parser;

/// mimalloc: faster than glibc malloc for the many small, short-lived allocations of serving.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lloom_core::cli::init_logging();
    let cli = lloom_executor::cli::Cli::parse();
    lloom_executor::cli::run(&cli, &mut std::io::stdout()).await?;
    Ok(())
}

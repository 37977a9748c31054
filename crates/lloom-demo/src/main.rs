//! `lloom-demo`: parses the command line and runs the demo.

use clap::Parser;

/// mimalloc: faster than glibc malloc for the many small, short-lived allocations of serving.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lloom_core::cli::init_logging();
    let args = lloom_demo::DemoArgs::parse();
    lloom_demo::run(&args, &mut std::io::stdout()).await
}

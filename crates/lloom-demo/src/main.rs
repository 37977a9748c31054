//! `lloom-demo`: parses the command line and runs the demo.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lloom_core::cli::init_logging();
    let args = lloom_demo::DemoArgs::parse();
    lloom_demo::run(&args, &mut std::io::stdout()).await
}

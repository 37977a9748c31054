//! `lloom-executor`: parses the command line and hands it to the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = lloom_executor::cli::Cli::parse();
    let output = lloom_executor::cli::run(&cli)?;
    #[allow(clippy::print_stdout)]
    {
        println!("{output}");
    }
    Ok(())
}

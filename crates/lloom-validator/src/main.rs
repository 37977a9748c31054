//! `lloom-validator`: parses the command line and hands it to the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = lloom_validator::cli::Cli::parse();
    let output = lloom_validator::cli::run(&cli)?;
    #[allow(clippy::print_stdout)]
    {
        println!("{output}");
    }
    Ok(())
}

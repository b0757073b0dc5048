//! `veil`: the one tool outside the image.
use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Verify Veil nodes and recompute their expected measurements")]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}

//! `veil`: the one tool outside the image. It recomputes an image's expected
//! measurements (`veil measure`); verifying nodes and initialising clusters follow.

mod measure;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Verify Veil nodes and recompute their expected measurements"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compute the PCR values a node booted from IMAGE will have.
    Measure(measure::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Measure(args) => measure::run(&args),
    }
}

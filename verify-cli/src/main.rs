//! `veil`: the one tool outside the image. It recomputes an image's expected
//! measurements (`veil measure`); verifying nodes and initialising clusters follow.

mod eventlog;
mod measure;
mod verify;

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
    /// Replay a node's TPM event logs; with --image, explain where they differ from it.
    Eventlog(eventlog::Args),
    /// Attest a running node and compare its PCRs with reference measurements.
    Verify(verify::Args),
}

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people.
    Human,
    /// JSON, for machines.
    Json,
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    match Cli::parse().command {
        Command::Measure(args) => measure::run(&args)?,
        Command::Eventlog(args) => {
            if !eventlog::run(&args)? {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Command::Verify(args) => {
            if !verify::run(&args)? {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

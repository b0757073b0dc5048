//! `veil`: the one tool outside the image. It recomputes an image's expected
//! measurements (`veil measure`), verifies nodes (`veil verify`), and starts or
//! recovers a cluster by handing its master secret to an attested node only
//! (`veil init`, authorized by the init secret of `veil init-secret`, and
//! `veil recover`).

mod bootstrap;
mod collateral;
mod eventlog;
mod init_secret;
mod measure;
mod remove;
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
    /// Make the init secret the first node is launched with (its hash), or show its hash.
    InitSecret(init_secret::Args),
    /// Start a cluster: make its master secret and give it to an attested first node.
    Init(bootstrap::Args),
    /// Give an attested node its cluster's master secret again (full restart).
    Recover(bootstrap::Args),
    /// Drop a member from the cluster for good, at the control-plane node's join port.
    Remove(remove::Args),
}

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For people.
    Human,
    /// JSON, for machines.
    Json,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", render(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<std::process::ExitCode> {
    match command {
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
        Command::InitSecret(args) => init_secret::run(&args)?,
        Command::Init(args) => bootstrap::run(&args, bootstrap::Mode::Init)?,
        Command::Recover(args) => bootstrap::run(&args, bootstrap::Mode::Recover)?,
        Command::Remove(args) => remove::run(&args)?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `e` and its causes on one line, each said once. Many of Veil's errors name their
/// cause in their own message as well as through `source()`, so anyhow's own report
/// ("Caused by:") would repeat whole chains; a refused node's reason is long enough
/// once.
fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::render;

    #[derive(Debug, thiserror::Error)]
    #[error("the peer's evidence was refused: report data differs")]
    struct Refused;

    #[derive(Debug, thiserror::Error)]
    #[error("aTLS handshake with node-1 failed: {source}")]
    struct Handshake {
        #[source]
        source: Refused,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect")]
    struct Connect(#[source] std::io::Error);

    #[test]
    fn each_cause_is_said_once_and_none_is_lost() {
        let e = anyhow::Error::new(Handshake { source: Refused }).context("attesting node-1");
        assert_eq!(
            render(&e),
            "attesting node-1: aTLS handshake with node-1 failed: the peer's evidence was refused: report data differs"
        );
        // A cause the message does not name is added.
        let e = anyhow::Error::new(Connect(std::io::Error::other("refused (os error 111)")));
        assert_eq!(render(&e), "cannot connect: refused (os error 111)");
    }
}

//! `veil eventlog`: replay a node's TPM event logs to PCR values and, given the image
//! the node should run, say which component made a PCR differ.

use anyhow::Context as _;
use measured_boot::{EventLog, Image, diff_against_log, expected_pcrs};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The firmware's TCG log (`/sys/kernel/security/tpm0/binary_bios_measurements`).
    #[arg(long)]
    firmware: PathBuf,
    /// systemd's userspace log (`/run/log/systemd/tpm2-measure.log`).
    #[arg(long)]
    systemd: Option<PathBuf>,
    /// Compare with the PCRs this image (raw, fixed VHD or UKI) must produce.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = crate::Output::Human)]
    output: crate::Output,
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading event log {}", path.display()))
}

/// Returns whether the logs match the image (true when no image was given).
pub fn run(args: &Args) -> anyhow::Result<bool> {
    let name = args.firmware.display().to_string();
    let mut log = EventLog::parse_tcg(&name, &read(&args.firmware)?)?;
    if let Some(path) = &args.systemd {
        let name = path.display().to_string();
        log.append(EventLog::parse_systemd_json(&name, &read(path)?)?);
    }
    let replayed = log.replay();
    let differences = match &args.image {
        Some(path) => {
            let image = Image::open(path)?;
            let expected = expected_pcrs(&image.uki)
                .with_context(|| format!("computing the PCRs of {}", path.display()))?;
            Some(diff_against_log(&expected, &log))
        }
        None => None,
    };
    match args.output {
        crate::Output::Json => {
            let pcrs: serde_json::Map<String, serde_json::Value> = replayed
                .iter()
                .map(|(pcr, d)| (pcr.to_string(), d.to_hex().into()))
                .collect();
            let mut out = serde_json::json!({ "pcrs": pcrs, "events": log.events.len() });
            if let Some(diffs) = &differences {
                out["differences"] = diffs.iter().map(|d| d.to_string()).collect();
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        crate::Output::Human => {
            println!("{} events replayed", log.events.len());
            for (pcr, d) in &replayed {
                println!("{pcr:>4}  {}", d.to_hex());
            }
            match &differences {
                Some(d) if d.is_empty() => println!("the logs match the image"),
                Some(d) => d.iter().for_each(|d| println!("{d}")),
                None => {}
            }
        }
    }
    Ok(differences.is_none_or(|d| d.is_empty()))
}

//! `veil measure IMAGE|UKI [--output json]`: the expected PCRs of an image, as a table
//! for people or as the reference measurements file the verifier loads.

use crate::Output;
use anyhow::Context as _;
use measured_boot::image::Source;
use measured_boot::reference::ReferenceMeasurements;
use measured_boot::{Image, expected_pcrs};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A disk image (raw or fixed VHD) or a UKI (PE) file.
    image: PathBuf,
    /// Where the image is meant to run (qemu, azure-sev-snp, azure-tdx, gcp-sev-snp,
    /// gcp-tdx, aws-sev-snp): written into the reference, so `veil verify` holds nodes
    /// to that profile's evidence.
    #[arg(long)]
    profile: Option<veil_attest::Profile>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let image = Image::open(&args.image)?;
    let expected = expected_pcrs(&image.uki)
        .with_context(|| format!("computing the PCRs of {}", args.image.display()))?;
    let mut reference = ReferenceMeasurements::new(&expected, &image.uki);
    reference.profile = args.profile.map(|p| p.name().to_owned());
    match args.output {
        Output::Json => println!("{}", reference.to_json()),
        Output::Human => print!("{}", table(&image, &reference)),
    }
    Ok(())
}

fn table(image: &Image, r: &ReferenceMeasurements) -> String {
    let mut out = String::new();
    let source = match &image.source {
        Source::Uki => "UKI file".to_owned(),
        Source::Disk { vhd, esp, path, .. } => format!(
            "{} disk, ESP partition {} ({}), {path}",
            if *vhd { "fixed VHD" } else { "raw" },
            esp.index + 1,
            esp.unique_guid
        ),
    };
    let facts = &r.image;
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let os = facts
        .os_release
        .get("PRETTY_NAME")
        .or_else(|| facts.os_release.get("ID"))
        .cloned();
    out.push_str(&format!("image:       {source}\n"));
    out.push_str(&format!("UKI sha256:  {}\n", facts.uki_sha256));
    out.push_str(&format!("OS:          {}\n", dash(&os)));
    out.push_str(&format!("kernel:      {}\n", dash(&facts.kernel_version)));
    out.push_str(&format!("roothash:    {}\n", dash(&facts.roothash)));
    if let Some(usr) = &facts.usrhash {
        out.push_str(&format!("usrhash:     {usr}\n"));
    }
    if let Some(profile) = &r.profile {
        out.push_str(&format!("profile:     {profile}\n"));
    }
    out.push_str(&format!(
        "\n{:>4}  {:<64}  policy\n",
        "PCR", "expected (sha256)"
    ));
    for (pcr, p) in &r.pcrs {
        let policy = if p.warn_only { "warn-only" } else { "enforced" };
        out.push_str(&format!("{pcr:>4}  {}  {policy}\n", p.expected));
        for (phase, value) in &p.phases.0 {
            out.push_str(&format!("{:>4}  {value}  after {phase}\n", ""));
        }
    }
    out
}

//! The Veil node bootstrapper: the first Veil service to run on a node.
//!
//! Today it detects the platform (TPM, SEV-SNP, TDX), reports the PCRs the firmware,
//! the UKI stub and the kernel measured, and tells systemd it is ready. The console
//! lines it prints are a stable interface that `ci/boot-node` and the end-to-end tests
//! read:
//!
//! ```text
//! veil-platform <kind> tpm=<path|none> sev-snp=<bool> tdx=<bool> tsm-report=<bool>
//! veil-pcr <index> <sha256 hex>
//! veil-ready
//! ```

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use veil_attest::{PcrBank, Platform, read_sysfs_pcrs};

/// PCRs reported on the console: everything the boot chain may touch.
pub const REPORTED_PCRS: std::ops::RangeInclusive<u32> = 0..=15;

/// Writes the platform line and the PCR lines for the node under `root` to `out`.
pub fn report(root: &Path, out: &mut impl Write) -> Result<Platform> {
    let platform = veil_attest::detect(root);
    writeln!(
        out,
        "veil-platform {} tpm={} sev-snp={} tdx={} tsm-report={}",
        platform.kind(),
        platform
            .tpm
            .as_deref()
            .map_or_else(|| "none".into(), |p| p.display().to_string()),
        platform.sev_snp,
        platform.tdx,
        platform.tsm_report,
    )?;
    if platform.tpm_sysfs_pcrs {
        let pcrs = read_sysfs_pcrs(
            &root.join("sys/class/tpm/tpm0"),
            PcrBank::Sha256,
            REPORTED_PCRS,
        )
        .context("reading the TPM's sha256 PCR bank")?;
        for (index, value) in pcrs {
            writeln!(out, "veil-pcr {index} {}", hex_lower(&value))?;
        }
    } else {
        tracing::warn!(
            "no TPM PCRs in sysfs under {}: nothing to report",
            root.display()
        );
    }
    out.flush()?;
    Ok(platform)
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! The Veil node bootstrapper: the first Veil service to run on a node.
//!
//! Today it detects the platform (TPM, SEV-SNP, TDX), reports the PCRs the firmware,
//! the UKI stub and the kernel measured, and tells systemd it is ready. The console
//! lines it prints are a stable interface that `ci/boot-node` and the end-to-end tests
//! read:
//!
//! ```text
//! veil-platform <kind> tpm=<path|none> sev-snp=<bool> tdx=<bool> tsm-report=<bool>
//! veil-root <major:minor> verity=<bool> dm-uuid=<uuid|none>
//! veil-pcr <index> <sha256 hex>
//! veil-eventlog <firmware|systemd> <length> <sha256 hex>
//! veil-eventlog-data <firmware|systemd> <base64 chunk>      (repeated)
//! veil-eventlog-end <firmware|systemd>
//! veil-ready
//! ```
//!
//! The event logs (the firmware's TCG log and systemd's `tpm2-measure.log`) let anyone
//! replay the PCRs and see which component made a value what it is; the length and
//! hash let a reader of the console notice a garbled transfer.

pub mod attestation;
pub mod bootstrap;
pub mod join;
pub mod kube;
pub mod launch;
pub mod mesh;
pub mod network;
pub mod state;

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
    let root_dev = root_device(root)?;
    writeln!(
        out,
        "veil-root {} verity={} dm-uuid={}",
        root_dev.dev,
        root_dev.is_verity(),
        root_dev.dm_uuid.as_deref().unwrap_or("none")
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

/// The block device mounted at `/` and, if it is a device-mapper device, its DM UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDevice {
    /// `major:minor` as in mountinfo.
    pub dev: String,
    pub dm_uuid: Option<String>,
}

impl RootDevice {
    /// systemd-veritysetup (libcryptsetup) names verity devices `CRYPT-VERITY-…`.
    pub fn is_verity(&self) -> bool {
        self.dm_uuid
            .as_deref()
            .is_some_and(|u| u.starts_with("CRYPT-VERITY-"))
    }
}

/// Finds the device of `/` from `proc/self/mountinfo` under `root` (the last mount on
/// `/` wins, as the kernel stacks them) and its DM UUID from sysfs.
pub fn root_device(root: &Path) -> Result<RootDevice> {
    let mountinfo_path = root.join("proc/self/mountinfo");
    let mountinfo = std::fs::read_to_string(&mountinfo_path)
        .with_context(|| format!("reading {}", mountinfo_path.display()))?;
    // Fields: id parent major:minor root mountpoint ...
    let dev = mountinfo
        .lines()
        .rev()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4) == Some(&"/")).then(|| f.get(2).map(|d| d.to_string()))?
        })
        .with_context(|| format!("no mount on / in {}", mountinfo_path.display()))?;
    let uuid_path = root.join(format!("sys/dev/block/{dev}/dm/uuid"));
    let dm_uuid = std::fs::read_to_string(uuid_path)
        .ok()
        .map(|u| u.trim().to_owned());
    Ok(RootDevice { dev, dm_uuid })
}

/// Event logs reported on the console: (tag, path under the root).
pub const EVENT_LOGS: [(&str, &str); 2] = [
    (
        "firmware",
        "sys/kernel/security/tpm0/binary_bios_measurements",
    ),
    ("systemd", "run/log/systemd/tpm2-measure.log"),
];

/// Writes the event logs that exist under `root` to `out` (see the crate docs).
pub fn report_event_logs(root: &Path, out: &mut impl Write) -> Result<()> {
    use base64::Engine as _;
    use sha2::Digest as _;
    for (tag, rel) in EVENT_LOGS {
        let path = root.join(rel);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!("no {tag} event log at {}", path.display());
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading event log {}", path.display()));
            }
        };
        let digest = sha2::Sha256::digest(&data);
        writeln!(
            out,
            "veil-eventlog {tag} {} {}",
            data.len(),
            hex_lower(&digest)
        )?;
        for chunk in data.chunks(57) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(chunk);
            writeln!(out, "veil-eventlog-data {tag} {b64}")?;
        }
        writeln!(out, "veil-eventlog-end {tag}")?;
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

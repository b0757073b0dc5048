//! Runtime detection of the node's platform.
//!
//! We look only at interfaces the kernel exposes to a guest; nothing is inferred from
//! DMI strings a hypervisor controls, so detection cannot be talked into a platform the
//! kernel does not actually drive.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// What the node can produce evidence with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Platform {
    /// TPM 2.0 character device with the kernel resource manager, if present.
    pub tpm: Option<PathBuf>,
    /// AMD SEV-SNP guest: `/dev/sev-guest` or a configfs-tsm provider `sev_guest`.
    pub sev_snp: bool,
    /// Intel TDX guest: `/dev/tdx_guest` or a configfs-tsm provider `tdx_guest`.
    pub tdx: bool,
    /// configfs-tsm report interface (`/sys/kernel/config/tsm/report`), kernel >= 6.7.
    pub tsm_report: bool,
    /// The TPM exposes PCR values in sysfs (kernel >= 5.12).
    pub tpm_sysfs_pcrs: bool,
}

impl Platform {
    /// A short name for logs and the console: the strongest evidence source first.
    pub fn kind(&self) -> &'static str {
        match (self.sev_snp, self.tdx, self.tpm.is_some()) {
            (true, _, true) => "sev-snp+vtpm",
            (true, _, false) => "sev-snp",
            (_, true, true) => "tdx+vtpm",
            (_, true, false) => "tdx",
            (false, false, true) => "tpm",
            (false, false, false) => "none",
        }
    }
}

/// Detects the platform under `root` (`/` on a node).
pub fn detect(root: &Path) -> Platform {
    let tpm = root.join("dev/tpmrm0");
    let tsm = root.join("sys/kernel/config/tsm/report");
    let tsm_provider = crate::tsm::provider(&tsm);
    Platform {
        tpm: tpm.exists().then_some(tpm),
        sev_snp: root.join("dev/sev-guest").exists()
            || tsm_provider.as_deref() == Some("sev_guest"),
        tdx: root.join("dev/tdx_guest").exists() || tsm_provider.as_deref() == Some("tdx_guest"),
        tsm_report: tsm.is_dir(),
        tpm_sysfs_pcrs: root.join("sys/class/tpm/tpm0/pcr-sha256/0").exists(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("test path has a parent")).expect("mkdir");
        fs::write(p, b"").expect("write");
    }

    #[test]
    fn empty_root_is_no_platform() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = detect(dir.path());
        assert_eq!(p, Platform::default());
        assert_eq!(p.kind(), "none");
    }

    #[test]
    fn tpm_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(dir.path(), "dev/tpmrm0");
        touch(dir.path(), "sys/class/tpm/tpm0/pcr-sha256/0");
        let p = detect(dir.path());
        assert_eq!(p.tpm, Some(dir.path().join("dev/tpmrm0")));
        assert!(p.tpm_sysfs_pcrs);
        assert_eq!(p.kind(), "tpm");
    }

    #[test]
    fn snp_with_vtpm() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(dir.path(), "dev/tpmrm0");
        touch(dir.path(), "dev/sev-guest");
        assert_eq!(detect(dir.path()).kind(), "sev-snp+vtpm");
    }

    #[test]
    fn tdx_without_tpm() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(dir.path(), "dev/tdx_guest");
        let p = detect(dir.path());
        assert!(p.tdx && !p.sev_snp);
        assert_eq!(p.kind(), "tdx");
    }
}

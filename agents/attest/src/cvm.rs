//! Confidential VMs with a vTPM: a hardware report (SEV-SNP or TDX) attached to a TPM
//! quote, binding the vTPM's attestation key and the caller's data.
//!
//! The TPM quote proves what booted (PCRs 4, 9, 11, …); the hardware report proves the
//! node is a genuine confidential VM with the allowed launch measurement and TCB. Neither
//! alone says both. The attester asks the hardware for a report over
//! [`ak_binding`]`(user_data, AK public area)`, so the report names the key that signed
//! the quote and is as fresh as the quote itself; the verifier checks the report against
//! exactly that value.
//!
//! This is only as strong as the vTPM's home: a vTPM inside the TEE (an SVSM or a
//! paravisor, covered by the launch measurement) makes the pair sound; a vTPM emulated by
//! the host does not, since the host then signs whatever PCRs it likes with an AK the
//! guest would still bind. The launch measurement in the policy is what rules the
//! latter out.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use std::path::Path;

use crate::evidence::{Attester, Evidence};
use crate::platform::Platform;
use crate::snp::{SnpAttestError, SnpAttester, SnpEvidence};
use crate::tdx::{TdxAttestError, TdxAttester, TdxEvidence};
use crate::tsm::TSM_REPORT_DIR;

/// Separates this use of a hardware report's data from any other.
const AK_BINDING_DOMAIN: &[u8] = b"veil cvm: vTPM AK and user data, v1\0";

/// The 32 bytes a CVM's hardware report binds: SHA-256 over a domain string, the
/// caller's user data and the AK's TPM2B_PUBLIC.
pub fn ak_binding(user_data: &[u8; 32], ak_public: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(AK_BINDING_DOMAIN);
    h.update(user_data);
    h.update(ak_public);
    h.finalize().into()
}

/// A hardware report attached to TPM evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "kebab-case")]
pub enum HardwareEvidence {
    SevSnp(SnpEvidence),
    Tdx(TdxEvidence),
}

/// The TD quote in `evidence`, where a TD made one: Azure's paravisor TD's, or a TDX
/// guest's configfs-tsm quote (alone, under a vTPM quote, or with GCE's AK).
pub fn td_quote(evidence: &Evidence) -> Option<&[u8]> {
    fn hardware(h: &Option<HardwareEvidence>) -> Option<&[u8]> {
        match h {
            Some(HardwareEvidence::Tdx(t)) => Some(&t.quote),
            _ => None,
        }
    }
    match evidence {
        Evidence::AzureTdx(ev) => Some(&ev.td_quote),
        Evidence::Tdx(ev) => Some(&ev.quote),
        Evidence::Tpm(ev) => hardware(&ev.hardware),
        Evidence::GcpVtpm(ev) => hardware(&ev.hardware),
        Evidence::SevSnp(_) | Evidence::AzureSevSnp(_) => None,
    }
}

impl HardwareEvidence {
    pub fn platform_name(&self) -> &'static str {
        match self {
            HardwareEvidence::SevSnp(_) => "SEV-SNP",
            HardwareEvidence::Tdx(_) => "TDX",
        }
    }
}

#[derive(Debug, Error)]
pub enum HardwareAttestError {
    #[error("SEV-SNP report for the vTPM quote: {0}")]
    Snp(#[from] SnpAttestError),
    #[error("TDX quote for the vTPM quote: {0}")]
    Tdx(#[from] TdxAttestError),
    #[error("the {platform} attester returned evidence of another kind")]
    WrongKind { platform: &'static str },
}

/// Where a node's hardware reports come from (configfs-tsm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HardwareAttester {
    SevSnp(SnpAttester),
    Tdx(TdxAttester),
}

impl HardwareAttester {
    /// The report source of a detected platform under `root` (`/` on a node): only
    /// where the kernel offers configfs-tsm for SEV-SNP or TDX.
    pub fn for_platform(platform: &Platform, root: &Path) -> Option<HardwareAttester> {
        let tsm = root.join(TSM_REPORT_DIR.trim_start_matches('/'));
        match (platform.tsm_report, platform.sev_snp, platform.tdx) {
            (true, true, _) => Some(HardwareAttester::SevSnp(SnpAttester::new(tsm))),
            (true, false, true) => Some(HardwareAttester::Tdx(TdxAttester::with_root(tsm))),
            _ => None,
        }
    }

    /// The report for a TPM quote over `user_data` signed by the AK `ak_public`.
    pub fn report(
        &mut self,
        user_data: &[u8; 32],
        ak_public: &[u8],
    ) -> Result<HardwareEvidence, HardwareAttestError> {
        let bound = ak_binding(user_data, ak_public);
        match self {
            HardwareAttester::SevSnp(a) => match a.evidence(&bound)? {
                Evidence::SevSnp(ev) => Ok(HardwareEvidence::SevSnp(ev)),
                _ => Err(HardwareAttestError::WrongKind {
                    platform: "SEV-SNP",
                }),
            },
            HardwareAttester::Tdx(a) => match a.evidence(&bound)? {
                Evidence::Tdx(ev) => Ok(HardwareEvidence::Tdx(ev)),
                _ => Err(HardwareAttestError::WrongKind { platform: "TDX" }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_hardware_platform_with_configfs_tsm_gets_a_report_source() {
        let root = Path::new("/node");
        let tsm = Path::new("/node/sys/kernel/config/tsm/report");
        let snp = Platform {
            sev_snp: true,
            tsm_report: true,
            ..Platform::default()
        };
        assert_eq!(
            HardwareAttester::for_platform(&snp, root),
            Some(HardwareAttester::SevSnp(SnpAttester::new(tsm)))
        );
        let tdx = Platform {
            tdx: true,
            tsm_report: true,
            ..Platform::default()
        };
        assert_eq!(
            HardwareAttester::for_platform(&tdx, root),
            Some(HardwareAttester::Tdx(TdxAttester::with_root(tsm)))
        );
        // /dev/sev-guest without configfs-tsm: not supported, so no report source.
        let old_kernel = Platform {
            sev_snp: true,
            ..Platform::default()
        };
        assert_eq!(HardwareAttester::for_platform(&old_kernel, root), None);
        assert_eq!(
            HardwareAttester::for_platform(&Platform::default(), root),
            None
        );
    }

    #[test]
    fn binding_covers_user_data_and_key_and_nothing_is_ambiguous() {
        let base = ak_binding(&[1; 32], b"ak");
        assert_ne!(base, ak_binding(&[2; 32], b"ak"));
        assert_ne!(base, ak_binding(&[1; 32], b"ak2"));
        // Not the bare user data, nor an unseparated hash of it.
        assert_ne!(base, [1; 32]);
        let plain: [u8; 32] = Sha256::new()
            .chain_update([1u8; 32])
            .chain_update(b"ak")
            .finalize()
            .into();
        assert_ne!(base, plain);
    }
}

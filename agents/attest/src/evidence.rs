//! The platform-independent interface: an [`Attester`] produces [`Evidence`] bound to
//! 32 bytes of caller data, a [`Verifier`] checks it and returns what it proved.
//!
//! For aTLS the caller binds `SHA-256(peer nonce || SubjectPublicKeyInfo)`, so evidence
//! is fresh (the peer's nonce) and tied to the TLS key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::azure::AzureVerifiedInfo;
use crate::azure::{AzureSnpEvidence, AzureTdxEvidence};
pub use crate::gcp::GcpVerifiedInfo;
use crate::gcp::GcpVtpmEvidence;
use crate::snp::SnpEvidence;
pub use crate::snp::SnpVerifiedInfo;
use crate::tdx::TdxEvidence;
pub use crate::tdx::verifier::TdxVerifiedInfo;
use crate::tpm::{ClockInfo, TpmEvidence};

/// Version of the wire encoding produced by [`Evidence::encode`].
pub const EVIDENCE_VERSION: u32 = 1;

/// Evidence from one platform. New platforms (SEV-SNP, TDX) become new variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Evidence {
    Tpm(TpmEvidence),
    /// An Intel TDX quote with its collateral (kind `"tdx"`).
    Tdx(TdxEvidence),
    /// An AMD SEV-SNP report with its VCEK (kind `"sev-snp"`).
    SevSnp(SnpEvidence),
    /// An Azure SEV-SNP CVM's HCL report and its vTPM's quote (kind `"azure-sev-snp"`).
    AzureSevSnp(AzureSnpEvidence),
    /// An Azure TDX CVM's HCL report, its TD quote and its vTPM's quote (kind
    /// `"azure-tdx"`).
    AzureTdx(AzureTdxEvidence),
    /// A GCE vTPM's quote with Google's AK certificate, and the CPU's report over that
    /// AK (kind `"gcp-vtpm"`).
    GcpVtpm(GcpVtpmEvidence),
}

/// Which platform vouched for a [`Verified`] result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum EvidencePlatform {
    Tpm,
    Tdx,
    SevSnp,
    /// Azure's paravisor vTPM, vouched for by an SEV-SNP report.
    AzureSevSnp,
    /// Azure's paravisor vTPM, vouched for by a TD quote.
    AzureTdx,
    /// Google's vTPM (its AK certified by Google), with the CPU's report over the AK.
    GcpVtpm,
}

impl std::fmt::Display for EvidencePlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EvidencePlatform::Tpm => "tpm",
            EvidencePlatform::Tdx => "tdx",
            EvidencePlatform::SevSnp => "sev-snp",
            EvidencePlatform::AzureSevSnp => "azure-sev-snp",
            EvidencePlatform::AzureTdx => "azure-tdx",
            EvidencePlatform::GcpVtpm => "gcp-vtpm",
        })
    }
}

/// The stable wire form: `{"version":1,"evidence":{"kind":"tpm","body":{...}}}`.
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    version: u32,
    evidence: &'a Evidence,
}

/// First pass: only the version, so a newer encoding is reported as such rather than as
/// a malformed body.
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeIn {
    #[serde(rename = "version")]
    _version: u32,
    evidence: Evidence,
}

#[derive(Debug, Error)]
pub enum EvidenceError {
    #[error("evidence ends early ({what}, near offset {offset})")]
    Truncated { what: &'static str, offset: usize },
    #[error("malformed evidence ({what}): {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error(
        "evidence encoding version {version} is not supported (this build reads {EVIDENCE_VERSION})"
    )]
    UnsupportedVersion { version: u32 },
}

impl Evidence {
    /// Which platform this evidence claims to come from (before it is verified).
    pub fn platform(&self) -> EvidencePlatform {
        match self {
            Evidence::Tpm(_) => EvidencePlatform::Tpm,
            Evidence::Tdx(_) => EvidencePlatform::Tdx,
            Evidence::SevSnp(_) => EvidencePlatform::SevSnp,
            Evidence::AzureSevSnp(_) => EvidencePlatform::AzureSevSnp,
            Evidence::AzureTdx(_) => EvidencePlatform::AzureTdx,
            Evidence::GcpVtpm(_) => EvidencePlatform::GcpVtpm,
        }
    }

    /// Encodes as versioned JSON.
    pub fn encode(&self) -> Vec<u8> {
        let env = EnvelopeOut {
            version: EVIDENCE_VERSION,
            evidence: self,
        };
        // Serializing plain structs, strings and maps into a Vec cannot fail.
        serde_json::to_vec(&env).unwrap_or_default()
    }

    /// Decodes what [`Evidence::encode`] produced. Never panics on arbitrary input.
    pub fn decode(bytes: &[u8]) -> Result<Self, EvidenceError> {
        let v: VersionOnly =
            serde_json::from_slice(bytes).map_err(|e| json_error("envelope", bytes, &e))?;
        if v.version != EVIDENCE_VERSION {
            return Err(EvidenceError::UnsupportedVersion { version: v.version });
        }
        let env: EnvelopeIn =
            serde_json::from_slice(bytes).map_err(|e| json_error("evidence body", bytes, &e))?;
        Ok(env.evidence)
    }
}

fn json_error(what: &'static str, bytes: &[u8], e: &serde_json::Error) -> EvidenceError {
    if e.is_eof() {
        EvidenceError::Truncated {
            what,
            offset: bytes.len(),
        }
    } else {
        EvidenceError::Malformed {
            what,
            reason: e.to_string(),
        }
    }
}

/// TPM-specific facts of a verified quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmVerifiedInfo {
    /// Name of the AK that signed (nameAlg || SHA-256 of its public area).
    pub ak_name: Vec<u8>,
    /// SHA-256 of the marshalled public area of the EK the AK was activated against:
    /// which TPM this is, across reboots (the AK may be new each boot).
    pub ek_public_sha256: [u8; 32],
    /// The TPM's clock and boot counters at quote time (resetCount changes on reboot).
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
}

/// What a verifier established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub platform: EvidencePlatform,
    /// The caller data the evidence is bound to (equal to what the verifier expected).
    pub user_data: [u8; 32],
    /// Measured values: SHA-256 PCRs for TPM evidence, covered by the signature.
    pub pcrs: BTreeMap<u32, [u8; 32]>,
    /// The TCG event log, *not* covered by the signature: replay it against `pcrs`
    /// before believing any of its entries.
    pub event_log: Option<Vec<u8>>,
    /// systemd's log of its extends; as unprotected as `event_log`.
    pub systemd_log: Option<Vec<u8>>,
    pub tpm: Option<TpmVerifiedInfo>,
    /// Set for TDX evidence: MRTD, RTMRs and Intel's TCB verdict.
    pub tdx: Option<TdxVerifiedInfo>,
    /// Set for SEV-SNP evidence: measurement, policy, reported TCB, chip ID, VMPL.
    pub snp: Option<SnpVerifiedInfo>,
    /// Set for Azure CVM evidence: what the paravisor's runtime data states.
    pub azure: Option<AzureVerifiedInfo>,
    /// Set for GCE vTPM evidence: whose certificate the AK holds.
    pub gcp: Option<GcpVerifiedInfo>,
}

/// Which TPM or vTPM a verified quote came from, the same across the machine's
/// reboots: what a join service binds a member (and so its disk key) to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// SHA-256 of the EK public area: activated against its certificate, or (AWS's
    /// NitroTPM, which has none) as named in evidence whose SEV-SNP report binds the
    /// AK and the TLS key, so only the attested node itself could have chosen it.
    Ek([u8; 32]),
    /// SHA-256 of an AK that the cloud's own proof names and recreates every boot:
    /// Azure's paravisor AK (bound by the hardware report), GCE's certified AK.
    CloudAk {
        platform: EvidencePlatform,
        digest: [u8; 32],
    },
}

impl std::fmt::Display for Machine {
    /// The EK form is bare hex, as rosters have always kept it; the cloud forms name
    /// their platform, so no two kinds of identity can ever compare equal.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Machine::Ek(d) => f.write_str(&hex::encode(d)),
            Machine::CloudAk { platform, digest } => {
                write!(f, "{platform}-ak:{}", hex::encode(digest))
            }
        }
    }
}

impl Verified {
    /// The machine this evidence came from, where the evidence names one that lasts
    /// across reboots (TPM and cloud vTPM evidence; a bare CPU report names none).
    pub fn machine(&self) -> Option<Machine> {
        if let Some(tpm) = &self.tpm {
            return Some(Machine::Ek(tpm.ek_public_sha256));
        }
        let digest = match (&self.azure, &self.gcp) {
            (Some(azure), _) => azure.ak_sha256,
            (None, Some(gcp)) => gcp.ak_spki_sha256,
            (None, None) => return None,
        };
        Some(Machine::CloudAk {
            platform: self.platform,
            digest,
        })
    }
}

/// Produces evidence on this node.
pub trait Attester {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Evidence bound to `user_data`.
    fn evidence(&mut self, user_data: &[u8; 32]) -> Result<Evidence, Self::Error>;
}

/// Checks evidence from a peer.
pub trait Verifier {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Verifies `evidence` and that it is bound to `expected_user_data`.
    fn verify(
        &self,
        evidence: &Evidence,
        expected_user_data: &[u8; 32],
    ) -> Result<Verified, Self::Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(platform: EvidencePlatform) -> Verified {
        Verified {
            platform,
            user_data: [0; 32],
            pcrs: BTreeMap::new(),
            event_log: None,
            systemd_log: None,
            tpm: None,
            tdx: None,
            snp: None,
            azure: None,
            gcp: None,
        }
    }

    #[test]
    fn the_machine_is_the_ek_or_the_clouds_ak_and_kinds_never_compare_equal() {
        let d = [0xab; 32];
        let mut tpm = verified(EvidencePlatform::Tpm);
        tpm.tpm = Some(TpmVerifiedInfo {
            ak_name: vec![],
            ek_public_sha256: d,
            clock_info: ClockInfo {
                clock: 0,
                reset_count: 0,
                restart_count: 0,
                safe: true,
            },
            firmware_version: 0,
        });
        // Bare hex: what rosters written before cloud identities hold.
        assert_eq!(tpm.machine().expect("EK").to_string(), hex::encode(d));

        let mut azure = verified(EvidencePlatform::AzureSevSnp);
        azure.azure = Some(AzureVerifiedInfo {
            vm_unique_id: None,
            secure_boot: true,
            report_is_fresh: true,
            ak_sha256: d,
        });
        let mut gcp = verified(EvidencePlatform::GcpVtpm);
        gcp.gcp = Some(GcpVerifiedInfo {
            ak_subject: String::new(),
            ak_issuer: String::new(),
            ak_spki_sha256: d,
        });
        let names: Vec<String> = [&tpm, &azure, &gcp]
            .iter()
            .map(|v| v.machine().expect("a machine").to_string())
            .collect();
        assert_eq!(names[1], format!("azure-sev-snp-ak:{}", hex::encode(d)));
        assert_eq!(names[2], format!("gcp-vtpm-ak:{}", hex::encode(d)));
        assert!(names[0] != names[1] && names[1] != names[2] && names[0] != names[2]);

        // A bare CPU report names no machine that lasts across reboots.
        assert_eq!(verified(EvidencePlatform::SevSnp).machine(), None);
    }

    #[test]
    fn version_is_checked_before_the_body() {
        let err = Evidence::decode(br#"{"version":2,"evidence":{"kind":"snp"}}"#)
            .expect_err("future version");
        assert!(
            matches!(err, EvidenceError::UnsupportedVersion { version: 2 }),
            "{err}"
        );
        let err = Evidence::decode(br#"{"version":1,"evidence":{"kind":"snp","body":{}}}"#)
            .expect_err("unknown kind");
        assert!(matches!(err, EvidenceError::Malformed { .. }), "{err}");
        let err = Evidence::decode(br#"{"version":1,"evid"#).expect_err("cut");
        assert!(matches!(err, EvidenceError::Truncated { .. }), "{err}");
    }
}

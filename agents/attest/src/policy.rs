//! A verifier's per-platform policy, and one [`Verifier`] that checks evidence of any
//! platform the policy accepts.
//!
//! The reference measurements (`veil measure --output json`) say which PCR values a
//! node's TPM must quote. What a TPM cannot say, the policy file says: which
//! SEV-SNP launch measurements and minimum TCB, which TDX MRTD/RTMRs and TCB statuses,
//! and whose AMD roots. A platform without a section in the file is not accepted, so a
//! verifier never takes evidence of a kind nobody configured. Roots stay pinned in this
//! crate (AMD ARK/ASK per product, the Intel SGX Root CA); the policy only chooses among
//! them. The TPM's root is the EK CA the caller loads ([`crate::tpm::EkTrust`]).
//!
//! A TPM quote may carry a hardware report that binds its AK ([`crate::cvm`]); the
//! report is then checked under the same section, and `requireHardware` refuses quotes
//! without one. `requireHardware` needs pinned launch measurements (SEV-SNP) or MRTDs
//! (TDX): without them any guest firmware would do. A TD must have SEPT_VE_DISABLE
//! set, and collateral configured here wins over collateral a quote carries (a node
//! cannot roll its TCB status back with older collateral).
//!
//! `azureSevSnp` accepts Azure CVMs ([`crate::azure`]): the paravisor's SEV-SNP report
//! vouches for the vTPM's AK, whose quote carries the PCRs. It takes the `sevSnp`
//! options, but always needs the paravisor's launch measurements and refuses any
//! `maxVmpl` but 0: without either, a guest could write its own HCL report.
//!
//! `profile` ([`Profile`]) says where the nodes run: only that profile's evidence
//! kind is then accepted, whatever else the file's sections would allow.
//!
//! ```json
//! {
//!   "profile": "qemu",
//!   "requireHardware": true,
//!   "sevSnp": {
//!     "product": "milan",
//!     "minTcb": { "bootloader": 3, "tee": 0, "snp": 8, "microcode": 115 },
//!     "measurements": ["<96 hex digits: SHA-384 launch digest>"],
//!     "allowDebug": false,
//!     "maxVmpl": 0,
//!     "allowMigrationAgent": false,
//!     "allowSmt": true
//!   },
//!   "azureSevSnp": {
//!     "product": "genoa",
//!     "measurements": ["<SHA-384 launch digest of Azure's paravisor>"]
//!   },
//!   "tdx": {
//!     "mrtd": ["<96 hex digits>"],
//!     "rtmrs": { "0": "<96 hex digits>" },
//!     "tcbStatus": ["UpToDate"],
//!     "allowDebug": false,
//!     "collateral": { "<Intel PCS collateral for quotes that carry none>": "…" }
//!   }
//! }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use thiserror::Error;

use crate::azure::{AzureError, verify_azure_snp_evidence};
use crate::cvm::{HardwareEvidence, ak_binding};
use crate::evidence::{Evidence, EvidencePlatform, Verified, Verifier};
use crate::gcp::{GcpError, GcpVerifier};
use crate::profile::Profile;
use crate::snp::{SnpPolicy, SnpProduct, SnpVerifier, SnpVerifyError, TcbVersion};
use crate::tdx::{TdxPolicy, TdxVerifier, TdxVerifyError};
use crate::tpm::{TpmEvidence, TpmVerifier, TpmVerifyError};

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("{source_name} is not a Veil platform policy: {reason}")]
    Parse { source_name: String, reason: String },
    #[error("{source_name}: the SEV-SNP section cannot be used: {source}")]
    Snp {
        source_name: String,
        source: SnpVerifyError,
    },
    #[error("{source_name}: the TDX collateral cannot be used: {source}")]
    TdxCollateral {
        source_name: String,
        source: TdxVerifyError,
    },
}

/// The per-platform options of a policy file (see the module docs). Hardware platforms
/// without a section are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformPolicy {
    pub sev_snp: Option<SnpPolicy>,
    /// Azure SEV-SNP CVMs: the paravisor's report and its vTPM's quote.
    pub azure_sev_snp: Option<SnpPolicy>,
    /// Azure TDX CVMs: the TD quote of the paravisor's report, with the collateral for
    /// it (Intel PCS JSON) if the policy carries some.
    pub azure_tdx: Option<(TdxPolicy, Option<String>)>,
    pub tdx: Option<TdxPolicy>,
    /// Intel PCS collateral (`QuoteCollateralV3` JSON) for TDX quotes that carry none.
    /// Intel signs it, so where it comes from does not matter; it expires within weeks.
    pub tdx_collateral: Option<String>,
    /// Refuse TPM quotes that come without a hardware report binding their AK
    /// ([`crate::cvm`]): every node must be a confidential VM.
    pub require_hardware: bool,
    /// Where the nodes run: only this profile's evidence kind is accepted.
    pub profile: Option<Profile>,
    /// GCE vTPM evidence is accepted (Google's AK certificate, pinned root).
    pub gcp: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyFile {
    #[serde(default)]
    sev_snp: Option<SnpSection>,
    #[serde(default)]
    azure_sev_snp: Option<SnpSection>,
    #[serde(default)]
    azure_tdx: Option<TdxSection>,
    #[serde(default)]
    tdx: Option<TdxSection>,
    #[serde(default)]
    require_hardware: bool,
    #[serde(default)]
    profile: Option<Profile>,
    #[serde(default)]
    gcp: Option<GcpSection>,
}

/// No options yet: Google's root is pinned, and what the CPU must show is in the
/// `sevSnp` or `tdx` section.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GcpSection {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SnpSection {
    product: ProductName,
    #[serde(default)]
    min_tcb: TcbSection,
    #[serde(default)]
    measurements: Vec<Sha384Hex>,
    #[serde(default)]
    allow_debug: bool,
    /// Default 0.
    #[serde(default)]
    max_vmpl: u32,
    #[serde(default)]
    allow_migration_agent: bool,
    /// Default true: the clouds' SNP guests allow SMT.
    #[serde(default = "yes")]
    allow_smt: bool,
}

fn yes() -> bool {
    true
}

impl SnpSection {
    fn into_policy(self) -> SnpPolicy {
        SnpPolicy {
            allowed_measurements: self.measurements.into_iter().map(|m| m.0).collect(),
            min_tcb: TcbVersion {
                bootloader: self.min_tcb.bootloader,
                tee: self.min_tcb.tee,
                snp: self.min_tcb.snp,
                microcode: self.min_tcb.microcode,
            },
            allow_debug: self.allow_debug,
            product: match self.product {
                ProductName::Milan => SnpProduct::Milan,
                ProductName::Genoa => SnpProduct::Genoa,
                ProductName::Turin => SnpProduct::Turin,
            },
            require_zero_report_data_tail: true,
            max_vmpl: self.max_vmpl,
            allow_migration_agent: self.allow_migration_agent,
            allow_smt: self.allow_smt,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum ProductName {
    #[serde(alias = "Milan")]
    Milan,
    #[serde(alias = "Genoa")]
    Genoa,
    #[serde(alias = "Turin")]
    Turin,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TcbSection {
    #[serde(default)]
    bootloader: u8,
    #[serde(default)]
    tee: u8,
    #[serde(default)]
    snp: u8,
    #[serde(default)]
    microcode: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TdxSection {
    #[serde(default)]
    mrtd: Vec<Sha384Hex>,
    #[serde(default)]
    rtmrs: BTreeMap<RtmrIndex, Sha384Hex>,
    /// Absent: Intel's `UpToDate` only.
    #[serde(default)]
    tcb_status: Option<Vec<String>>,
    #[serde(default)]
    allow_debug: bool,
    /// Intel PCS collateral, inline, for quotes that come without.
    #[serde(default)]
    collateral: Option<serde_json::Value>,
}

impl TdxSection {
    /// The policy, and the section's collateral as JSON text.
    fn into_policy(self) -> (TdxPolicy, Option<String>) {
        let default = TdxPolicy::default();
        let collateral = self.collateral.as_ref().map(ToString::to_string);
        let policy = TdxPolicy {
            allowed_mrtd: self.mrtd.into_iter().map(|m| m.0).collect(),
            expected_rtmrs: self.rtmrs.into_iter().map(|(i, v)| (i.0, v.0)).collect(),
            allowed_tcb_status: self.tcb_status.unwrap_or(default.allowed_tcb_status),
            allow_debug: self.allow_debug,
            ..default
        };
        (policy, collateral)
    }
}

/// 48 bytes written as 96 hex digits.
struct Sha384Hex([u8; 48]);

impl<'de> Deserialize<'de> for Sha384Hex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 48];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|e| {
            serde::de::Error::custom(format!("'{s}' is not a SHA-384 value (96 hex digits): {e}"))
        })?;
        Ok(Sha384Hex(out))
    }
}

/// An RTMR index, 0 to 3, written as a JSON object key.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct RtmrIndex(u8);

impl<'de> Deserialize<'de> for RtmrIndex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.parse::<u8>() {
            Ok(i) if i <= 3 => Ok(RtmrIndex(i)),
            _ => Err(serde::de::Error::custom(format!(
                "RTMR index '{s}' is not 0, 1, 2 or 3"
            ))),
        }
    }
}

impl PlatformPolicy {
    /// The evidence kinds accepted, for logs: `tpm`, `tpm+sev-snp`, `tpm+sev-snp+tdx`;
    /// with `requireHardware`, `tpm` is not among them on its own.
    pub fn accepts(&self) -> String {
        let mut kinds = Vec::new();
        if !self.require_hardware {
            kinds.push("tpm");
        }
        if self.sev_snp.is_some() {
            kinds.push(if self.require_hardware {
                "tpm+sev-snp-report"
            } else {
                "sev-snp"
            });
        }
        if self.tdx.is_some() {
            kinds.push(if self.require_hardware {
                "tpm+tdx-quote"
            } else {
                "tdx"
            });
        }
        if self.azure_sev_snp.is_some() {
            kinds.push("azure-sev-snp");
        }
        if self.azure_tdx.is_some() {
            kinds.push("azure-tdx");
        }
        if self.gcp {
            kinds.push("gcp-vtpm");
        }
        kinds.join(",")
    }

    /// Parses a policy file's text; `source_name` (e.g. the path) is named in errors.
    pub fn from_json(source_name: &str, text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = serde_json::from_str(text).map_err(|e| PolicyError::Parse {
            source_name: source_name.to_owned(),
            reason: e.to_string(),
        })?;
        let sev_snp = file.sev_snp.map(SnpSection::into_policy);
        let azure_sev_snp = file.azure_sev_snp.map(SnpSection::into_policy);
        let (tdx, tdx_collateral) = match file.tdx.map(TdxSection::into_policy) {
            Some((p, c)) => (Some(p), c),
            None => (None, None),
        };
        let azure_tdx = file.azure_tdx.map(TdxSection::into_policy);
        let policy = PlatformPolicy {
            sev_snp,
            azure_sev_snp,
            azure_tdx,
            tdx,
            tdx_collateral,
            require_hardware: file.require_hardware,
            profile: file.profile,
            gcp: file.gcp.is_some(),
        };
        policy.check().map_err(|reason| PolicyError::Parse {
            source_name: source_name.to_owned(),
            reason,
        })?;
        Ok(policy)
    }

    /// What a policy must say to mean anything: requiring hardware evidence is worth
    /// only as much as the launch measurements it pins (any SEV-SNP guest or TD with
    /// any firmware would pass otherwise).
    pub fn check(&self) -> Result<(), String> {
        if let Some(profile) = self.profile {
            if profile == Profile::AzureSevSnp && self.azure_sev_snp.is_none() {
                return Err("profile \"azure-sev-snp\" needs an \"azureSevSnp\" section: the paravisor's launch digests and the chip generation".into());
            }
            if profile == Profile::AzureTdx && self.azure_tdx.is_none() {
                return Err("profile \"azure-tdx\" needs an \"azureTdx\" section: the paravisor's MRTDs and Intel's collateral".into());
            }
            if matches!(profile, Profile::GcpSevSnp | Profile::GcpTdx) && !self.gcp {
                return Err(format!(
                    "profile \"{profile}\" needs a \"gcp\" section (it accepts Google's vTPM)"
                ));
            }
            let pinned = match profile.hardware() {
                Some("SEV-SNP") => self
                    .sev_snp
                    .as_ref()
                    .is_some_and(|s| !s.allowed_measurements.is_empty()),
                Some(_) => self
                    .tdx
                    .as_ref()
                    .is_some_and(|t| !t.allowed_mrtd.is_empty()),
                None => true,
            };
            if !pinned {
                return Err(format!(
                    "profile \"{profile}\" needs a \"{}\" section with its {}: the CPU's report is what proves a confidential VM there",
                    if profile.hardware() == Some("SEV-SNP") {
                        "sevSnp"
                    } else {
                        "tdx"
                    },
                    if profile.hardware() == Some("SEV-SNP") {
                        "\"measurements\""
                    } else {
                        "\"mrtd\""
                    },
                ));
            }
        }
        if let Some(azure) = &self.azure_sev_snp {
            if azure.allowed_measurements.is_empty() {
                return Err("the \"azureSevSnp\" section needs its \"measurements\": the launch digests of Azure's paravisor to accept (any SNP guest could write an HCL report otherwise)".into());
            }
            if azure.max_vmpl != 0 {
                return Err(format!(
                    "the \"azureSevSnp\" section has maxVmpl {}: only a report from VMPL 0 speaks for Azure's paravisor (the guest above it could bind any key)",
                    azure.max_vmpl
                ));
            }
        }
        if self
            .azure_tdx
            .as_ref()
            .is_some_and(|(t, _)| t.allowed_mrtd.is_empty())
        {
            return Err("the \"azureTdx\" section needs its \"mrtd\": the TD firmware (Azure's paravisor) measurements to accept".into());
        }
        if !self.require_hardware {
            return Ok(());
        }
        if self.sev_snp.is_none()
            && self.tdx.is_none()
            && self.azure_sev_snp.is_none()
            && self.azure_tdx.is_none()
        {
            return Err(
                "requireHardware needs a \"sevSnp\", \"azureSevSnp\" or \"tdx\" section to check the hardware against"
                    .into(),
            );
        }
        if self
            .sev_snp
            .as_ref()
            .is_some_and(|s| s.allowed_measurements.is_empty())
        {
            return Err("requireHardware with a \"sevSnp\" section needs its \"measurements\": the launch digests to accept".into());
        }
        if self.tdx.as_ref().is_some_and(|t| t.allowed_mrtd.is_empty()) {
            return Err("requireHardware with a \"tdx\" section needs its \"mrtd\": the TD firmware measurements to accept".into());
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum PlatformVerifyError {
    #[error(
        "the peer presented {platform} evidence, which the policy does not accept (it has no \"{section}\" section)"
    )]
    NotAccepted {
        platform: &'static str,
        section: &'static str,
    },
    #[error("TPM evidence refused: {0}")]
    Tpm(#[from] TpmVerifyError),
    #[error(
        "the policy requires a hardware report (SEV-SNP or TDX) with every TPM quote, and this one came without"
    )]
    NoHardware,
    #[error("the {platform} report attached to the TPM quote is refused: {reason}")]
    Hardware {
        platform: &'static str,
        reason: String,
    },
    #[error("SEV-SNP evidence refused: {0}")]
    Snp(#[from] SnpVerifyError),
    #[error("TDX evidence refused: {0}")]
    Tdx(#[from] TdxVerifyError),
    #[error("Azure SEV-SNP evidence refused: {0}")]
    Azure(#[from] AzureError),
    #[error("Azure TDX evidence refused: {0}")]
    AzureTdx(#[source] AzureError),
    #[error(
        "the peer presented {got} evidence, but nodes under profile \"{profile}\" must present {want} evidence"
    )]
    WrongProfile {
        profile: Profile,
        got: EvidencePlatform,
        want: EvidencePlatform,
    },
    #[error("GCE vTPM evidence refused: {0}")]
    Gcp(#[from] GcpError),
    #[error(
        "nodes under profile \"{profile}\" must add a {hardware} report over their AK, and this evidence came without"
    )]
    ProfileNeedsHardware {
        profile: Profile,
        hardware: &'static str,
    },
}

/// The verifier of a policy section, or why evidence of that `platform` is refused.
fn accepted<'a, T>(
    verifier: &'a Option<T>,
    platform: &'static str,
    section: &'static str,
) -> Result<&'a T, PlatformVerifyError> {
    verifier
        .as_ref()
        .ok_or(PlatformVerifyError::NotAccepted { platform, section })
}

/// What a hardware report proved.
struct HardwareFacts {
    snp: Option<crate::snp::SnpVerifiedInfo>,
    tdx: Option<crate::tdx::verifier::TdxVerifiedInfo>,
}

impl HardwareFacts {
    fn into(self, verified: &mut Verified) {
        verified.snp = self.snp;
        verified.tdx = self.tdx;
    }
}

impl PlatformPolicy {
    /// Whether a TDX section of this policy holds no collateral: evidence with a TD
    /// quote then needs some fetched for its platform ([`Self::missing_tdx_collateral`]).
    pub fn lacks_tdx_collateral(&self) -> bool {
        matches!(self.azure_tdx, Some((_, None)))
            || (self.tdx.is_some() && self.tdx_collateral.is_none())
    }

    /// Where Intel's collateral for TD quotes like `own`'s goes, if this policy checks
    /// such quotes and holds none for them: what a joiner fills in (fetched for its own
    /// platform) before it checks its join service.
    pub fn missing_tdx_collateral(&mut self, own: &Evidence) -> Option<&mut Option<String>> {
        crate::cvm::td_quote(own)?;
        let slot = match own {
            Evidence::AzureTdx(_) => self.azure_tdx.as_mut().map(|(_, c)| c)?,
            _ if self.tdx.is_some() => &mut self.tdx_collateral,
            _ => return None,
        };
        slot.is_none().then_some(slot)
    }
}

/// Verifies evidence of whichever platform produced it: TPM quotes always (with the
/// [`TpmVerifier`]'s EK CA and activated AKs), SEV-SNP and TDX only where the policy
/// has a section for them.
#[derive(Debug)]
pub struct PlatformVerifier {
    tpm: TpmVerifier,
    snp: Option<SnpVerifier>,
    azure_snp: Option<SnpVerifier>,
    azure_tdx: Option<TdxVerifier>,
    tdx: Option<TdxVerifier>,
    require_hardware: bool,
    profile: Option<Profile>,
    gcp: Option<GcpVerifier>,
}

impl PlatformVerifier {
    /// `source_name` names the policy in errors.
    pub fn new(
        tpm: TpmVerifier,
        policy: &PlatformPolicy,
        source_name: &str,
    ) -> Result<Self, PolicyError> {
        policy.check().map_err(|reason| PolicyError::Parse {
            source_name: source_name.to_owned(),
            reason,
        })?;
        let snp_verifier = |p: &Option<SnpPolicy>| {
            p.clone()
                .map(SnpVerifier::new)
                .transpose()
                .map_err(|source| PolicyError::Snp {
                    source_name: source_name.to_owned(),
                    source,
                })
        };
        let snp = snp_verifier(&policy.sev_snp)?;
        let azure_snp = snp_verifier(&policy.azure_sev_snp)?;
        let tdx_verifier = |p: &TdxPolicy, c: Option<&String>| match c {
            Some(c) => TdxVerifier::new(p.clone())
                .with_collateral_json(c)
                .map_err(|source| PolicyError::TdxCollateral {
                    source_name: source_name.to_owned(),
                    source,
                }),
            None => Ok(TdxVerifier::new(p.clone())),
        };
        let tdx = policy
            .tdx
            .as_ref()
            .map(|p| tdx_verifier(p, policy.tdx_collateral.as_ref()))
            .transpose()?;
        let azure_tdx = policy
            .azure_tdx
            .as_ref()
            .map(|(p, c)| tdx_verifier(p, c.as_ref()))
            .transpose()?;
        Ok(PlatformVerifier {
            tpm,
            snp,
            azure_snp,
            azure_tdx,
            tdx,
            require_hardware: policy.require_hardware,
            profile: policy.profile,
            gcp: match policy.gcp {
                true => Some(GcpVerifier::pinned().map_err(|e| PolicyError::Parse {
                    source_name: source_name.to_owned(),
                    reason: e.to_string(),
                })?),
                false => None,
            },
        })
    }

    /// Only TPM evidence: what a policy without hardware sections gives.
    pub fn tpm_only(tpm: TpmVerifier) -> Self {
        PlatformVerifier {
            tpm,
            snp: None,
            azure_snp: None,
            azure_tdx: None,
            tdx: None,
            require_hardware: false,
            profile: None,
            gcp: None,
        }
    }

    /// Replaces the GCE vTPM verifier (e.g. one with a fixed clock); only where the
    /// policy accepts GCE evidence.
    pub fn with_gcp(mut self, gcp: GcpVerifier) -> Self {
        if self.gcp.is_some() {
            self.gcp = Some(gcp);
        }
        self
    }

    /// The profile the policy names, if any.
    pub fn profile(&self) -> Option<Profile> {
        self.profile
    }

    /// Whether a peer's AK must be activated against a certified EK before its quote
    /// counts: not under a profile whose hardware report names the AK.
    pub fn activates_ak(&self) -> bool {
        self.profile.is_none_or(Profile::activates_ak)
    }

    /// Replaces the Azure TDX verifier (e.g. one with a fixed clock); only where the
    /// policy accepts Azure TDX evidence.
    pub fn with_azure_tdx(mut self, tdx: TdxVerifier) -> Self {
        if self.azure_tdx.is_some() {
            self.azure_tdx = Some(tdx);
        }
        self
    }

    /// Replaces the TDX verifier (e.g. one with collateral, a fixed clock or a test root).
    pub fn with_tdx(mut self, tdx: TdxVerifier) -> Self {
        self.tdx = Some(tdx);
        self
    }

    fn snp(&self) -> Result<&SnpVerifier, PlatformVerifyError> {
        accepted(&self.snp, "SEV-SNP", "sevSnp")
    }

    fn tdx(&self) -> Result<&TdxVerifier, PlatformVerifyError> {
        accepted(&self.tdx, "TDX", "tdx")
    }

    /// A TPM quote, and the hardware report that must bind its AK where one is
    /// attached (or required).
    fn verify_tpm(
        &self,
        evidence: &Evidence,
        tpm: &TpmEvidence,
        expected_user_data: &[u8; 32],
    ) -> Result<Verified, PlatformVerifyError> {
        let mut verified = self.tpm.verify(evidence, expected_user_data)?;
        let Some(hardware) = &tpm.hardware else {
            return match self.require_hardware {
                true => Err(PlatformVerifyError::NoHardware),
                false => Ok(verified),
            };
        };
        let bound = ak_binding(expected_user_data, &tpm.ak_public);
        self.verify_hardware(hardware, &bound)?.into(&mut verified);
        Ok(verified)
    }

    /// A TPM quote whose AK no EK certificate vouches for (AWS's NitroTPM): the SEV-SNP
    /// report over that AK and the caller's data is checked first, and only then the
    /// quote by the AK it binds.
    fn verify_tpm_hardware_bound(
        &self,
        tpm: &TpmEvidence,
        expected_user_data: &[u8; 32],
    ) -> Result<Verified, PlatformVerifyError> {
        let hardware = tpm
            .hardware
            .as_ref()
            .ok_or(PlatformVerifyError::NoHardware)?;
        let bound = ak_binding(expected_user_data, &tpm.ak_public);
        let facts = self.verify_hardware(hardware, &bound)?;
        let mut verified = TpmVerifier::verify_quote_of_hardware_bound_ak(tpm, expected_user_data)?;
        facts.into(&mut verified);
        Ok(verified)
    }

    /// A hardware report over `bound` (an AK and the caller's data), checked under the
    /// policy's section for its kind: what it proved.
    fn verify_hardware(
        &self,
        hardware: &HardwareEvidence,
        bound: &[u8; 32],
    ) -> Result<HardwareFacts, PlatformVerifyError> {
        let refused = |reason: String| PlatformVerifyError::Hardware {
            platform: hardware.platform_name(),
            reason,
        };
        Ok(match hardware {
            HardwareEvidence::SevSnp(ev) => {
                let (_, info) = self
                    .snp()?
                    .verify_snp(ev, bound)
                    .map_err(|e| refused(e.to_string()))?;
                HardwareFacts {
                    snp: Some(info),
                    tdx: None,
                }
            }
            HardwareEvidence::Tdx(ev) => {
                let tdx = self
                    .tdx()?
                    .verify_tdx(ev, bound)
                    .map_err(|e| refused(e.to_string()))?;
                HardwareFacts {
                    snp: None,
                    tdx: tdx.tdx,
                }
            }
        })
    }

    /// Google's AK certificate and quote, then the CPU's report over that certificate.
    fn verify_gcp(
        &self,
        ev: &crate::gcp::GcpVtpmEvidence,
        expected_user_data: &[u8; 32],
    ) -> Result<Verified, PlatformVerifyError> {
        let gcp = accepted(&self.gcp, "GCE vTPM", "gcp")?;
        let (pcrs, info) = gcp.verify(ev, expected_user_data)?;
        let mut verified = Verified {
            platform: EvidencePlatform::GcpVtpm,
            user_data: *expected_user_data,
            pcrs,
            event_log: None,
            systemd_log: None,
            tpm: None,
            tdx: None,
            snp: None,
            azure: None,
            gcp: Some(info),
        };
        match &ev.hardware {
            Some(hardware) => {
                let bound = ak_binding(expected_user_data, &ev.ak_cert);
                self.verify_hardware(hardware, &bound)?.into(&mut verified);
            }
            None if self.require_hardware => return Err(PlatformVerifyError::NoHardware),
            None => {}
        }
        Ok(verified)
    }

    pub fn tpm(&self) -> &TpmVerifier {
        &self.tpm
    }

    /// For trusting AKs after activation.
    pub fn tpm_mut(&mut self) -> &mut TpmVerifier {
        &mut self.tpm
    }

    /// Offers `json`, Intel's collateral fetched for the platform of this node's own
    /// evidence `own`, to the verifier of TD quotes of `own`'s kind (Azure TDX, or
    /// TDX); see [`TdxVerifier::refresh_collateral`]. `None` where `own` has no TD
    /// quote or the policy checks none of its kind.
    pub fn refresh_tdx_collateral(
        &mut self,
        own: &Evidence,
        json: &str,
    ) -> Result<Option<crate::tdx::CollateralRefresh>, TdxVerifyError> {
        let Some(quote) = crate::cvm::td_quote(own) else {
            return Ok(None);
        };
        let verifier = match own {
            Evidence::AzureTdx(_) => self.azure_tdx.as_mut(),
            _ => self.tdx.as_mut(),
        };
        verifier
            .map(|v| v.refresh_collateral(json, quote))
            .transpose()
    }
}

impl Verifier for PlatformVerifier {
    type Error = PlatformVerifyError;

    fn verify(
        &self,
        evidence: &Evidence,
        expected_user_data: &[u8; 32],
    ) -> Result<Verified, PlatformVerifyError> {
        if let Some(profile) = self.profile {
            let want = profile.evidence();
            if want != evidence.platform() {
                return Err(PlatformVerifyError::WrongProfile {
                    profile,
                    got: evidence.platform(),
                    want,
                });
            }
        }
        let verified = match evidence {
            Evidence::Tpm(tpm) if self.profile == Some(Profile::AwsSevSnp) => {
                self.verify_tpm_hardware_bound(tpm, expected_user_data)
            }
            Evidence::Tpm(tpm) => self.verify_tpm(evidence, tpm, expected_user_data),
            // Bare hardware evidence proves the platform, not the UKI: a caller that
            // compares PCRs finds none quoted.
            Evidence::SevSnp(_) => Ok(self.snp()?.verify(evidence, expected_user_data)?),
            Evidence::Tdx(_) => Ok(self.tdx()?.verify(evidence, expected_user_data)?),
            // The paravisor's vTPM is inside the TEE: its quote carries the PCRs, and
            // counts as hardware evidence.
            Evidence::AzureSevSnp(ev) => {
                let snp = accepted(&self.azure_snp, "Azure SEV-SNP", "azureSevSnp")?;
                Ok(verify_azure_snp_evidence(ev, snp, expected_user_data)?)
            }
            Evidence::AzureTdx(ev) => {
                let tdx = accepted(&self.azure_tdx, "Azure TDX", "azureTdx")?;
                crate::azure::verify_azure_tdx(ev, tdx, expected_user_data)
                    .map_err(PlatformVerifyError::AzureTdx)
            }
            Evidence::GcpVtpm(ev) => self.verify_gcp(ev, expected_user_data),
        }?;
        // Where the vTPM alone does not prove a confidential VM, the CPU's report must.
        if let Some((profile, hardware)) = self.profile.and_then(|p| Some((p, p.hardware()?))) {
            let present = match hardware {
                "SEV-SNP" => verified.snp.is_some(),
                _ => verified.tdx.is_some(),
            };
            if !present {
                return Err(PlatformVerifyError::ProfileNeedsHardware { profile, hardware });
            }
        }
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";

    #[test]
    fn full_file_becomes_the_platform_policies() {
        let text = format!(
            r#"{{
              "sevSnp": {{ "product": "genoa", "minTcb": {{ "snp": 8, "microcode": 115 }},
                           "measurements": ["{M}"] }},
              "tdx": {{ "mrtd": ["{M}"], "rtmrs": {{ "1": "{M}" }},
                        "tcbStatus": ["UpToDate", "SWHardeningNeeded"] }}
            }}"#
        );
        let p = PlatformPolicy::from_json("policy.json", &text).expect("valid policy");
        assert_eq!(p.accepts(), "tpm,sev-snp,tdx");
        let snp = p.sev_snp.expect("snp section");
        assert_eq!(snp.product, SnpProduct::Genoa);
        assert_eq!(snp.min_tcb.snp, 8);
        assert_eq!(snp.min_tcb.microcode, 115);
        assert_eq!(snp.min_tcb.bootloader, 0);
        assert_eq!(snp.allowed_measurements, vec![[0xa5; 48]]);
        assert!(!snp.allow_debug);
        assert!(snp.require_zero_report_data_tail);
        let tdx = p.tdx.expect("tdx section");
        assert_eq!(tdx.allowed_mrtd, vec![[0xa5; 48]]);
        assert_eq!(tdx.expected_rtmrs.get(&1), Some(&[0xa5; 48]));
        assert_eq!(
            tdx.allowed_tcb_status,
            vec!["UpToDate".to_owned(), "SWHardeningNeeded".to_owned()]
        );
        assert_eq!(tdx.now, None);
        assert!(!tdx.ignore_report_data_tail);
        assert!(snp.allow_smt && !snp.allow_migration_agent && snp.max_vmpl == 0);
        let strict = PlatformPolicy::from_json(
            "p",
            &format!(r#"{{"requireHardware": true, "tdx": {{"mrtd": ["{M}"]}}}}"#),
        )
        .expect("strict policy");
        assert_eq!(strict.accepts(), "tpm+tdx-quote");
    }

    #[test]
    fn empty_file_accepts_no_hardware_platform() {
        let p = PlatformPolicy::from_json("p", "{}").expect("empty policy");
        assert_eq!(p, PlatformPolicy::default());
        assert_eq!(p.accepts(), "tpm");
        let p = PlatformPolicy::from_json("p", r#"{"tdx": {}}"#).expect("tdx only");
        assert_eq!(p.tdx.expect("tdx").allowed_tcb_status, vec!["UpToDate"]);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (r#"{"sevsnp": {}}"#, "unknown field `sevsnp`"),
            (r#"{"sevSnp": {}}"#, "missing field `product`"),
            (
                r#"{"sevSnp": {"product": "naples"}}"#,
                "unknown variant `naples`",
            ),
            (
                r#"{"sevSnp": {"product": "milan", "minTcb": {"fw": 1}}}"#,
                "unknown field `fw`",
            ),
            (
                r#"{"sevSnp": {"product": "milan", "minTcb": {"snp": 300}}}"#,
                "300",
            ),
            (
                r#"{"tdx": {"mrtd": ["abcd"]}}"#,
                "'abcd' is not a SHA-384 value (96 hex digits)",
            ),
            (
                &format!(r#"{{"tdx": {{"rtmrs": {{"4": "{M}"}}}}}}"#),
                "RTMR index '4' is not 0, 1, 2 or 3",
            ),
            (r#"{"tdx": {"allowDebug": "no"}}"#, "invalid type"),
            (r#"{"tdx": "#, "EOF"),
            (r#"{"requireHardware": true}"#, "requireHardware needs"),
            (
                r#"{"requireHardware": true, "tdx": {}}"#,
                "needs its \"mrtd\"",
            ),
            (
                r#"{"requireHardware": true, "sevSnp": {"product": "milan"}}"#,
                "needs its \"measurements\"",
            ),
            (
                r#"{"sevSnp": {"product": "milan", "maxVmpl": -1}}"#,
                "invalid value",
            ),
        ];
        for (text, needle) in cases {
            let err = PlatformPolicy::from_json("site.json", text).expect_err(text);
            let msg = err.to_string();
            assert!(msg.starts_with("site.json is not"), "{msg}");
            assert!(msg.contains(needle), "{text}: {msg}");
        }
    }
}

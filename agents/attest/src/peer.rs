//! What a node requires of a peer's hardware evidence before any cluster policy has
//! reached it: a joiner checking its join service.
//!
//! A joiner has no platform policy yet (the cluster's lives on the state disks of its
//! members), and the host controls everything it could be told. What it can trust is
//! its own hardware: a joiner in an SEV-SNP or TDX guest asks for its own report and
//! requires the service's quote to come with a report of the same kind that binds the
//! service's AK, chains to the same vendor root, and shows the same launch measurement
//! (SNP `MEASUREMENT`, TDX `MRTD`), no debug, and a TCB no older than its own. Where the
//! TPM CA is the cloud's own (a vTPM the host could emulate), this is what stops the
//! host from answering for the join service.
//!
//! On a cloud's CVM ([`cloud_policy_like_own`]) the same holds of the cloud's evidence:
//! the service must present the kind the joiner presents (Azure's HCL report, GCE's
//! certified AK, AWS's TPM quote with the SEV-SNP report binding its AK), under that
//! cloud's profile, with the joiner's own launch measurement. There the cloud's proof
//! names the service's AK, so the joiner activates nothing.
//!
//! The cost: nodes must be launched alike (the same firmware and, for SNP, the same
//! vCPU count, which the launch measurement covers), as the cluster's own policy
//! requires anyway.

use thiserror::Error;

use crate::azure::HclReport;
use crate::cvm::HardwareEvidence;
use crate::evidence::Evidence;
use crate::policy::PlatformPolicy;
use crate::snp::{SnpEvidence, SnpPolicy, SnpVerifier, SnpVerifyError, report::SnpReport};
use crate::tdx::{TdQuote, TdxEvidence, TdxPolicy, TdxVerifyError};

#[derive(Debug, Error)]
pub enum PeerPolicyError {
    #[error("this node's own SEV-SNP report cannot be read: {0}")]
    OwnSnp(#[source] SnpVerifyError),
    #[error(
        "this node's own VCEK ({vcek_len} bytes from the host's certificate table) is not signed by any pinned AMD ASK (Milan, Genoa, Turin)"
    )]
    UnknownProduct { vcek_len: usize },
    #[error("this node's own TDX quote cannot be read: {0}")]
    OwnTdx(#[source] TdxVerifyError),
    #[error("this node's own Azure HCL report cannot be read: {0}")]
    OwnAzure(#[source] crate::azure::AzureError),
    #[error("this node's own evidence ({0}) is not a cloud's: it names no AK by itself")]
    NotCloud(String),
}

/// What a peer's SEV-SNP report must show, from this node's own evidence: `base`
/// gives the options not taken from the report (Veil's defaults in production).
pub fn snp_like_own(own: &SnpEvidence, base: SnpPolicy) -> Result<SnpPolicy, PeerPolicyError> {
    let report = SnpReport::parse(&own.report).map_err(PeerPolicyError::OwnSnp)?;
    let product =
        SnpVerifier::product_of_vcek(&own.vcek).ok_or(PeerPolicyError::UnknownProduct {
            vcek_len: own.vcek.len(),
        })?;
    Ok(SnpPolicy {
        product,
        allowed_measurements: vec![*report.measurement()],
        min_tcb: report.reported_tcb(),
        // A node that runs under a paravisor (VMPL > 0) expects its peers to as well.
        max_vmpl: report.vmpl().max(base.max_vmpl),
        ..base
    })
}

/// What a peer's TDX quote must show, from this node's own quote.
pub fn tdx_like_own(own: &TdxEvidence, base: TdxPolicy) -> Result<TdxPolicy, PeerPolicyError> {
    let quote = TdQuote::parse(&own.quote).map_err(PeerPolicyError::OwnTdx)?;
    Ok(TdxPolicy {
        allowed_mrtd: vec![quote.mr_td],
        ..base
    })
}

/// The platform policy a joiner applies to its join service: hardware required, of the
/// kind and launch measurement of `own`, with Veil's strict defaults otherwise.
pub fn policy_like_own(own: &HardwareEvidence) -> Result<PlatformPolicy, PeerPolicyError> {
    let mut policy = PlatformPolicy {
        require_hardware: true,
        ..PlatformPolicy::default()
    };
    match own {
        HardwareEvidence::SevSnp(ev) => {
            policy.sev_snp = Some(snp_like_own(ev, SnpPolicy::default())?);
        }
        HardwareEvidence::Tdx(ev) => {
            policy.tdx = Some(tdx_like_own(ev, TdxPolicy::default())?);
            // The collateral this node got for itself (Intel signs it) wins over what
            // the peer sends, so the peer cannot pass with older collateral.
            policy.tdx_collateral = ev.collateral.clone();
        }
    }
    Ok(policy)
}

/// The platform policy a joiner on a cloud's CVM applies to its join service, from the
/// evidence it presents itself (`own`): the same kind, under that cloud's profile,
/// with its own launch measurement (SNP `MEASUREMENT`, TDX `MRTD`) and Veil's strict
/// defaults otherwise.
///
/// On Azure TDX the policy holds no collateral: Intel's for this node's platform is
/// the caller's to fetch (`veil_fetch::pcs`), as this crate holds no network code.
///
/// A GCE vTPM without a CPU report (no configfs-tsm in the guest) gives a policy that
/// takes Google's certified AK alone: that is all such a node can check, and all it
/// can show.
pub fn cloud_policy_like_own(own: &Evidence) -> Result<PlatformPolicy, PeerPolicyError> {
    use crate::profile::Profile;
    match own {
        Evidence::AzureSevSnp(ev) => {
            let hcl = HclReport::parse(&ev.hcl_report).map_err(PeerPolicyError::OwnAzure)?;
            let snp = SnpEvidence {
                report: hcl.hw_report().to_vec(),
                vcek: ev.vcek.clone(),
                cert_chain: ev.cert_chain.clone(),
            };
            Ok(PlatformPolicy {
                azure_sev_snp: Some(snp_like_own(&snp, SnpPolicy::default())?),
                profile: Some(Profile::AzureSevSnp),
                ..PlatformPolicy::default()
            })
        }
        Evidence::AzureTdx(ev) => {
            let tdx = TdxEvidence {
                quote: ev.td_quote.clone(),
                collateral: None,
            };
            Ok(PlatformPolicy {
                azure_tdx: Some((tdx_like_own(&tdx, TdxPolicy::default())?, None)),
                profile: Some(Profile::AzureTdx),
                ..PlatformPolicy::default()
            })
        }
        Evidence::GcpVtpm(ev) => {
            let (mut policy, profile) = match &ev.hardware {
                Some(hw @ HardwareEvidence::SevSnp(_)) => {
                    (policy_like_own(hw)?, Some(Profile::GcpSevSnp))
                }
                Some(hw @ HardwareEvidence::Tdx(_)) => {
                    (policy_like_own(hw)?, Some(Profile::GcpTdx))
                }
                None => (PlatformPolicy::default(), None),
            };
            policy.gcp = true;
            policy.profile = profile;
            Ok(policy)
        }
        // AWS: NitroTPM has no EK certificate; the SEV-SNP report binds the AK.
        Evidence::Tpm(ev) if ev.ek_cert.is_empty() => match &ev.hardware {
            Some(hw @ HardwareEvidence::SevSnp(_)) => Ok(PlatformPolicy {
                profile: Some(Profile::AwsSevSnp),
                ..policy_like_own(hw)?
            }),
            _ => Err(PeerPolicyError::NotCloud(
                "a TPM quote with neither an EK certificate nor an SEV-SNP report".into(),
            )),
        },
        Evidence::Tpm(_) => Err(PeerPolicyError::NotCloud(
            "a TPM quote whose AK is activated against its EK certificate".into(),
        )),
        Evidence::SevSnp(_) => Err(PeerPolicyError::NotCloud("a bare SEV-SNP report".into())),
        Evidence::Tdx(_) => Err(PeerPolicyError::NotCloud("a bare TDX quote".into())),
    }
}

//! Attestation for Veil nodes: finding out which confidential-computing platform a node
//! runs on, producing evidence of what it booted, and verifying such evidence.
//!
//! - [`platform`] and [`pcr`] read real kernel interfaces (`/dev/tpmrm0`,
//!   `/dev/sev-guest`, configfs-tsm, the TPM's sysfs PCR files). Paths are taken relative
//!   to a root directory so the logic can be tested against a fake sysfs tree.
//! - [`evidence`] defines the platform-independent [`Attester`] / [`Verifier`] pair and
//!   the versioned [`Evidence`] encoding; [`tpm`] implements them for TPM 2.0 (quotes,
//!   EK certificate chains, credential activation of the attestation key); [`tdx`]
//!   for Intel TDX (configfs-tsm quotes, verified offline with `dcap-qvl` against the
//!   pinned Intel SGX Root CA and collateral carried in the evidence).
//! - [`snp`] implements them for AMD SEV-SNP (configfs-tsm reports; VCEK → ASK → ARK
//!   checked against AMD roots pinned in the crate, pure-Rust `sev` backend).
//! - [`reference`](mod@reference) compares verified PCR values with reference values.
//! - [`azure`] gathers (NV indices and the persistent AK, through tss-esapi) and
//!   verifies an Azure CVM's evidence: the paravisor's HCL report (an SNP report, or a
//!   TD report with the TD quote made of it, binding the vTPM's AK) and that AK's
//!   quote, evidence kinds `azure-sev-snp` and `azure-tdx`.
//! - [`gcp`] verifies a GCE vTPM's evidence: Google's AK certificate (pinned root),
//!   the AK's quote, and the CPU's report over that AK (`gcp-vtpm`).
//! - [`cvm`] attaches a hardware report that binds a confidential VM's vTPM key to its
//!   TPM quotes.
//! - [`profile`] names where nodes run (`qemu`, `azure-sev-snp`, …) and which
//!   evidence kind a verifier then takes.
//! - [`policy`] reads a verifier's per-platform options (SNP, Azure SNP, TDX) and dispatches
//!   evidence of any accepted platform to its verifier.

pub mod azure;
pub mod cvm;
mod encoding;
pub mod evidence;
pub mod gcp;
pub mod pcr;
pub mod peer;
pub mod platform;
pub mod policy;
pub mod profile;
pub mod reference;
mod signature;
pub mod snp;
pub mod tdx;
pub mod tpm;
pub mod tsm;

pub use cvm::{HardwareAttester, HardwareEvidence};
pub use encoding::Digest32;
pub use evidence::{
    Attester, EVIDENCE_VERSION, Evidence, EvidenceError, EvidencePlatform, Machine,
    SnpVerifiedInfo, TdxVerifiedInfo, TpmVerifiedInfo, Verified, Verifier,
};
pub use pcr::{PcrBank, PcrError, read_sysfs_pcrs};
pub use platform::{Platform, detect};
pub use policy::{PlatformPolicy, PlatformVerifier, PlatformVerifyError, PolicyError};
pub use profile::Profile;
pub use reference::{PcrCheck, PcrOutcome, PcrPolicyError, check_pcrs, compare_pcrs};
pub use snp::{SnpAttester, SnpEvidence, SnpPolicy, SnpProduct, SnpVerifier, SnpVerifyError};
pub use tdx::{TdxAttester, TdxEvidence, TdxPolicy, TdxVerifier, TdxVerifyError};

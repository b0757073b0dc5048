//! AMD SEV-SNP evidence: an `ATTESTATION_REPORT` signed by the chip's VCEK, whose
//! certificate chains VCEK → ASK → ARK to AMD roots *pinned in this crate*.
//!
//! - [`SnpAttester`] asks the guest kernel for a report through configfs-tsm
//!   (`/sys/kernel/config/tsm/report`, Linux ≥ 6.7). The `/dev/sev-guest` ioctl path is
//!   not implemented: every kernel Veil ships has configfs-tsm.
//! - [`SnpVerifier`] checks, in this order: the report parses (length, version,
//!   signature algorithm); the VCEK chains to the pinned ASK and ARK of the configured
//!   [`SnpProduct`]; the VCEK signs the report; the VCEK's `hwID`/TCB extensions match
//!   the report's chip ID and reported TCB; `report_data` binds the caller's 32 bytes;
//!   then the [`SnpPolicy`] (debug, minimum TCB, allowed measurements). Nothing in the
//!   report is trusted before its signature has been checked; [`SnpPolicy::check`] is
//!   also a separate pure function, so it can be tested on reports no AMD key will ever
//!   sign (e.g. one with the debug bit set).
//!
//! # Crypto backend
//!
//! The [`sev`] crate is used with `default-features = false, features = ["snp",
//! "crypto_nossl"]`: report parsing and RSA-PSS certificate-chain checks in pure Rust
//! (`rsa`, `p384`, `x509-cert`), the same RustCrypto stack the TPM verifier already uses,
//! and no OpenSSL. `sev`'s `openssl` and `crypto_nossl` features must never be mixed in
//! one build. The report signature itself is verified here over the *raw* signed bytes
//! (`report[0..0x2a0]`): `sev` re-encodes its parsed struct before hashing, which would
//! drop reserved bytes and make the check depend on its encoder. `p384` parses the key
//! and the scalars (for clear errors), ring checks the signature (faster; see
//! `crate::signature`).
//!
//! # Pinned roots
//!
//! `roots/{milan,genoa,turin}/{ark,ask}.pem` are copies of
//! `src/certs/snp/builtin/<product>/` from the `sev` crate 8.0.0 (virtee/sev,
//! Apache-2.0), which are AMD's published ARK/ASK certificates from the AMD Key
//! Distribution Service (`https://kdsintf.amd.com/vcek/v1/<Product>/cert_chain`).
//! Evidence may carry an ASK/ARK chain, but it is only compared against the pins, never
//! trusted.

pub mod attester;
pub mod report;
pub mod verifier;

use serde::{Deserialize, Serialize};

use crate::encoding::b64;

pub use attester::{SNP_PROVIDER, SnpAttestError, SnpAttester, TSM_REPORT_DIR};
pub use report::{REPORT_LEN, SIGNED_LEN, SnpReport, TcbVersion};
pub use verifier::{SnpPolicy, SnpProduct, SnpVerifiedInfo, SnpVerifier, SnpVerifyError};

/// An SEV-SNP report with the certificate of the key that signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpEvidence {
    /// The 1184-byte `ATTESTATION_REPORT` exactly as the firmware produced it.
    #[serde(with = "b64")]
    pub report: Vec<u8>,
    /// DER VCEK certificate of the chip (from the host's certificate table or AMD KDS),
    /// or the cloud's VLEK where the report says a VLEK signed it.
    #[serde(with = "b64")]
    pub vcek: Vec<u8>,
    /// The ASK/ARK chain, if the attester had it. The verifier uses its pinned roots and
    /// only checks that these are the same certificates.
    #[serde(default)]
    pub cert_chain: Option<SnpCertChain>,
}

/// AMD's signing key (ASK) and root key (ARK) certificates, DER.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpCertChain {
    #[serde(with = "b64")]
    pub ask: Vec<u8>,
    #[serde(with = "b64")]
    pub ark: Vec<u8>,
}

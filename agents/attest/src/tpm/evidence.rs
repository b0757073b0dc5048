//! The TPM evidence record and the identity (EK + AK) an attester presents for
//! credential activation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cvm::HardwareEvidence;
use crate::encoding::{Digest32, b64, b64_opt};

/// A TPM quote with everything needed to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmEvidence {
    /// Marshalled TPMS_ATTEST, exactly the bytes the AK signed.
    #[serde(with = "b64")]
    pub quote: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE over `quote`.
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
    /// SHA-256 bank values of the PCRs the quote selects; the quote only carries their
    /// digest.
    pub pcrs: BTreeMap<u32, Digest32>,
    /// Marshalled TPM2B_PUBLIC of the attestation key.
    #[serde(with = "b64")]
    pub ak_public: Vec<u8>,
    /// Marshalled TPM2B_PUBLIC of the endorsement key.
    #[serde(with = "b64")]
    pub ek_public: Vec<u8>,
    /// DER EK certificate from the TPM's NV (index 0x01c00002 for RSA-2048).
    #[serde(with = "b64")]
    pub ek_cert: Vec<u8>,
    /// TCG event log (`binary_bios_measurements`), if the node has one.
    #[serde(with = "b64_opt", default)]
    pub event_log: Option<Vec<u8>>,
    /// systemd's `tpm2-measure.log` (JSON-SEQ), if the node has one.
    #[serde(with = "b64_opt", default)]
    pub systemd_log: Option<Vec<u8>>,
    /// In a confidential VM: the hardware report binding this AK and the user data
    /// ([`crate::cvm`]). Checked by [`crate::PlatformVerifier`], not by the TPM verifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<HardwareEvidence>,
}

impl TpmEvidence {
    /// The EK/AK identity in this evidence, for a verifier that has not yet activated
    /// this AK.
    pub fn identity(&self) -> AkIdentity {
        AkIdentity {
            ek_public: self.ek_public.clone(),
            ek_cert: self.ek_cert.clone(),
            ak_public: self.ak_public.clone(),
        }
    }
}

/// What an attester presents so the verifier can challenge its AK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AkIdentity {
    /// Marshalled TPM2B_PUBLIC of the EK.
    #[serde(with = "b64")]
    pub ek_public: Vec<u8>,
    /// DER EK certificate.
    #[serde(with = "b64")]
    pub ek_cert: Vec<u8>,
    /// Marshalled TPM2B_PUBLIC of the AK.
    #[serde(with = "b64")]
    pub ak_public: Vec<u8>,
}

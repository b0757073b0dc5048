//! The node side on a GCP confidential VM: Google's AK, recreated from the template
//! in the vTPM's NV, its certificate, a quote, and the CPU's report over both.
//!
//! GCE provisions the AK as a primary key in the endorsement hierarchy: its template
//! is at NV `0x01c10003` and its certificate at `0x01c10002`, so the same key comes
//! back on every boot. The CPU's report (configfs-tsm, as on QEMU) binds
//! `ak_binding(user data, AK certificate)`, which the `gcp-*` profiles require.

use tss_esapi::Context;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::Public;
use tss_esapi::traits::{Marshall, UnMarshall};

use super::{GCP_ECC_AK_CERT_NV_INDEX, GCP_ECC_AK_TEMPLATE_NV_INDEX, GcpVtpmEvidence};
use crate::cvm::HardwareAttester;
use crate::encoding::Digest32;
use crate::evidence::{Attester, Evidence};
use crate::tpm::attester::{
    TpmAttestError, nv_index_defined, open_context, quote_pcrs, read_nv, sha256_selection, tpm,
};

/// Whether the TPM at `tcti` holds a GCE AK certificate (NV `0x01c10002`). Only picks
/// the attester: a verifier decides by the evidence.
pub fn ak_cert_present(tcti: &str) -> Result<bool, TpmAttestError> {
    nv_index_defined(tcti, GCP_ECC_AK_CERT_NV_INDEX)
}

/// A GCE vTPM with Google's AK loaded.
pub struct GcpAttester {
    ctx: Context,
    ak: KeyHandle,
    ak_cert: Vec<u8>,
    intermediates: Vec<Vec<u8>>,
    pcrs: Vec<u32>,
    hardware: Option<HardwareAttester>,
}

impl std::fmt::Debug for GcpAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpAttester")
            .field("pcrs", &self.pcrs)
            .field("hardware", &self.hardware)
            .finish_non_exhaustive()
    }
}

impl GcpAttester {
    /// Opens the vTPM at `tcti`, recreates the AK from its NV template and reads its
    /// certificate; `intermediates` (DER) travel with the evidence, `hardware` makes
    /// the CPU's report over the certificate.
    pub fn open(
        tcti: &str,
        pcrs: Vec<u32>,
        intermediates: Vec<Vec<u8>>,
        hardware: Option<HardwareAttester>,
    ) -> Result<Self, TpmAttestError> {
        let mut ctx = open_context(tcti)?;
        sha256_selection(&pcrs)?;
        let ak_cert = read_nv(
            &mut ctx,
            GCP_ECC_AK_CERT_NV_INDEX,
            "read the AK certificate from NV 0x01c10002",
        )?;
        let template = read_nv(
            &mut ctx,
            GCP_ECC_AK_TEMPLATE_NV_INDEX,
            "read the AK template from NV 0x01c10003",
        )?;
        let public = Public::unmarshall(&template).map_err(tpm("unmarshal the AK template"))?;
        let ak = ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.create_primary(Hierarchy::Endorsement, public, None, None, None, None)
            })
            .map_err(tpm("create the AK from its template"))?
            .key_handle;
        Ok(GcpAttester {
            ctx,
            ak,
            ak_cert,
            intermediates,
            pcrs,
            hardware,
        })
    }

    /// The AK certificate read from NV.
    pub fn ak_cert(&self) -> &[u8] {
        &self.ak_cert
    }

    /// The intermediates (DER) to send with the evidence, once they are known (they are
    /// found from the AK certificate, so after [`GcpAttester::open`]).
    pub fn with_intermediates(mut self, intermediates: Vec<Vec<u8>>) -> Self {
        self.intermediates = intermediates;
        self
    }

    /// The evidence for `user_data`.
    pub fn gather(&mut self, user_data: &[u8; 32]) -> Result<GcpVtpmEvidence, TpmAttestError> {
        let quoted = quote_pcrs(&mut self.ctx, self.ak, &self.pcrs, user_data)?;
        let signature = quoted
            .signature
            .marshall()
            .map_err(tpm("marshal TPMT_SIGNATURE"))?;
        let hardware = match &mut self.hardware {
            Some(h) => Some(h.report(user_data, &self.ak_cert)?),
            None => None,
        };
        Ok(GcpVtpmEvidence {
            ak_cert: self.ak_cert.clone(),
            intermediates: self.intermediates.clone(),
            quote: quoted.attest,
            signature,
            pcrs: quoted
                .pcrs
                .into_iter()
                .map(|(i, v)| (i, Digest32(v)))
                .collect(),
            hardware,
        })
    }
}

impl Attester for GcpAttester {
    type Error = TpmAttestError;

    fn evidence(&mut self, user_data: &[u8; 32]) -> Result<Evidence, TpmAttestError> {
        self.gather(user_data).map(Evidence::GcpVtpm)
    }
}

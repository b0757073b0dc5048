//! The node side on an Azure SEV-SNP CVM: the paravisor's HCL report and the vTPM's
//! quote, both through tss-esapi.
//!
//! For each piece of evidence the attester writes the caller's user data to NV
//! `0x01400002` (so the paravisor issues a fresh report carrying it), reads the HCL
//! report from NV `0x01400001`, and quotes the SHA-256 PCRs with the vTPM's persistent
//! AK (`0x81000003`, the key the report's runtime data names) over the same user data.
//! The VCEK comes from the caller (Azure's instance metadata service serves it): the
//! verifier checks it against AMD's roots, so where it came from does not matter.

use std::io::Write as _;

use tss_esapi::Context;
use tss_esapi::abstraction::nv;
use tss_esapi::attributes::NvIndexAttributes;
use tss_esapi::handles::{KeyHandle, NvIndexTpmHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::NvAuth;
use tss_esapi::structures::{NvPublic, Signature};

use super::{
    AzureSnpEvidence, AzureTdxEvidence, HCL_AK_HANDLE, HCL_REPORT_NV_INDEX, HCL_USER_DATA_LEN,
    HCL_USER_DATA_NV_INDEX, HclReport,
};
use crate::encoding::Digest32;
use crate::evidence::{Attester, Evidence};
use crate::snp::SnpCertChain;
use crate::tpm::attester::{
    QuotedPcrs, TpmAttestError, nv_index_defined, open_context, quote_pcrs, read_nv,
    sha256_selection, tpm,
};

/// An Azure CVM's vTPM, with its persistent AK.
pub struct AzureSnpAttester {
    ctx: Context,
    ak: KeyHandle,
    pcrs: Vec<u32>,
    vcek: Vec<u8>,
    cert_chain: Option<SnpCertChain>,
}

impl std::fmt::Debug for AzureSnpAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureSnpAttester")
            .field("pcrs", &self.pcrs)
            .finish_non_exhaustive()
    }
}

/// Whether the TPM at `tcti` is an Azure CVM's vTPM: its paravisor keeps an HCL
/// report at NV `0x01400001`. Only picks the attester; a verifier decides by the
/// evidence, whatever a host put in a TPM's NV.
pub fn hcl_report_present(tcti: &str) -> Result<bool, TpmAttestError> {
    nv_index_defined(tcti, HCL_REPORT_NV_INDEX)
}

impl AzureSnpAttester {
    /// Opens the vTPM at `tcti` and its AK at `0x81000003`; `vcek` is the chip's VCEK
    /// (DER) with, if known, AMD's chain.
    pub fn open(
        tcti: &str,
        pcrs: Vec<u32>,
        vcek: Vec<u8>,
        cert_chain: Option<SnpCertChain>,
    ) -> Result<Self, TpmAttestError> {
        let mut ctx = open_context(tcti)?;
        sha256_selection(&pcrs)?;
        let handle = PersistentTpmHandle::new(HCL_AK_HANDLE).map_err(tpm("AK handle"))?;
        let ak = ctx
            .execute_without_session(|ctx| ctx.tr_from_tpm_public(TpmHandle::Persistent(handle)))
            .map_err(tpm("open the vTPM's AK at 0x81000003"))?
            .into();
        Ok(AzureSnpAttester {
            ctx,
            ak,
            pcrs,
            vcek,
            cert_chain,
        })
    }

    /// Writes `user_data` (then zeros) to NV `0x01400002`, defining the index first if
    /// this boot has not.
    fn write_user_data(&mut self, user_data: &[u8; 32]) -> Result<(), TpmAttestError> {
        let mut padded = [0u8; HCL_USER_DATA_LEN];
        padded[..32].copy_from_slice(user_data);
        let index = NvIndexTpmHandle::new(HCL_USER_DATA_NV_INDEX).map_err(tpm("NV index"))?;
        let defined = nv::list(&mut self.ctx)
            .map_err(tpm("list NV indices"))?
            .iter()
            .any(|(p, _)| p.nv_index() == index);
        let options = if defined {
            nv::NvOpenOptions::ExistingIndex {
                nv_index_handle: index,
                auth_handle: NvAuth::Owner,
            }
        } else {
            let attributes = NvIndexAttributes::builder()
                .with_owner_write(true)
                .with_owner_read(true)
                .build()
                .map_err(tpm("NV attributes"))?;
            nv::NvOpenOptions::NewIndex {
                nv_public: NvPublic::builder()
                    .with_nv_index(index)
                    .with_index_name_algorithm(HashingAlgorithm::Sha256)
                    .with_index_attributes(attributes)
                    .with_data_area_size(HCL_USER_DATA_LEN)
                    .build()
                    .map_err(tpm("NV public area"))?,
                auth_handle: NvAuth::Owner,
            }
        };
        self.ctx
            .execute_with_nullauth_session(|ctx| {
                let mut rw = options.open(ctx)?;
                rw.write_all(&padded).map_err(|e| {
                    tss_esapi::Error::WrapperError(match e.kind() {
                        std::io::ErrorKind::InvalidInput => {
                            tss_esapi::WrapperErrorKind::InvalidParam
                        }
                        _ => tss_esapi::WrapperErrorKind::InternalError,
                    })
                })
            })
            .map_err(tpm("write the user data to NV 0x01400002"))
    }

    /// The HCL report as NV `0x01400001` holds it now.
    pub fn read_hcl_report(&mut self) -> Result<Vec<u8>, TpmAttestError> {
        let bytes = read_nv(
            &mut self.ctx,
            HCL_REPORT_NV_INDEX,
            "read the HCL report from NV 0x01400001",
        )?;
        HclReport::parse(&bytes).map_err(|e| TpmAttestError::Unexpected {
            what: "HCL report",
            reason: e.to_string(),
        })?;
        Ok(bytes)
    }

    /// The evidence for `user_data`.
    pub fn gather(&mut self, user_data: &[u8; 32]) -> Result<AzureSnpEvidence, TpmAttestError> {
        self.write_user_data(user_data)?;
        let hcl_report = self.read_hcl_report()?;
        let (quoted, signature) = rsa_quote(&mut self.ctx, self.ak, &self.pcrs, user_data)?;
        Ok(AzureSnpEvidence {
            hcl_report,
            vcek: self.vcek.clone(),
            cert_chain: self.cert_chain.clone(),
            quote: quoted.attest,
            signature,
            pcrs: quoted
                .pcrs
                .into_iter()
                .map(|(i, v)| (i, Digest32(v)))
                .collect(),
        })
    }
}

/// A quote by the AK at `0x81000003` (an RSASSA key), with its bare signature.
fn rsa_quote(
    ctx: &mut Context,
    ak: KeyHandle,
    pcrs: &[u32],
    user_data: &[u8; 32],
) -> Result<(QuotedPcrs, Vec<u8>), TpmAttestError> {
    let quoted = quote_pcrs(ctx, ak, pcrs, user_data)?;
    let Signature::RsaSsa(rsa) = &quoted.signature else {
        return Err(TpmAttestError::Unexpected {
            what: "quote signature",
            reason: "the AK at 0x81000003 is not an RSASSA key".into(),
        });
    };
    let signature = rsa.signature().value().to_vec();
    Ok((quoted, signature))
}

/// The HCL report NV `0x01400001` holds now, at `tcti`.
pub fn read_hcl_report(tcti: &str) -> Result<Vec<u8>, TpmAttestError> {
    let mut ctx = open_context(tcti)?;
    let bytes = read_nv(
        &mut ctx,
        HCL_REPORT_NV_INDEX,
        "read the HCL report from NV 0x01400001",
    )?;
    HclReport::parse(&bytes).map_err(|e| TpmAttestError::Unexpected {
        what: "HCL report",
        reason: e.to_string(),
    })?;
    Ok(bytes)
}

/// An Azure TDX CVM's vTPM: the boot's HCL report with the TD quote the metadata
/// service made of it, and per piece of evidence a quote by the AK over the user data.
/// (A fresh TD quote per session would need the metadata service inside the TLS
/// handshake; the AK lives in the paravisor inside the TD, so its quote is what makes
/// the evidence fresh.)
pub struct AzureTdxAttester {
    ctx: Context,
    ak: KeyHandle,
    pcrs: Vec<u32>,
    hcl_report: Vec<u8>,
    td_quote: Vec<u8>,
}

impl std::fmt::Debug for AzureTdxAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureTdxAttester")
            .field("pcrs", &self.pcrs)
            .finish_non_exhaustive()
    }
}

impl AzureTdxAttester {
    /// Opens the vTPM at `tcti` and its AK at `0x81000003`, with the HCL report read
    /// at boot and the TD quote of its TD report.
    pub fn open(
        tcti: &str,
        pcrs: Vec<u32>,
        hcl_report: Vec<u8>,
        td_quote: Vec<u8>,
    ) -> Result<Self, TpmAttestError> {
        let AzureSnpAttester { ctx, ak, pcrs, .. } =
            AzureSnpAttester::open(tcti, pcrs, Vec::new(), None)?;
        Ok(AzureTdxAttester {
            ctx,
            ak,
            pcrs,
            hcl_report,
            td_quote,
        })
    }

    /// The evidence for `user_data`.
    pub fn gather(&mut self, user_data: &[u8; 32]) -> Result<AzureTdxEvidence, TpmAttestError> {
        let (quoted, signature) = rsa_quote(&mut self.ctx, self.ak, &self.pcrs, user_data)?;
        Ok(AzureTdxEvidence {
            hcl_report: self.hcl_report.clone(),
            td_quote: self.td_quote.clone(),
            quote: quoted.attest,
            signature,
            pcrs: quoted
                .pcrs
                .into_iter()
                .map(|(i, v)| (i, Digest32(v)))
                .collect(),
        })
    }
}

impl Attester for AzureTdxAttester {
    type Error = TpmAttestError;

    fn evidence(&mut self, user_data: &[u8; 32]) -> Result<Evidence, TpmAttestError> {
        self.gather(user_data).map(Evidence::AzureTdx)
    }
}

impl Attester for AzureSnpAttester {
    type Error = TpmAttestError;

    fn evidence(&mut self, user_data: &[u8; 32]) -> Result<Evidence, TpmAttestError> {
        self.gather(user_data).map(Evidence::AzureSevSnp)
    }
}

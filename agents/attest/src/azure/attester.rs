//! The node side on an Azure SEV-SNP CVM: the paravisor's HCL report and the vTPM's
//! quote, both through tss-esapi.
//!
//! For each piece of evidence the attester writes the caller's user data to NV
//! `0x01400002` (so the paravisor issues a fresh report carrying it), reads the HCL
//! report from NV `0x01400001`, and quotes the SHA-256 PCRs with the vTPM's persistent
//! AK (`0x81000003`, the key the report's runtime data names) over the same user data.
//! The VCEK comes from the caller (Azure's instance metadata service serves it): the
//! verifier checks it against AMD's roots, so where it came from does not matter.

use std::collections::BTreeMap;
use std::convert::TryFrom;
use std::io::Write as _;

use tss_esapi::Context;
use tss_esapi::abstraction::nv;
use tss_esapi::attributes::NvIndexAttributes;
use tss_esapi::handles::{KeyHandle, NvIndexTpmHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::NvAuth;
use tss_esapi::structures::{Data, NvPublic, Signature, SignatureScheme};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;

use super::{
    AzureSnpEvidence, HCL_AK_HANDLE, HCL_REPORT_NV_INDEX, HCL_USER_DATA_LEN,
    HCL_USER_DATA_NV_INDEX, HclReport,
};
use crate::encoding::Digest32;
use crate::evidence::{Attester, Evidence};
use crate::snp::SnpCertChain;
use crate::tpm::attester::{QUOTE_ATTEMPTS, TpmAttestError, read_sha256_pcrs, sha256_selection};
use crate::tpm::quote::{Quote, pcr_digest};

fn tpm(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmAttestError {
    move |source| TpmAttestError::Tpm { op, source }
}

/// TPMS_ATTEST, the bare RSA signature, and the PCR values it covers.
struct VtpmQuote {
    attest: Vec<u8>,
    signature: Vec<u8>,
    pcrs: BTreeMap<u32, [u8; 32]>,
}

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
    let open_err = |source| TpmAttestError::Open {
        tcti: tcti.to_owned(),
        source,
    };
    let conf: TctiNameConf = tcti.parse().map_err(open_err)?;
    let mut ctx = Context::new(conf).map_err(open_err)?;
    let index = NvIndexTpmHandle::new(HCL_REPORT_NV_INDEX).map_err(tpm("NV index"))?;
    Ok(nv::list(&mut ctx)
        .map_err(tpm("list NV indices"))?
        .iter()
        .any(|(p, _)| p.nv_index() == index))
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
        let open_err = |source| TpmAttestError::Open {
            tcti: tcti.to_owned(),
            source,
        };
        let conf: TctiNameConf = tcti.parse().map_err(open_err)?;
        let mut ctx = Context::new(conf).map_err(open_err)?;
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
        let index = NvIndexTpmHandle::new(HCL_REPORT_NV_INDEX).map_err(tpm("NV index"))?;
        let bytes = self
            .ctx
            .execute_with_nullauth_session(|ctx| nv::read_full(ctx, NvAuth::Owner, index))
            .map_err(tpm("read the HCL report from NV 0x01400001"))?;
        HclReport::parse(&bytes).map_err(|e| TpmAttestError::Unexpected {
            what: "HCL report",
            reason: e.to_string(),
        })?;
        Ok(bytes)
    }

    /// A quote by the vTPM's AK over `user_data`.
    fn quote(&mut self, user_data: &[u8; 32]) -> Result<VtpmQuote, TpmAttestError> {
        for _ in 0..QUOTE_ATTEMPTS {
            let (ak, selection) = (self.ak, sha256_selection(&self.pcrs)?);
            let (attest, signature) = self
                .ctx
                .execute_with_nullauth_session(|ctx| {
                    ctx.quote(
                        ak,
                        Data::try_from(user_data.to_vec())?,
                        SignatureScheme::Null,
                        selection,
                    )
                })
                .map_err(tpm("Quote with the AK at 0x81000003"))?;
            let quote = attest.marshall().map_err(tpm("marshal TPMS_ATTEST"))?;
            let Signature::RsaSsa(rsa) = signature else {
                return Err(TpmAttestError::Unexpected {
                    what: "quote signature",
                    reason: "the AK at 0x81000003 is not an RSASSA key".into(),
                });
            };
            let parsed = Quote::parse(&quote).map_err(|e| TpmAttestError::Unexpected {
                what: "quote",
                reason: e.to_string(),
            })?;
            let order = parsed
                .sha256_pcrs()
                .map_err(|e| TpmAttestError::Unexpected {
                    what: "quote selection",
                    reason: e.to_string(),
                })?;
            let values = read_sha256_pcrs(&mut self.ctx, &order)?;
            let digest = pcr_digest(order.iter().filter_map(|i| values.get(i)));
            if values.len() == order.len() && digest.as_slice() == parsed.pcr_digest {
                return Ok(VtpmQuote {
                    attest: quote,
                    signature: rsa.signature().value().to_vec(),
                    pcrs: values,
                });
            }
        }
        Err(TpmAttestError::PcrsUnstable {
            attempts: QUOTE_ATTEMPTS,
        })
    }

    /// The evidence for `user_data`.
    pub fn gather(&mut self, user_data: &[u8; 32]) -> Result<AzureSnpEvidence, TpmAttestError> {
        self.write_user_data(user_data)?;
        let hcl_report = self.read_hcl_report()?;
        let VtpmQuote {
            attest,
            signature,
            pcrs,
        } = self.quote(user_data)?;
        Ok(AzureSnpEvidence {
            hcl_report,
            vcek: self.vcek.clone(),
            cert_chain: self.cert_chain.clone(),
            quote: attest,
            signature,
            pcrs: pcrs.into_iter().map(|(i, v)| (i, Digest32(v))).collect(),
        })
    }
}

impl Attester for AzureSnpAttester {
    type Error = TpmAttestError;

    fn evidence(&mut self, user_data: &[u8; 32]) -> Result<Evidence, TpmAttestError> {
        self.gather(user_data).map(Evidence::AzureSevSnp)
    }
}

//! GCP confidential VMs (profiles `gcp-sev-snp` and `gcp-tdx`): Google's vTPM, the
//! certificate Google issues for its attestation key, and the CPU's report over that
//! key.
//!
//! A GCE vTPM keeps an ECC P-256 AK certificate at NV `0x01c10002` (an RSA one at
//! `0x01c10000`), issued by Google's "EK/AK CA Intermediate" under the "EK/AK CA Root"
//! pinned in this crate (`ek-ak-ca-root.pem`, as Google publishes it; the same file as
//! go-tpm-tools' `server/ca-certs/gcp_ek_ak_ca_root.crt`). The AK's quote proves the
//! PCRs and the verifier's nonce.
//!
//! **The trust this adds is Google's.** GCP's vTPM runs outside the TEE, in Google's
//! host software: the certificate says a GCE vTPM holds the key, not that the VM is
//! confidential, and Google could sign any PCRs it liked. What the CPU proves comes
//! from the SEV-SNP report or TDX quote the guest asks for (configfs-tsm), which must
//! bind the AK certificate and the caller's data ([`crate::cvm::ak_binding`] over the
//! certificate's DER); the profiles require it. So a `gcp-*` node is believed to run a
//! confidential VM with the pinned launch measurement because the CPU says so, and to
//! have booted the PCRs it quotes because Google's vTPM says so.
//!
//! The intermediates come with the evidence (they rotate); only the root is pinned.

#[cfg(feature = "tpm-attester")]
pub mod attester;

use std::collections::BTreeMap;
use std::time::SystemTime;

use p256::ecdsa::VerifyingKey as EcdsaKey;
use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;
use x509_cert::der::Encode;

use crate::cvm::HardwareEvidence;
use crate::encoding::{Digest32, b64, b64_list};
use crate::tpm::quote::{QuoteBindingError, check_quote_binding};
use crate::tpm::signature::{EcdsaTpmSignature, verify_ecdsa};
use crate::tpm::{EkCertError, EkTrust};

/// Where a GCE vTPM keeps its ECC AK certificate.
pub const GCP_ECC_AK_CERT_NV_INDEX: u32 = 0x01c1_0002;
/// … and the template the AK is recreated from (a primary key, endorsement hierarchy).
pub const GCP_ECC_AK_TEMPLATE_NV_INDEX: u32 = 0x01c1_0003;

/// Google's "EK/AK CA Root" (RSA-4096, valid 2022-07-08 to 2122-07-08, SHA-256
/// fingerprint 59:47:59:59:4B:9B:61:52:…:BE:78:BE:B2).
const GOOGLE_EK_AK_CA_ROOT: &[u8] = include_bytes!("ek-ak-ca-root.pem");

#[derive(Debug, Error)]
pub enum GcpError {
    #[error("the AK certificate does not chain to Google's pinned EK/AK CA root: {0}")]
    AkCert(String),
    #[error("the AK certificate's key cannot sign quotes: {0}")]
    AkKey(String),
    #[error("the vTPM quote is not signed by the certified AK: {0}")]
    QuoteSignature(String),
    #[error(transparent)]
    Quote(#[from] QuoteBindingError),
}

/// A GCE vTPM's evidence (kind `"gcp-vtpm"`): the AK certificate and its
/// intermediates, a quote over the verifier's nonce, and the CPU's report over both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcpVtpmEvidence {
    /// The AK certificate, DER, as NV `0x01c10002` holds it.
    #[serde(with = "b64")]
    pub ak_cert: Vec<u8>,
    /// Intermediate CA certificates, DER.
    #[serde(with = "b64_list", default)]
    pub intermediates: Vec<Vec<u8>>,
    /// TPMS_ATTEST of a TPM2_Quote.
    #[serde(with = "b64")]
    pub quote: Vec<u8>,
    /// Its TPMT_SIGNATURE (ECDSA or RSASSA, SHA-256).
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
    /// SHA-256 PCR values by index, as quoted.
    pub pcrs: BTreeMap<u32, Digest32>,
    /// The SEV-SNP report or TDX quote over `ak_binding(user data, ak_cert)`.
    #[serde(default)]
    pub hardware: Option<HardwareEvidence>,
}

/// What the vTPM part proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpVerifiedInfo {
    /// The AK certificate's subject (GCE puts the zone, and the instance ID as CN).
    pub ak_subject: String,
    pub ak_issuer: String,
    /// SHA-256 of the certified AK's SubjectPublicKeyInfo (DER): GCE recreates that
    /// key from the same template every boot, so it names the vTPM across reboots.
    pub ak_spki_sha256: [u8; 32],
}

/// Checks GCE vTPM evidence against Google's pinned root.
#[derive(Debug, Clone)]
pub struct GcpVerifier {
    trust: EkTrust,
    now: Option<SystemTime>,
}

impl GcpVerifier {
    /// Trusting Google's EK/AK CA root only.
    pub fn pinned() -> Result<Self, GcpError> {
        let trust = EkTrust::from_pem(GOOGLE_EK_AK_CA_ROOT)
            .map_err(|e| GcpError::AkCert(format!("the pinned root: {e}")))?;
        Ok(GcpVerifier { trust, now: None })
    }

    /// Trusting the root in `root_pem` instead of Google's: for a test CA that plays
    /// Google's part (a node's real evidence never chains to it).
    pub fn trusting(root_pem: &[u8]) -> Result<Self, GcpError> {
        let trust = EkTrust::from_pem(root_pem)
            .map_err(|e| GcpError::AkCert(format!("the given root: {e}")))?;
        Ok(GcpVerifier { trust, now: None })
    }

    /// Checks certificate validity at `now` instead of the clock (recorded evidence).
    pub fn at(mut self, now: SystemTime) -> Self {
        self.now = Some(now);
        self
    }

    /// The AK certificate's chain, then the quote: its signature by the certified key,
    /// the nonce, and the PCR values against the quoted digest. The hardware report is
    /// the caller's to check (it needs the platform policy).
    pub fn verify(
        &self,
        ev: &GcpVtpmEvidence,
        nonce: &[u8],
    ) -> Result<(BTreeMap<u32, [u8; 32]>, GcpVerifiedInfo), GcpError> {
        let mut trust = self.trust.clone();
        for der in &ev.intermediates {
            trust
                .add_intermediate_der(der)
                .map_err(|e| GcpError::AkCert(format!("an intermediate: {}", reason(e))))?;
        }
        let cert = trust
            .verify_certificate(
                &ev.ak_cert,
                "AK certificate",
                self.now.unwrap_or_else(SystemTime::now),
            )
            .map_err(|e| GcpError::AkCert(reason(e)))?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| GcpError::AkKey(e.to_string()))?;
        verify_signature(&spki, &ev.quote, &ev.signature)?;

        let pcrs: BTreeMap<u32, [u8; 32]> = ev.pcrs.iter().map(|(i, v)| (*i, v.0)).collect();
        check_quote_binding(&ev.quote, nonce, &pcrs)?;
        Ok((
            pcrs,
            GcpVerifiedInfo {
                ak_subject: cert.tbs_certificate.subject.to_string(),
                ak_issuer: cert.tbs_certificate.issuer.to_string(),
                ak_spki_sha256: <Sha256 as sha2::Digest>::digest(&spki).into(),
            },
        ))
    }
}

/// Where the issuer of the AK certificate `der` can be fetched (its Authority
/// Information Access caIssuers URI, plain HTTP on Google's storage). What is fetched
/// must still chain to the pinned root, so the address is only a hint.
pub fn issuer_url(der: &[u8]) -> Result<Option<String>, GcpError> {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::AuthorityInfoAccessSyntax;
    use x509_cert::ext::pkix::name::GeneralName;
    const AIA: &str = "1.3.6.1.5.5.7.1.1";
    const CA_ISSUERS: &str = "1.3.6.1.5.5.7.48.2";
    let cert = x509_cert::Certificate::from_der(der)
        .map_err(|e| GcpError::AkCert(format!("the AK certificate does not parse: {e}")))?;
    let Some(ext) = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id.to_string() == AIA)
    else {
        return Ok(None);
    };
    let aia = AuthorityInfoAccessSyntax::from_der(ext.extn_value.as_bytes())
        .map_err(|e| GcpError::AkCert(format!("its Authority Information Access: {e}")))?;
    Ok(aia.0.iter().find_map(|ad| match &ad.access_location {
        GeneralName::UniformResourceIdentifier(uri)
            if ad.access_method.to_string() == CA_ISSUERS =>
        {
            Some(uri.to_string())
        }
        _ => None,
    }))
}

fn reason(e: EkCertError) -> String {
    match e {
        EkCertError::NotTrusted { reason } | EkCertError::BadCaFile { reason } => reason,
    }
}

/// TPMT_SIGNATURE over `message` by the key in `spki`: ECDSA P-256 or RSASSA, SHA-256.
fn verify_signature(spki: &[u8], message: &[u8], signature: &[u8]) -> Result<(), GcpError> {
    let bad = |s: String| GcpError::QuoteSignature(s);
    if let Ok(key) = EcdsaKey::from_public_key_der(spki) {
        let sig = EcdsaTpmSignature::parse(signature).map_err(|e| bad(e.to_string()))?;
        return verify_ecdsa(&key, &sig, message).map_err(|e| bad(e.to_string()));
    }
    let key = RsaPublicKey::from_public_key_der(spki)
        .map_err(|e| GcpError::AkKey(format!("neither ECDSA P-256 nor RSA: {e}")))?;
    // TPMT_SIGNATURE for RSASSA: sigAlg 0x0014, hash 0x000b (SHA-256), TPM2B signature.
    let (head, sig) = signature
        .split_at_checked(6)
        .ok_or_else(|| bad(format!("{} bytes", signature.len())))?;
    if head[..4] != [0x00, 0x14, 0x00, 0x0b] {
        return Err(bad(format!(
            "sigAlg/hash {} is not RSASSA with SHA-256",
            hex::encode(&head[..4])
        )));
    }
    let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
    if sig.len() != len {
        return Err(bad(format!("{} signature bytes, not {len}", sig.len())));
    }
    crate::signature::rsa_pkcs1(&key, crate::signature::RsaHash::Sha256, message, sig)
        .map_err(|e| bad(e.to_string()))
}

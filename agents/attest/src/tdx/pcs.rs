//! Intel's collateral for a TD quote, put together from the answers of Intel's
//! Provisioning Certification Service (PCS, API v4) or of a cache that speaks the same
//! API: the TCB info for the quote's platform (FMSPC), the TD QE's identity, the CRL of
//! the PCK CA that issued the quote's PCK certificate, and the root CA's CRL.
//!
//! This module builds the requests and assembles the answers; fetching them is the
//! caller's (`veil-cloud`), so the verifier crate holds no network code. Nothing here
//! is believed: the verifier checks every signature and CRL against the pinned Intel
//! root. Whoever answers can withhold collateral, or serve older collateral Intel
//! signed that is still inside its dates, and no more.
//!
//! dcap-qvl has a collateral client, but it needs that crate's `report` feature
//! (reqwest and a DNS resolver of its own) and rebuilds the TCB info from parsed JSON;
//! Intel's signature covers the text exactly as served, so it is kept here as received.

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::Quote;
use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;
use x509_cert::der::{Decode as _, Encode as _};

use super::dcap::certified_auth_data;
use super::dcap::pki::pem_chain;
use super::error::TdxVerifyError;

/// Intel's PCS. Its TLS certificate is checked by the caller against the system's roots;
/// what it serves is checked against the pinned root CA whoever serves it.
pub const INTEL_PCS_URL: &str = "https://api.trustedservices.intel.com";
/// The Intel SGX root CA's CRL (the PCS API has no endpoint for it; the root
/// certificate names this distribution point).
pub const INTEL_ROOT_CA_CRL_URL: &str =
    "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";

/// The answer headers that carry the signing certificates' chains (URL-encoded PEM).
pub const TCB_INFO_ISSUER_CHAIN: &str = "TCB-Info-Issuer-Chain";
pub const QE_IDENTITY_ISSUER_CHAIN: &str = "SGX-Enclave-Identity-Issuer-Chain";
pub const PCK_CRL_ISSUER_CHAIN: &str = "SGX-PCK-CRL-Issuer-Chain";

#[derive(Debug, Error)]
pub enum PcsError {
    #[error("the TD quote names no collateral to fetch: {0}")]
    Quote(#[source] TdxVerifyError),
    #[error("the quote's PCK certificate: {0}")]
    Pck(String),
    #[error("the {what} answer is not what the PCS API returns: {reason}")]
    Answer { what: &'static str, reason: String },
    #[error("the {what} answer's {header} header: {reason}")]
    IssuerChain {
        what: &'static str,
        header: &'static str,
        reason: String,
    },
    #[error("the {what} answer is for {got}, not the {want} asked for")]
    WrongSubject {
        what: &'static str,
        got: String,
        want: String,
    },
}

/// Which PCK CA issued a platform's PCK certificate; its CRL is the one to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PckCa {
    Platform,
    Processor,
}

impl PckCa {
    fn query(self) -> &'static str {
        match self {
            PckCa::Platform => "platform",
            PckCa::Processor => "processor",
        }
    }
}

/// What to ask for, read from a quote's PCK certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CollateralRequest {
    pub fmspc: [u8; 6],
    pub ca: PckCa,
}

impl CollateralRequest {
    /// The platform (FMSPC) and PCK CA of the PCK certificate `quote` carries. The
    /// certificate is not verified here (the verifier does that, with the collateral):
    /// a forged one only makes the wrong collateral be fetched.
    pub fn for_quote(quote: &[u8]) -> Result<Self, PcsError> {
        let parsed = Quote::parse(quote).map_err(|e| {
            PcsError::Quote(TdxVerifyError::Malformed {
                what: "quote",
                reason: format!("{e:#}"),
            })
        })?;
        let auth = certified_auth_data(&parsed).map_err(PcsError::Quote)?;
        let chain = pem_chain(&auth.qe_report_data.certification_data.body.data)
            .map_err(|e| PcsError::Pck(format!("the PEM chain does not parse: {e}")))?;
        let leaf = chain
            .first()
            .ok_or_else(|| PcsError::Pck("the chain holds no certificate".into()))?;
        let der = leaf
            .to_der()
            .map_err(|e| PcsError::Pck(format!("re-encoding: {e}")))?;
        let extension = dcap_qvl::intel::parse_pck_extension(&der)
            .map_err(|e| PcsError::Pck(format!("its SGX extension: {e:#}")))?;
        let issuer = leaf.tbs_certificate.issuer.to_string();
        let ca = if issuer.contains("CN=Intel SGX PCK Platform CA") {
            PckCa::Platform
        } else if issuer.contains("CN=Intel SGX PCK Processor CA") {
            PckCa::Processor
        } else {
            return Err(PcsError::Pck(format!(
                "issued by {issuer}, neither of Intel's PCK CAs"
            )));
        };
        Ok(Self {
            fmspc: extension.fmspc,
            ca,
        })
    }

    /// The FMSPC as the PCS API writes it (upper-case hex).
    pub fn fmspc_hex(&self) -> String {
        hex::encode_upper(self.fmspc)
    }

    /// `base` is the service's origin, e.g. [`INTEL_PCS_URL`].
    pub fn tcb_info_url(&self, base: &str) -> String {
        format!(
            "{}/tdx/certification/v4/tcb?fmspc={}",
            base.trim_end_matches('/'),
            self.fmspc_hex()
        )
    }

    pub fn qe_identity_url(&self, base: &str) -> String {
        format!(
            "{}/tdx/certification/v4/qe/identity",
            base.trim_end_matches('/')
        )
    }

    pub fn pck_crl_url(&self, base: &str) -> String {
        format!(
            "{}/sgx/certification/v4/pckcrl?ca={}&encoding=der",
            base.trim_end_matches('/'),
            self.ca.query()
        )
    }
}

/// One answer: its body, and its issuer-chain header as received (URL-encoded PEM).
#[derive(Debug, Clone)]
pub struct PcsAnswer {
    pub body: Vec<u8>,
    pub issuer_chain: Option<String>,
}

/// The four answers collateral is made of.
#[derive(Debug, Clone)]
pub struct PcsAnswers {
    pub tcb_info: PcsAnswer,
    pub qe_identity: PcsAnswer,
    pub pck_crl: PcsAnswer,
    /// DER, or hex of it (what a PCCS's `rootcacrl` returns).
    pub root_ca_crl: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedTcbInfo<'a> {
    #[serde(borrow)]
    tcb_info: &'a RawValue,
    signature: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedQeIdentity<'a> {
    #[serde(borrow)]
    enclave_identity: &'a RawValue,
    signature: String,
}

/// The fields checked before the verifier sees the collateral, for a clear error.
#[derive(Deserialize)]
struct Subject {
    id: String,
    #[serde(default)]
    fmspc: Option<String>,
}

/// Puts `answers` together into the collateral (`QuoteCollateralV3` JSON) a
/// [`super::TdxVerifier`] takes, after checking they are what was asked for.
pub fn assemble(request: &CollateralRequest, answers: &PcsAnswers) -> Result<String, PcsError> {
    let text = |what: &'static str, body: &[u8]| {
        std::str::from_utf8(body)
            .map(str::to_owned)
            .map_err(|e| PcsError::Answer {
                what,
                reason: format!("not UTF-8: {e}"),
            })
    };
    let json_err = |what: &'static str| {
        move |e: serde_json::Error| PcsError::Answer {
            what,
            reason: e.to_string(),
        }
    };

    let tcb_text = text("TCB info", &answers.tcb_info.body)?;
    let tcb: SignedTcbInfo<'_> = serde_json::from_str(&tcb_text).map_err(json_err("TCB info"))?;
    let tcb_subject: Subject =
        serde_json::from_str(tcb.tcb_info.get()).map_err(json_err("TCB info"))?;
    let want = request.fmspc_hex();
    let got = tcb_subject.fmspc.unwrap_or_default();
    if tcb_subject.id != "TDX" || !got.eq_ignore_ascii_case(&want) {
        return Err(PcsError::WrongSubject {
            what: "TCB info",
            got: format!("{} platform {got}", tcb_subject.id),
            want: format!("TDX platform {want}"),
        });
    }

    let qe_text = text("QE identity", &answers.qe_identity.body)?;
    let qe: SignedQeIdentity<'_> =
        serde_json::from_str(&qe_text).map_err(json_err("QE identity"))?;
    let qe_subject: Subject =
        serde_json::from_str(qe.enclave_identity.get()).map_err(json_err("QE identity"))?;
    if qe_subject.id != "TD_QE" {
        return Err(PcsError::WrongSubject {
            what: "QE identity",
            got: qe_subject.id,
            want: "TD_QE".into(),
        });
    }

    Ok(serde_json::to_string(&QuoteCollateralV3 {
        pck_crl_issuer_chain: issuer_chain("PCK CRL", PCK_CRL_ISSUER_CHAIN, &answers.pck_crl)?,
        root_ca_crl: crl("root CA CRL", &answers.root_ca_crl)?,
        pck_crl: crl("PCK CRL", &answers.pck_crl.body)?,
        tcb_info_issuer_chain: issuer_chain("TCB info", TCB_INFO_ISSUER_CHAIN, &answers.tcb_info)?,
        tcb_info: tcb.tcb_info.get().to_owned(),
        tcb_info_signature: signature("TCB info", &tcb.signature)?,
        qe_identity_issuer_chain: issuer_chain(
            "QE identity",
            QE_IDENTITY_ISSUER_CHAIN,
            &answers.qe_identity,
        )?,
        qe_identity: qe.enclave_identity.get().to_owned(),
        qe_identity_signature: signature("QE identity", &qe.signature)?,
        pck_certificate_chain: None,
    })
    .expect("collateral of strings and bytes serializes"))
}

/// The header's PEM chain, decoded; it must hold at least one certificate.
fn issuer_chain(
    what: &'static str,
    header: &'static str,
    answer: &PcsAnswer,
) -> Result<String, PcsError> {
    let err = |reason: String| PcsError::IssuerChain {
        what,
        header,
        reason,
    };
    let raw = answer
        .issuer_chain
        .as_deref()
        .ok_or_else(|| err("missing".into()))?;
    let pem = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|e| err(format!("not URL-encoded UTF-8: {e}")))?
        .into_owned();
    match Certificate::load_pem_chain(pem.as_bytes()) {
        Ok(chain) if !chain.is_empty() => Ok(pem),
        Ok(_) => Err(err("holds no certificate".into())),
        Err(e) => Err(err(format!("not a PEM certificate chain: {e}"))),
    }
}

/// A CRL in DER, taking the hex a PCCS may send instead.
fn crl(what: &'static str, body: &[u8]) -> Result<Vec<u8>, PcsError> {
    if CertificateList::from_der(body).is_ok() {
        return Ok(body.to_vec());
    }
    let from_hex = std::str::from_utf8(body)
        .ok()
        .and_then(|t| hex::decode(t.trim()).ok());
    match from_hex {
        Some(der) if CertificateList::from_der(&der).is_ok() => Ok(der),
        _ => Err(PcsError::Answer {
            what,
            reason: format!(
                "{} bytes that are neither a DER CRL nor hex of one",
                body.len()
            ),
        }),
    }
}

/// Intel's signatures are r and s, 32 bytes each, in hex.
fn signature(what: &'static str, hex_text: &str) -> Result<Vec<u8>, PcsError> {
    match hex::decode(hex_text) {
        Ok(sig) if sig.len() == 64 => Ok(sig),
        Ok(sig) => Err(PcsError::Answer {
            what,
            reason: format!("signature of {} bytes, not 64 (r and s)", sig.len()),
        }),
        Err(e) => Err(PcsError::Answer {
            what,
            reason: format!("signature is not hex: {e}"),
        }),
    }
}

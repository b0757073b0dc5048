//! Azure confidential VMs (issue 13's `azure-sev-snp` profile): the paravisor's HCL
//! report and the vTPM key it vouches for.
//!
//! An Azure CVM guest has no `/dev/sev-guest` and no configfs-tsm. The paravisor,
//! inside the TEE, writes an "HCL report" to vTPM NV index `0x01400001`: a 32-byte
//! header (`HCLA`), the hardware report (an SEV-SNP report, or a TDX TD report), and
//! runtime data, JSON that holds the vTPM's attestation key (`HCLAkPub`, an RSA JWK)
//! and the VM's configuration. The hardware report's `report_data[0..32]` is the
//! SHA-256 of that runtime data. So: a genuine SNP report (VCEK chain to AMD's pinned
//! roots) proves the runtime data, the runtime data names the AK, and the AK's TPM
//! quote proves the PCRs and the caller's nonce. No EK certificate is involved: the
//! hardware-signed AK takes the place of credential activation.
//!
//! Parsed by hand rather than with Microsoft's `az-cvm-vtpm` (MIT): its verifier needs
//! OpenSSL and `sev` 7, where Veil uses `sev` 8's pure-Rust backend and RustCrypto;
//! the layout is a fixed header and three length-checked fields.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier as _;
use rsa::{BigUint, RsaPublicKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::snp::{SnpCertChain, SnpEvidence, SnpVerifiedInfo, SnpVerifier, SnpVerifyError};
use crate::tpm::quote::{PcrValuesError, Quote};

/// `HCLA`, little-endian, at the report's start.
const HCL_SIGNATURE: u32 = u32::from_le_bytes(*b"HCLA");
const HEADER_LEN: usize = 32;
/// The hardware report area: room for an SNP report (1184 bytes) or a TD report.
const HW_REPORT_LEN: usize = 1184;
/// The IGVM request data after the hardware report: five u32, then the runtime data.
const REQUEST_OFFSET: usize = HEADER_LEN + HW_REPORT_LEN;
const RUNTIME_OFFSET: usize = REQUEST_OFFSET + 20;
const REPORT_TYPE_SNP: u32 = 2;
const REPORT_TYPE_TDX: u32 = 4;
const HASH_TYPE_SHA256: u32 = 1;
/// The NV index holds at most a few KiB; runtime data beyond this is not an HCL report.
const MAX_RUNTIME_DATA: usize = 16 * 1024;
const AK_KEY_ID: &str = "HCLAkPub";

#[derive(Debug, Error)]
pub enum AzureError {
    #[error("the HCL report is malformed: {0}")]
    Malformed(String),
    #[error("the HCL report holds a {got} report, not the {want} report this profile needs")]
    WrongKind {
        got: &'static str,
        want: &'static str,
    },
    #[error(
        "the HCL report's SEV-SNP report is refused (its report_data must be the SHA-256 of the HCL report's runtime data): {0}"
    )]
    Snp(#[source] SnpVerifyError),
    #[error("the HCL report's runtime data cannot be read: {0}")]
    RuntimeData(String),
    #[error("the vTPM quote is not signed by the AK that the HCL report names: {0}")]
    QuoteSignature(String),
    #[error("the vTPM quote is malformed: {0}")]
    Quote(String),
    #[error("the vTPM quote was made for nonce {got}, not {expected}: a replay or another session")]
    Nonce { expected: String, got: String },
    #[error(
        "the PCR values do not match the quote's digest (quoted {quoted}, computed {computed})"
    )]
    PcrDigest { quoted: String, computed: String },
}

/// Which hardware report an HCL report carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HclKind {
    Snp,
    Tdx,
}

impl HclKind {
    fn name(self) -> &'static str {
        match self {
            HclKind::Snp => "SEV-SNP",
            HclKind::Tdx => "TDX",
        }
    }
}

/// A parsed HCL report (borrowed from the bytes read from the NV index).
#[derive(Debug)]
pub struct HclReport<'a> {
    kind: HclKind,
    hw_report: &'a [u8],
    runtime_data: &'a [u8],
}

impl<'a> HclReport<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<HclReport<'a>, AzureError> {
        let bad = |s: String| AzureError::Malformed(s);
        if bytes.len() < RUNTIME_OFFSET {
            return Err(bad(format!(
                "{} bytes, shorter than its fixed part ({RUNTIME_OFFSET} bytes)",
                bytes.len()
            )));
        }
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(b)
        };
        if u32_at(0) != HCL_SIGNATURE {
            return Err(bad(format!(
                "it starts with {}, not HCLA",
                hex::encode(&bytes[..4])
            )));
        }
        let kind = match u32_at(REQUEST_OFFSET + 8) {
            REPORT_TYPE_SNP => HclKind::Snp,
            REPORT_TYPE_TDX => HclKind::Tdx,
            other => return Err(bad(format!("unknown hardware report type {other}"))),
        };
        let hash_type = u32_at(REQUEST_OFFSET + 12);
        if hash_type != HASH_TYPE_SHA256 {
            return Err(bad(format!(
                "runtime data hash type {hash_type}, not SHA-256 (1)"
            )));
        }
        let runtime_len = u32_at(REQUEST_OFFSET + 16) as usize;
        if runtime_len == 0 || runtime_len > MAX_RUNTIME_DATA {
            return Err(bad(format!("runtime data of {runtime_len} bytes")));
        }
        let runtime_data = bytes
            .get(RUNTIME_OFFSET..RUNTIME_OFFSET + runtime_len)
            .ok_or_else(|| {
                bad(format!(
                    "runtime data of {runtime_len} bytes, but only {} follow",
                    bytes.len() - RUNTIME_OFFSET
                ))
            })?;
        let hw_len = match kind {
            HclKind::Snp => HW_REPORT_LEN,
            // A TD report is 1024 bytes; the area is sized for the larger SNP report.
            HclKind::Tdx => 1024,
        };
        Ok(HclReport {
            kind,
            hw_report: &bytes[HEADER_LEN..HEADER_LEN + hw_len],
            runtime_data,
        })
    }

    pub fn kind(&self) -> HclKind {
        self.kind
    }

    /// The hardware report, as the TEE produced it.
    pub fn hw_report(&self) -> &'a [u8] {
        self.hw_report
    }

    /// The runtime data (JSON) whose SHA-256 the hardware report binds.
    pub fn runtime_data(&self) -> &'a [u8] {
        self.runtime_data
    }

    /// What the hardware report's `report_data[0..32]` must be.
    pub fn runtime_data_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.runtime_data).into()
    }

    /// The vTPM's AK (`HCLAkPub`) and the VM configuration the runtime data states.
    pub fn runtime(&self) -> Result<Runtime, AzureError> {
        let bad = |s: String| AzureError::RuntimeData(s);
        let data: RuntimeJson =
            serde_json::from_slice(self.runtime_data).map_err(|e| bad(e.to_string()))?;
        let jwk = data
            .keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(AK_KEY_ID))
            .ok_or_else(|| bad(format!("no key '{AK_KEY_ID}'")))?;
        if jwk.kty != "RSA" {
            return Err(bad(format!("{AK_KEY_ID} is a '{}' key, not RSA", jwk.kty)));
        }
        let number = |what: &str, b64: &str| {
            URL_SAFE_NO_PAD
                .decode(b64.trim_end_matches('='))
                .map(|b| BigUint::from_bytes_be(&b))
                .map_err(|e| bad(format!("{AK_KEY_ID}.{what}: {e}")))
        };
        let ak = RsaPublicKey::new(number("n", &jwk.n)?, number("e", &jwk.e)?)
            .map_err(|e| bad(format!("{AK_KEY_ID}: {e}")))?;
        Ok(Runtime {
            ak,
            vm_configuration: data.vm_configuration,
        })
    }
}

#[derive(Deserialize)]
struct RuntimeJson {
    keys: Vec<Jwk>,
    #[serde(rename = "vm-configuration", default)]
    vm_configuration: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Jwk {
    kid: Option<String>,
    kty: String,
    #[serde(default)]
    n: String,
    #[serde(default)]
    e: String,
}

/// What the runtime data says.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The vTPM's attestation key.
    pub ak: RsaPublicKey,
    /// As the paravisor states it (`secure-boot`, `tpm-enabled`, `vmUniqueId`, …).
    pub vm_configuration: serde_json::Map<String, serde_json::Value>,
}

/// An Azure SEV-SNP CVM's evidence: the HCL report with the VCEK chain (from Azure's
/// instance metadata), and a quote by the vTPM AK over the verifier's nonce.
#[derive(Debug, Clone)]
pub struct AzureSnpEvidence {
    pub hcl_report: Vec<u8>,
    pub vcek: Vec<u8>,
    pub cert_chain: Option<SnpCertChain>,
    /// TPMS_ATTEST of a TPM2_Quote.
    pub quote: Vec<u8>,
    /// Its RSASSA-PKCS1-v1_5 SHA-256 signature.
    pub signature: Vec<u8>,
    /// SHA-256 PCR values by index, as quoted.
    pub pcrs: BTreeMap<u32, [u8; 32]>,
}

/// What an Azure SEV-SNP CVM's evidence proved.
#[derive(Debug, Clone)]
pub struct AzureSnpVerified {
    pub snp: SnpVerifiedInfo,
    pub pcrs: BTreeMap<u32, [u8; 32]>,
    pub vm_configuration: serde_json::Map<String, serde_json::Value>,
}

/// Checks the chain: genuine SNP report (under `snp`'s policy: roots, measurement,
/// TCB, debug), runtime data bound by it, quote by the AK the runtime data names, over
/// `nonce`, with PCR values that match the quote.
pub fn verify_azure_snp(
    ev: &AzureSnpEvidence,
    snp: &SnpVerifier,
    nonce: &[u8],
) -> Result<AzureSnpVerified, AzureError> {
    let hcl = HclReport::parse(&ev.hcl_report)?;
    if hcl.kind() != HclKind::Snp {
        return Err(AzureError::WrongKind {
            got: hcl.kind().name(),
            want: HclKind::Snp.name(),
        });
    }
    let (_, snp_info) = snp
        .verify_snp(
            &SnpEvidence {
                report: hcl.hw_report().to_vec(),
                vcek: ev.vcek.clone(),
                cert_chain: ev.cert_chain.clone(),
            },
            &hcl.runtime_data_sha256(),
        )
        .map_err(AzureError::Snp)?;
    let runtime = hcl.runtime()?;
    verify_rsa_quote(&runtime.ak, &ev.quote, &ev.signature, nonce, &ev.pcrs)?;
    Ok(AzureSnpVerified {
        snp: snp_info,
        pcrs: ev.pcrs.clone(),
        vm_configuration: runtime.vm_configuration,
    })
}

/// A TPM2_Quote signed by an RSA AK (RSASSA-PKCS1-v1_5, SHA-256): signature first,
/// then the nonce, then the PCR values against the quoted digest.
pub fn verify_rsa_quote(
    ak: &RsaPublicKey,
    attest: &[u8],
    signature: &[u8],
    nonce: &[u8],
    pcrs: &BTreeMap<u32, [u8; 32]>,
) -> Result<Quote, AzureError> {
    let sig = Signature::try_from(signature)
        .map_err(|e| AzureError::QuoteSignature(format!("{} bytes: {e}", signature.len())))?;
    VerifyingKey::<Sha256>::new(ak.clone())
        .verify(attest, &sig)
        .map_err(|e| AzureError::QuoteSignature(e.to_string()))?;
    let quote = Quote::parse(attest).map_err(|e| AzureError::Quote(e.to_string()))?;
    if quote.extra_data != nonce {
        return Err(AzureError::Nonce {
            expected: hex::encode(nonce),
            got: hex::encode(&quote.extra_data),
        });
    }
    quote.check_pcr_values(pcrs).map_err(|e| match e {
        PcrValuesError::Digest { quoted, computed } => AzureError::PcrDigest { quoted, computed },
        e => AzureError::Quote(e.to_string()),
    })?;
    Ok(quote)
}

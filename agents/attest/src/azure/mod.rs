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
//! The paravisor runs at VMPL 0 and the Linux guest above it, so only a report from
//! VMPL 0 speaks for the paravisor: a guest that could have a report signed with
//! report data of its choosing could name any AK. The verifier therefore refuses any
//! `maxVmpl` but 0 for this profile, and needs the paravisor's launch measurements
//! pinned (otherwise any SNP guest's own firmware could write an HCL report).
//!
//! Writing 64 bytes to NV `0x01400002` makes the paravisor issue a fresh report whose
//! runtime data carries them (`user-data`): the node writes its user data there, so the
//! hardware report is as fresh as the quote, which [`AzureVerifiedInfo`] reports.
//!
//! Parsed by hand rather than with Microsoft's `az-cvm-vtpm` (MIT): its verifier needs
//! OpenSSL and `sev` 7, where Veil uses `sev` 8's pure-Rust backend and RustCrypto;
//! the layout is a fixed header and three length-checked fields.

#[cfg(feature = "tpm-attester")]
pub mod attester;

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::{BigUint, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::encoding::{Digest32, b64};
use crate::evidence::{EvidencePlatform, Verified};
use crate::snp::{SnpCertChain, SnpEvidence, SnpVerifiedInfo, SnpVerifier, SnpVerifyError};
use crate::tdx::{TdxEvidence, TdxVerifier, TdxVerifyError};
use crate::tpm::quote::{Quote, QuoteBindingError, check_quote_binding};

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
/// The vTPM's NV index that holds the HCL report.
pub const HCL_REPORT_NV_INDEX: u32 = 0x0140_0001;
/// Writing 64 bytes here makes the paravisor issue a fresh report carrying them.
pub const HCL_USER_DATA_NV_INDEX: u32 = 0x0140_0002;
/// The vTPM's persistent AK, the key `HCLAkPub` describes.
pub const HCL_AK_HANDLE: u32 = 0x8100_0003;
/// The user data written to [`HCL_USER_DATA_NV_INDEX`]: 32 bytes, then zeros.
pub const HCL_USER_DATA_LEN: usize = 64;
/// Where Azure's instance metadata service (THIM) serves the chip's VCEK. Plain HTTP
/// on a link-local address the host answers: what comes back is checked against
/// AMD's pinned roots by the verifier, so its source does not matter.
pub const THIM_VCEK_URL: &str = "http://169.254.169.254/metadata/THIM/amd/certification";

/// Where Azure's metadata service turns a TD report into a TD quote (POST).
pub const IMDS_TD_QUOTE_URL: &str = "http://169.254.169.254/acc/tdquote";

/// The body of a TD quote request for `td_report` (the HCL report's hardware report).
pub fn td_quote_request(td_report: &[u8]) -> Vec<u8> {
    serde_json::json!({ "report": URL_SAFE_NO_PAD.encode(td_report) })
        .to_string()
        .into_bytes()
}

/// The TD quote in the metadata service's answer: JSON whose `quote` is base64url.
pub fn td_quote_from_answer(json: &[u8]) -> Result<Vec<u8>, AzureError> {
    #[derive(Deserialize)]
    struct Answer {
        quote: String,
    }
    let bad = |s: String| AzureError::Imds(s);
    let answer: Answer = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    let quote = URL_SAFE_NO_PAD
        .decode(answer.quote.trim_end_matches('='))
        .map_err(|e| bad(format!("quote: {e}")))?;
    crate::tdx::TdQuote::parse(&quote).map_err(|e| bad(format!("quote: {e}")))?;
    Ok(quote)
}

/// The VCEK (DER) in THIM's answer: JSON whose `vcekCert` is a PEM certificate.
pub fn thim_vcek(json: &[u8]) -> Result<Vec<u8>, AzureError> {
    #[derive(Deserialize)]
    struct Thim {
        #[serde(rename = "vcekCert")]
        vcek_cert: String,
    }
    let bad = |s: String| AzureError::Thim(s);
    let thim: Thim = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    let body: String = thim
        .vcek_cert
        .trim()
        .strip_prefix("-----BEGIN CERTIFICATE-----")
        .and_then(|s| s.trim_end().strip_suffix("-----END CERTIFICATE-----"))
        .ok_or_else(|| bad("vcekCert is not one PEM certificate".into()))?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| bad(format!("vcekCert: {e}")))
}

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
    #[error(
        "the TD quote of the HCL report is refused (its report_data must be the SHA-256 of the HCL report's runtime data): {0}"
    )]
    Tdx(#[source] TdxVerifyError),
    #[error("the instance metadata service's VCEK answer cannot be read: {0}")]
    Thim(String),
    #[error("the instance metadata service's TD quote answer cannot be read: {0}")]
    Imds(String),
    #[error("the HCL report's runtime data cannot be read: {0}")]
    RuntimeData(String),
    #[error("the vTPM quote is not signed by the AK that the HCL report names: {0}")]
    QuoteSignature(String),
    #[error(transparent)]
    Quote(#[from] QuoteBindingError),
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
            user_data: data.user_data,
        })
    }
}

#[derive(Deserialize)]
struct RuntimeJson {
    keys: Vec<Jwk>,
    #[serde(rename = "vm-configuration", default)]
    vm_configuration: serde_json::Map<String, serde_json::Value>,
    #[serde(rename = "user-data", default)]
    user_data: Option<String>,
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
    /// The 64 bytes last written to NV `0x01400002`, as hex (`user-data`).
    pub user_data: Option<String>,
}

impl Runtime {
    /// SHA-256 over the AK's modulus and exponent (each big-endian, after its 4-byte
    /// length): which vTPM this is, across the VM's reboots.
    pub fn ak_sha256(&self) -> [u8; 32] {
        use rsa::traits::PublicKeyParts;
        let mut h = Sha256::new();
        for part in [self.ak.n().to_bytes_be(), self.ak.e().to_bytes_be()] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(&part);
        }
        h.finalize().into()
    }

    /// What the runtime data states, as [`Verified::azure`](crate::Verified) reports it.
    fn facts(&self, report_is_fresh: bool) -> AzureVerifiedInfo {
        let config = &self.vm_configuration;
        AzureVerifiedInfo {
            vm_unique_id: config
                .get("vmUniqueId")
                .and_then(|u| u.as_str())
                .map(str::to_owned),
            secure_boot: config.get("secure-boot") == Some(&serde_json::Value::Bool(true)),
            report_is_fresh,
            ak_sha256: self.ak_sha256(),
        }
    }

    /// Whether the runtime data carries `user_data` as Veil's attester writes it (the
    /// 32 bytes, then zeros): the hardware report is then as fresh as the quote.
    pub fn carries(&self, user_data: &[u8; 32]) -> bool {
        let mut padded = [0u8; HCL_USER_DATA_LEN];
        padded[..32].copy_from_slice(user_data);
        self.user_data
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(&hex::encode(padded)))
    }
}

/// An Azure SEV-SNP CVM's evidence (kind `"azure-sev-snp"`): the HCL report with the
/// VCEK chain (from Azure's instance metadata), and a quote by the vTPM AK over the
/// verifier's nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureSnpEvidence {
    /// What NV `0x01400001` held, as is.
    #[serde(with = "b64")]
    pub hcl_report: Vec<u8>,
    /// The chip's VCEK, DER.
    #[serde(with = "b64")]
    pub vcek: Vec<u8>,
    #[serde(default)]
    pub cert_chain: Option<SnpCertChain>,
    /// TPMS_ATTEST of a TPM2_Quote.
    #[serde(with = "b64")]
    pub quote: Vec<u8>,
    /// Its RSASSA-PKCS1-v1_5 SHA-256 signature.
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
    /// SHA-256 PCR values by index, as quoted.
    pub pcrs: BTreeMap<u32, Digest32>,
}

/// What an Azure SEV-SNP CVM's evidence proved.
#[derive(Debug, Clone)]
pub struct AzureSnpVerified {
    pub snp: SnpVerifiedInfo,
    pub pcrs: BTreeMap<u32, [u8; 32]>,
    pub vm_configuration: serde_json::Map<String, serde_json::Value>,
    pub runtime: Runtime,
}

/// What only an Azure CVM's evidence says, beside the SNP report's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureVerifiedInfo {
    /// The paravisor's `vmUniqueId`, if stated.
    pub vm_unique_id: Option<String>,
    /// The paravisor states Secure Boot on.
    pub secure_boot: bool,
    /// The hardware report carries this session's user data (not only the quote).
    pub report_is_fresh: bool,
    /// SHA-256 of the paravisor's AK ([`Runtime::ak_sha256`]) that the hardware
    /// report binds: the same key every boot of the VM, so it names its vTPM.
    pub ak_sha256: [u8; 32],
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
    let pcrs: BTreeMap<u32, [u8; 32]> = ev.pcrs.iter().map(|(i, v)| (*i, v.0)).collect();
    verify_rsa_quote(&runtime.ak, &ev.quote, &ev.signature, nonce, &pcrs)?;
    Ok(AzureSnpVerified {
        snp: snp_info,
        pcrs,
        vm_configuration: runtime.vm_configuration.clone(),
        runtime,
    })
}

/// An Azure TDX CVM's evidence (kind `"azure-tdx"`): the HCL report (a TD report
/// inside), the TD quote Azure's metadata service made of that TD report, and a quote
/// by the vTPM AK over the verifier's nonce. The TD report is the one of this boot (no
/// user data is written for it): the nonce's freshness comes from the AK's quote, the
/// AK living in the paravisor inside the TD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureTdxEvidence {
    #[serde(with = "b64")]
    pub hcl_report: Vec<u8>,
    /// The TD quote (version 4) of the HCL report's TD report.
    #[serde(with = "b64")]
    pub td_quote: Vec<u8>,
    #[serde(with = "b64")]
    pub quote: Vec<u8>,
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
    pub pcrs: BTreeMap<u32, Digest32>,
}

/// Checks an Azure TDX CVM's chain: the TD quote (Intel's signature chain, collateral,
/// MRTD and TCB under `tdx`'s policy) over the runtime data's hash, the AK the runtime
/// data names, and that AK's quote over `nonce` with matching PCR values.
pub fn verify_azure_tdx(
    ev: &AzureTdxEvidence,
    tdx: &TdxVerifier,
    nonce: &[u8],
) -> Result<Verified, AzureError> {
    let hcl = HclReport::parse(&ev.hcl_report)?;
    if hcl.kind() != HclKind::Tdx {
        return Err(AzureError::WrongKind {
            got: hcl.kind().name(),
            want: HclKind::Tdx.name(),
        });
    }
    let mut verified = tdx
        .verify_paravisor_td(
            &TdxEvidence {
                quote: ev.td_quote.clone(),
                collateral: None,
            },
            &hcl.runtime_data_sha256(),
        )
        .map_err(AzureError::Tdx)?;
    let runtime = hcl.runtime()?;
    let pcrs: BTreeMap<u32, [u8; 32]> = ev.pcrs.iter().map(|(i, v)| (*i, v.0)).collect();
    verify_rsa_quote(&runtime.ak, &ev.quote, &ev.signature, nonce, &pcrs)?;
    verified.platform = EvidencePlatform::AzureTdx;
    verified.pcrs = pcrs;
    verified.azure = Some(runtime.facts(false));
    Ok(verified)
}

/// [`verify_azure_snp`] over the aTLS user data, as a [`Verified`] result.
pub fn verify_azure_snp_evidence(
    ev: &AzureSnpEvidence,
    snp: &SnpVerifier,
    user_data: &[u8; 32],
) -> Result<Verified, AzureError> {
    let v = verify_azure_snp(ev, snp, user_data)?;
    Ok(Verified {
        platform: EvidencePlatform::AzureSevSnp,
        user_data: *user_data,
        pcrs: v.pcrs,
        event_log: None,
        systemd_log: None,
        tpm: None,
        tdx: None,
        snp: Some(v.snp),
        gcp: None,
        azure: Some(v.runtime.facts(v.runtime.carries(user_data))),
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
    crate::signature::rsa_pkcs1(ak, crate::signature::RsaHash::Sha256, attest, signature).map_err(
        |e| AzureError::QuoteSignature(format!("{} signature bytes: {e}", signature.len())),
    )?;
    Ok(check_quote_binding(attest, nonce, pcrs)?)
}

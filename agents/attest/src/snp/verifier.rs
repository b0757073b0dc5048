//! Verification of SEV-SNP evidence against AMD roots pinned in this crate.

use std::collections::BTreeMap;

use sev::certs::snp::{Certificate, Verifiable};
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_cert::der::Decode;

use super::SnpEvidence;
use super::report::{POLICY_MIGRATE_MA_BIT, POLICY_SMT_BIT, SnpReport, TcbVersion};
use crate::evidence::{Evidence, EvidencePlatform, Verified, Verifier};

/// The AMD EPYC generation whose ARK/ASK a verifier pins. A VCEK only chains to the
/// roots of its own generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SnpProduct {
    #[default]
    Milan,
    Genoa,
    Turin,
}

impl SnpProduct {
    pub fn name(self) -> &'static str {
        match self {
            SnpProduct::Milan => "Milan",
            SnpProduct::Genoa => "Genoa",
            SnpProduct::Turin => "Turin",
        }
    }

    /// The pinned ASVK (AMD's VLEK signing key, under the same ARK) PEM certificate, if
    /// this generation has one pinned: copies of AMD KDS `vlek/v1/<product>/cert_chain`
    /// as the trustee project (Apache-2.0) and google/go-sev-guest carry them.
    pub fn pinned_asvk_pem(self) -> Option<&'static [u8]> {
        match self {
            SnpProduct::Milan => Some(include_bytes!("roots/milan/asvk.pem")),
            SnpProduct::Genoa => Some(include_bytes!("roots/genoa/asvk.pem")),
            SnpProduct::Turin => None,
        }
    }

    /// The pinned (ARK, ASK) PEM certificates: copies of `sev` 8.0.0
    /// `src/certs/snp/builtin/<product>/{ark,ask}.pem` (AMD KDS `cert_chain`).
    pub fn pinned_pem(self) -> (&'static [u8], &'static [u8]) {
        match self {
            SnpProduct::Milan => (
                include_bytes!("roots/milan/ark.pem"),
                include_bytes!("roots/milan/ask.pem"),
            ),
            SnpProduct::Genoa => (
                include_bytes!("roots/genoa/ark.pem"),
                include_bytes!("roots/genoa/ask.pem"),
            ),
            SnpProduct::Turin => (
                include_bytes!("roots/turin/ark.pem"),
                include_bytes!("roots/turin/ask.pem"),
            ),
        }
    }
}

impl std::fmt::Display for SnpProduct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The report's signing-key field: signed by the chip's VCEK.
const SIGNED_BY_VCEK: u32 = 0;
/// … by a cloud's VLEK (AWS's shared hosts, for one).
const SIGNED_BY_VLEK: u32 = 1;

/// What a verifier accepts beyond a genuine, fresh report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpPolicy {
    /// Allowed launch measurements (SHA-384); empty accepts any.
    pub allowed_measurements: Vec<[u8; 48]>,
    /// Every component of the report's `REPORTED_TCB` must be at least this.
    pub min_tcb: TcbVersion,
    /// Accept guests whose policy lets the hypervisor debug them (never in production).
    pub allow_debug: bool,
    /// Whose pinned ARK/ASK the VCEK must chain to.
    pub product: SnpProduct,
    /// Require `report_data[32..64]` to be zero (Veil's attesters bind only 32 bytes).
    /// Only turned off to check reports recorded by other software.
    pub require_zero_report_data_tail: bool,
    /// The least privileged VMPL a report may come from (0 unless an SVSM or a
    /// paravisor runs the guest at a lower privilege): a report requested from a
    /// higher VMPL came from code that the VMPL 0 software does not vouch for.
    pub max_vmpl: u32,
    /// Accept guests whose policy allows a migration agent (bit 18).
    pub allow_migration_agent: bool,
    /// Accept guests whose policy allows SMT on the host (bit 16). Clouds do.
    pub allow_smt: bool,
}

impl Default for SnpPolicy {
    fn default() -> Self {
        SnpPolicy {
            allowed_measurements: Vec::new(),
            min_tcb: TcbVersion::default(),
            allow_debug: false,
            product: SnpProduct::default(),
            require_zero_report_data_tail: true,
            max_vmpl: 0,
            allow_migration_agent: false,
            allow_smt: true,
        }
    }
}

impl SnpPolicy {
    /// The policy checks (debug, TCB, measurement) on a parsed report. Pure: it does not
    /// look at signatures, so callers must only believe the result for a report
    /// [`SnpVerifier`] has authenticated (as [`SnpVerifier::verify_snp`] does).
    pub fn check(&self, report: &SnpReport) -> Result<(), SnpVerifyError> {
        if report.debug_allowed() && !self.allow_debug {
            return Err(SnpVerifyError::DebugAllowed {
                policy: report.policy(),
            });
        }
        if report.policy() & POLICY_MIGRATE_MA_BIT != 0 && !self.allow_migration_agent {
            return Err(SnpVerifyError::PolicyBit {
                policy: report.policy(),
                bit: 18,
                what: "allows a migration agent",
            });
        }
        if report.policy() & POLICY_SMT_BIT != 0 && !self.allow_smt {
            return Err(SnpVerifyError::PolicyBit {
                policy: report.policy(),
                bit: 16,
                what: "allows SMT",
            });
        }
        if report.vmpl() > self.max_vmpl {
            return Err(SnpVerifyError::VmplTooHigh {
                vmpl: report.vmpl(),
                max: self.max_vmpl,
            });
        }
        if let Some((field, min, got)) = report.reported_tcb().first_below(&self.min_tcb) {
            return Err(SnpVerifyError::TcbTooLow { field, min, got });
        }
        let m = report.measurement();
        if !self.allowed_measurements.is_empty() && !self.allowed_measurements.contains(m) {
            return Err(SnpVerifyError::MeasurementMismatch {
                expected: self.allowed_measurements.iter().map(hex::encode).collect(),
                got: hex::encode(m),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum SnpVerifyError {
    #[error("{what} is truncated: {len} bytes, expected {expected}")]
    Truncated {
        what: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("not SEV-SNP evidence (kind {kind})")]
    WrongPlatform { kind: String },
    #[error("VCEK certificate chain not trusted: {reason}")]
    ChainNotTrusted { reason: String },
    #[error("attestation report signature does not verify with the VCEK: {reason}")]
    BadSignature { reason: String },
    #[error("the VCEK was issued for {what} {vcek}, but the report says {report}")]
    VcekMismatch {
        what: &'static str,
        vcek: String,
        report: String,
    },
    #[error("report_data is {got}, expected {expected} (stale, replayed or unbound evidence)")]
    ReportDataMismatch { expected: String, got: String },
    #[error("guest policy {policy:#x} allows hypervisor debugging (bit 19), which is not allowed")]
    DebugAllowed { policy: u64 },
    #[error("guest policy {policy:#x} {what} (bit {bit}), which the policy does not allow")]
    PolicyBit {
        policy: u64,
        bit: u32,
        what: &'static str,
    },
    #[error("the report was requested from VMPL {vmpl}; the policy accepts VMPL {max} at most")]
    VmplTooHigh { vmpl: u32, max: u32 },
    #[error("reported TCB too low: {field} SVN {got} < required {min}")]
    TcbTooLow {
        field: &'static str,
        min: u8,
        got: u8,
    },
    #[error("launch measurement {got} is not one of the allowed {expected:?}")]
    MeasurementMismatch { expected: Vec<String>, got: String },
}

/// SNP-specific facts of a verified report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpVerifiedInfo {
    /// Launch digest (SHA-384) of the guest's initial memory and VMSAs.
    pub measurement: [u8; 48],
    /// The guest policy the firmware enforces.
    pub policy: u64,
    /// The TCB the VCEK was derived from.
    pub reported_tcb: TcbVersion,
    /// Unique ID of the chip (all zero if the guest policy masks it).
    pub chip_id: [u8; 64],
    /// Privilege level the report was requested from (0 = most privileged).
    pub vmpl: u32,
    /// Data the host provided at launch.
    pub host_data: [u8; 32],
    pub report_version: u32,
}

/// Verifies [`Evidence::SevSnp`] under an [`SnpPolicy`].
#[derive(Debug, Clone)]
pub struct SnpVerifier {
    policy: SnpPolicy,
    ark: Certificate,
    ask: Certificate,
    ark_der: Vec<u8>,
    ask_der: Vec<u8>,
    /// AMD's VLEK signing key, where pinned: reports a cloud signs with its VLEK.
    asvk: Option<(Certificate, Vec<u8>)>,
    /// SHA-256 of (signer DER, VCEK/VLEK DER) pairs whose signature already held: a
    /// chip's VCEK comes again with each of its reports, and its RSA-PSS check costs
    /// more than the report's own signature. Only successes are kept, and the pinned
    /// signer is part of the key, so nothing that failed once can pass later.
    chains_seen: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<[u8; 32]>>>,
}

/// At most this many verified chains are remembered (then the memory starts over).
const MAX_CHAINS_SEEN: usize = 4096;

impl SnpVerifier {
    /// Loads and self-checks the pinned roots of `policy.product` (ARK self-signed, ARK
    /// signs ASK).
    pub fn new(policy: SnpPolicy) -> Result<Self, SnpVerifyError> {
        let product = policy.product;
        let (ark_pem, ask_pem) = product.pinned_pem();
        let pinned = |pem: &[u8], which: &str| {
            let cert = Certificate::from_pem(pem).map_err(|e| SnpVerifyError::ChainNotTrusted {
                reason: format!("pinned {product} {which} does not parse: {e}"),
            })?;
            let der = cert.to_der().map_err(|e| SnpVerifyError::ChainNotTrusted {
                reason: format!("pinned {product} {which} does not encode: {e}"),
            })?;
            Ok::<_, SnpVerifyError>((cert, der))
        };
        let (ark, ark_der) = pinned(ark_pem, "ARK")?;
        let (ask, ask_der) = pinned(ask_pem, "ASK")?;
        (&ark, &ark)
            .verify()
            .map_err(|e| SnpVerifyError::ChainNotTrusted {
                reason: format!("pinned {product} ARK is not self-signed: {e}"),
            })?;
        (&ark, &ask)
            .verify()
            .map_err(|e| SnpVerifyError::ChainNotTrusted {
                reason: format!("pinned {product} ASK is not signed by the pinned ARK: {e}"),
            })?;
        let asvk = match product.pinned_asvk_pem() {
            Some(pem) => {
                let (asvk, der) = pinned(pem, "ASVK")?;
                (&ark, &asvk)
                    .verify()
                    .map_err(|e| SnpVerifyError::ChainNotTrusted {
                        reason: format!(
                            "pinned {product} ASVK is not signed by the pinned ARK: {e}"
                        ),
                    })?;
                Some((asvk, der))
            }
            None => None,
        };
        Ok(SnpVerifier {
            policy,
            ark,
            ask,
            ark_der,
            ask_der,
            asvk,
            chains_seen: Default::default(),
        })
    }

    pub fn policy(&self) -> &SnpPolicy {
        &self.policy
    }

    /// The pinned ARK (for logs and tests).
    pub fn pinned_ark(&self) -> &Certificate {
        &self.ark
    }

    /// Checks `ev` completely and returns what it proves.
    pub fn verify_snp(
        &self,
        ev: &SnpEvidence,
        expected_user_data: &[u8; 32],
    ) -> Result<(SnpReport, SnpVerifiedInfo), SnpVerifyError> {
        let report = SnpReport::parse(&ev.report)?;
        let vcek = self.check_chain(ev, report.signing_key())?;
        check_signature(&report, &vcek)?;
        check_vcek_binding(&ev.vcek, &report)?;
        check_report_data(
            &report,
            expected_user_data,
            self.policy.require_zero_report_data_tail,
        )?;
        self.policy.check(&report)?;
        let info = SnpVerifiedInfo {
            measurement: *report.measurement(),
            policy: report.policy(),
            reported_tcb: report.reported_tcb(),
            chip_id: *report.chip_id(),
            vmpl: report.vmpl(),
            host_data: *report.host_data(),
            report_version: report.version(),
        };
        Ok((report, info))
    }

    /// The product whose pinned ASK (or, for a cloud's VLEK, ASVK) signed `vcek_der`,
    /// if any: how a node learns which generation it runs on from its own evidence.
    pub fn product_of_vcek(vcek_der: &[u8]) -> Option<SnpProduct> {
        let probe = SnpEvidence {
            report: Vec::new(),
            vcek: vcek_der.to_vec(),
            cert_chain: None,
        };
        [SnpProduct::Milan, SnpProduct::Genoa, SnpProduct::Turin]
            .into_iter()
            .find(|&product| {
                SnpVerifier::new(SnpPolicy {
                    product,
                    ..SnpPolicy::default()
                })
                .is_ok_and(|v| {
                    [SIGNED_BY_VCEK, SIGNED_BY_VLEK]
                        .into_iter()
                        .any(|key| v.check_chain(&probe, key).is_ok())
                })
            })
    }

    /// VCEK → pinned ASK → pinned ARK, or for a report the cloud's VLEK signed
    /// (`signing_key` 1), VLEK → pinned ASVK → pinned ARK. A chain in the evidence must
    /// equal the pins.
    fn check_chain(
        &self,
        ev: &SnpEvidence,
        signing_key: u32,
    ) -> Result<Certificate, SnpVerifyError> {
        let product = self.policy.product;
        let (signer, signer_der, key_name, signer_name) = match signing_key {
            SIGNED_BY_VCEK => (&self.ask, &self.ask_der, "VCEK", "ASK"),
            SIGNED_BY_VLEK => match &self.asvk {
                Some((asvk, der)) => (asvk, der, "VLEK", "ASVK"),
                None => {
                    return Err(SnpVerifyError::ChainNotTrusted {
                        reason: format!(
                            "the report is signed by a VLEK, and no {product} ASVK is pinned"
                        ),
                    });
                }
            },
            other => {
                return Err(SnpVerifyError::ChainNotTrusted {
                    reason: format!(
                        "the report's signing key field is {other}: neither the chip's VCEK (0) nor a VLEK (1)"
                    ),
                });
            }
        };
        if let Some(chain) = &ev.cert_chain {
            if chain.ark != self.ark_der {
                return Err(SnpVerifyError::ChainNotTrusted {
                    reason: format!(
                        "wrong ARK: the evidence's ARK ({}) is not AMD's pinned {product} ARK ({})",
                        describe_cert(&chain.ark),
                        describe_cert(&self.ark_der)
                    ),
                });
            }
            if &chain.ask != signer_der {
                return Err(SnpVerifyError::ChainNotTrusted {
                    reason: format!(
                        "wrong {signer_name}: the evidence's ({}) is not AMD's pinned {product} {signer_name} ({})",
                        describe_cert(&chain.ask),
                        describe_cert(signer_der)
                    ),
                });
            }
        }
        let vcek = Certificate::from_der(&ev.vcek).map_err(|e| SnpVerifyError::Malformed {
            what: "VCEK certificate",
            reason: e.to_string(),
        })?;
        let pair: [u8; 32] = Sha256::new()
            .chain_update(signer_der)
            .chain_update(&ev.vcek)
            .finalize()
            .into();
        if self
            .chains_seen
            .lock()
            .is_ok_and(|seen| seen.contains(&pair))
        {
            return Ok(vcek);
        }
        (signer, &vcek)
            .verify()
            .map_err(|e| SnpVerifyError::ChainNotTrusted {
                reason: format!(
                    "{key_name} ({}, issued by {}) is not signed by the pinned {product} {signer_name} ({}) under ARK ({}): {e}",
                    describe_cert(&ev.vcek),
                    cert_issuer(&ev.vcek),
                    describe_cert(signer_der),
                    describe_cert(&self.ark_der)
                ),
            })?;
        if let Ok(mut seen) = self.chains_seen.lock() {
            if seen.len() >= MAX_CHAINS_SEEN {
                seen.clear();
            }
            seen.insert(pair);
        }
        Ok(vcek)
    }
}

impl Verifier for SnpVerifier {
    type Error = SnpVerifyError;

    fn verify(
        &self,
        evidence: &Evidence,
        expected_user_data: &[u8; 32],
    ) -> Result<Verified, SnpVerifyError> {
        #[allow(unreachable_patterns)]
        let ev = match evidence {
            Evidence::SevSnp(ev) => ev,
            other => {
                return Err(SnpVerifyError::WrongPlatform {
                    kind: evidence_kind(other),
                });
            }
        };
        let (_, info) = self.verify_snp(ev, expected_user_data)?;
        Ok(Verified {
            platform: EvidencePlatform::SevSnp,
            user_data: *expected_user_data,
            pcrs: BTreeMap::new(),
            event_log: None,
            systemd_log: None,
            tpm: None,
            tdx: None,
            snp: Some(info),
            gcp: None,
            azure: None,
        })
    }
}

/// Checks the report's ECDSA P-384 signature over its raw first 0x2a0 bytes.
///
/// The key and the scalars are parsed with `p384` first, so a key that is no point on
/// the curve, or a scalar out of range, is named as such; the signature itself is then
/// checked by ring ([`crate::signature`]).
pub fn check_signature(report: &SnpReport, vcek: &Certificate) -> Result<(), SnpVerifyError> {
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(vcek.public_key_sec1()).map_err(|e| {
        SnpVerifyError::BadSignature {
            reason: format!("VCEK public key is not a P-384 point: {e}"),
        }
    })?;
    let (r, s) = report.signature_r_s();
    let sig = p384::ecdsa::Signature::from_scalars(be48(r, "r")?, be48(s, "s")?).map_err(|e| {
        SnpVerifyError::BadSignature {
            reason: format!("signature scalars out of range: {e}"),
        }
    })?;
    crate::signature::p384_fixed(
        &key,
        report.signed_bytes(),
        &sig.r().to_bytes(),
        &sig.s().to_bytes(),
    )
    .map_err(|e| SnpVerifyError::BadSignature {
        reason: format!(
            "ECDSA P-384/SHA-384 check failed ({e}): the report was not signed by this VCEK"
        ),
    })
}

/// The VCEK certificate's AMD extensions must describe the report's chip and TCB:
/// `hwID` (1.3.6.1.4.1.3704.1.4; 64 bytes up to Genoa, 8 on Turin) is a prefix of
/// `CHIP_ID` unless the guest masked it (all zero), and the bootloader/TEE/SNP/microcode
/// SPLs (…3704.1.3.{1,2,3,8}) equal `REPORTED_TCB`. Extensions that are absent are not
/// compared.
pub fn check_vcek_binding(vcek_der: &[u8], report: &SnpReport) -> Result<(), SnpVerifyError> {
    let cert =
        x509_cert::Certificate::from_der(vcek_der).map_err(|e| SnpVerifyError::Malformed {
            what: "VCEK certificate",
            reason: e.to_string(),
        })?;
    let ext = |oid: &str| {
        cert.tbs_certificate.extensions.as_ref().and_then(|exts| {
            exts.iter()
                .find(|e| e.extn_id.to_string() == oid)
                .map(|e| e.extn_value.as_bytes().to_vec())
        })
    };
    let chip_id = report.chip_id();
    if let Some(hwid) = ext("1.3.6.1.4.1.3704.1.4") {
        let masked = chip_id.iter().all(|b| *b == 0);
        if !masked && !chip_id.starts_with(&hwid) {
            return Err(SnpVerifyError::VcekMismatch {
                what: "chip",
                vcek: hex::encode(&hwid),
                report: hex::encode(chip_id),
            });
        }
    }
    let tcb = report.reported_tcb();
    for (name, oid, got) in [
        ("bootloader SPL", "1.3.6.1.4.1.3704.1.3.1", tcb.bootloader),
        ("TEE SPL", "1.3.6.1.4.1.3704.1.3.2", tcb.tee),
        ("SNP SPL", "1.3.6.1.4.1.3704.1.3.3", tcb.snp),
        ("microcode SPL", "1.3.6.1.4.1.3704.1.3.8", tcb.microcode),
    ] {
        let Some(raw) = ext(oid) else { continue };
        let spl = der_small_uint(&raw).ok_or_else(|| SnpVerifyError::Malformed {
            what: "VCEK certificate",
            reason: format!(
                "{name} extension {oid} is not a small INTEGER: {}",
                hex::encode(&raw)
            ),
        })?;
        if spl != got {
            return Err(SnpVerifyError::VcekMismatch {
                what: name,
                vcek: spl.to_string(),
                report: got.to_string(),
            });
        }
    }
    Ok(())
}

/// A DER INTEGER in 0..=255 (`02 01 xx` or `02 02 00 xx`).
fn der_small_uint(raw: &[u8]) -> Option<u8> {
    match raw {
        [0x02, 0x01, v] if *v < 0x80 => Some(*v),
        [0x02, 0x02, 0x00, v] if *v >= 0x80 => Some(*v),
        _ => None,
    }
}

/// `report_data[0..32]` must equal `expected`; the rest must be zero if `zero_tail`.
pub fn check_report_data(
    report: &SnpReport,
    expected: &[u8; 32],
    zero_tail: bool,
) -> Result<(), SnpVerifyError> {
    let got = report.report_data();
    let mut want = [0u8; 64];
    want[..32].copy_from_slice(expected);
    if !zero_tail {
        want[32..].copy_from_slice(&got[32..]);
    }
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&got[..], &want[..])) {
        return Err(SnpVerifyError::ReportDataMismatch {
            expected: hex::encode(want),
            got: hex::encode(got),
        });
    }
    Ok(())
}

/// A 72-byte little-endian scalar as the 48-byte big-endian field element p384 wants;
/// the upper 24 bytes must be zero.
fn be48(le: &[u8], which: &str) -> Result<p384::FieldBytes, SnpVerifyError> {
    let (low, high) = (le.get(..48), le.get(48..72));
    match (low, high) {
        (Some(low), Some(high)) if high.iter().all(|b| *b == 0) => {
            let mut out = p384::FieldBytes::default();
            for (o, b) in out.iter_mut().zip(low.iter().rev()) {
                *o = *b;
            }
            Ok(out)
        }
        _ => Err(SnpVerifyError::BadSignature {
            reason: format!("signature component {which} does not fit in 48 bytes"),
        }),
    }
}

/// "CN=..., sha256 ..." for error messages; never fails.
fn describe_cert(der: &[u8]) -> String {
    let fp = hex::encode(Sha256::digest(der));
    match x509_cert::Certificate::from_der(der) {
        Ok(c) => format!("subject {}, sha256 {fp}", c.tbs_certificate.subject),
        Err(_) => format!("unparsable certificate, sha256 {fp}"),
    }
}

fn cert_issuer(der: &[u8]) -> String {
    x509_cert::Certificate::from_der(der)
        .map(|c| c.tbs_certificate.issuer.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

fn evidence_kind(ev: &Evidence) -> String {
    serde_json::to_value(ev)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str().map(str::to_owned)))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_roots_load_and_chain_for_every_product() {
        for product in [SnpProduct::Milan, SnpProduct::Genoa, SnpProduct::Turin] {
            SnpVerifier::new(SnpPolicy {
                product,
                ..SnpPolicy::default()
            })
            .unwrap_or_else(|e| panic!("{product}: {e}"));
        }
    }

    #[test]
    fn small_der_integers() {
        assert_eq!(der_small_uint(&[2, 1, 0x73]), Some(0x73));
        assert_eq!(der_small_uint(&[2, 2, 0, 0xd1]), Some(0xd1));
        assert_eq!(der_small_uint(&[2, 1, 0x80]), None);
        assert_eq!(der_small_uint(&[2, 2, 1, 0]), None);
        assert_eq!(der_small_uint(&[]), None);
    }

    #[test]
    fn oversized_scalar_is_rejected() {
        let mut le = [0u8; 72];
        le[60] = 1;
        assert!(matches!(
            be48(&le, "r"),
            Err(SnpVerifyError::BadSignature { .. })
        ));
        le[60] = 0;
        le[0] = 7;
        assert_eq!(be48(&le, "r").map(|b| b[47]).ok(), Some(7));
    }
}

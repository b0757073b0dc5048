//! Veil's own check of a TD quote's chain to Intel, for the one kind of TD dcap-qvl
//! cannot take: Azure's paravisor TD, which runs without SEPT_VE_DISABLE because the
//! paravisor handles #VE for the guest it partitions. dcap-qvl (0.7) refuses such a TD
//! at the end of its chain check and has no option to do otherwise, and its code may
//! not be copied; so this module walks Intel's chain itself and leaves the TD's
//! attributes to the caller's policy (`check_td_attributes`).
//!
//! What it shares with dcap-qvl is only parsing (the quote layout, the PCK certificate's
//! SGX extension, the TCB info and QE identity JSON) and the per-level SVN comparison,
//! all public API of that crate. The trust decisions are here:
//!
//! 1. the TCB info and the QE identity are signed by a certificate the pinned root
//!    issued directly, neither revoked;
//! 2. the PCK certificate chains to the root through one PCK CA, each checked against
//!    its issuer's CRL;
//! 3. the QE report is signed by the PCK key and is Intel's TD QE (QE identity);
//! 4. the QE report binds the attestation key (SHA-256 of the key and the QE's
//!    authentication data, then zeros);
//! 5. the quote's header and TD report are signed by that attestation key;
//! 6. the platform's TCB level (PCK certificate's CPU and PCE SVNs, the report's TDX
//!    SVNs) and the TDX module's signer and level, from the TCB info.
//!
//! TD 1.0 and TD 1.5 reports are taken (a TD 1.5 without service TDs; its current TCB
//! is appraised too, and Intel's "relaunch advised" applies), not TD 1.5ex. The
//! differential tests hold its verdicts to dcap-qvl's on the same evidence.

pub(crate) mod pki;
mod tcb;

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::{AuthData, AuthDataV4, EnclaveReport, Quote, Report, TDReport10};
use sha2::{Digest as _, Sha256};

use super::error::TdxVerifyError;
use super::quote::TEE_TYPE_TDX;

/// ECDSA-256 with P-256, the only attestation key type Intel's TD QE uses.
const ATTESTATION_KEY_ECDSA_P256: u16 = 2;
/// Certification data: the QE report and its signature, around the PCK chain (type 5).
const CERT_DATA_QE_REPORT: u16 = 6;
const CERT_DATA_PCK_CHAIN: u16 = 5;

/// Intel's verdict on a quote whose chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainVerdict {
    /// The converged TCB status (platform, TDX module and QE), as Intel names it.
    pub status: String,
    pub advisory_ids: Vec<String>,
}

/// Checks `raw`'s chain to `root_ca_der` with `collateral` at `now` (Unix seconds). The
/// collateral's dates are the caller's to check (`check_collateral_window`); the
/// certificates' and CRLs' are checked here.
pub(crate) fn verify_chain(
    raw: &[u8],
    collateral: &QuoteCollateralV3,
    root_ca_der: &[u8],
    now: u64,
) -> Result<ChainVerdict, TdxVerifyError> {
    let quote = Quote::parse(raw).map_err(|e| TdxVerifyError::Malformed {
        what: "quote",
        reason: format!("{e:#}"),
    })?;
    let (td, current_svn) = td_report(&quote)?;
    let auth = certified_auth_data(&quote)?;
    let qe_data = &auth.qe_report_data;

    let pki = pki::IntelPki::new(
        root_ca_der,
        &collateral.root_ca_crl,
        &collateral.pck_crl,
        now,
    )?;
    // 1. Intel's collateral.
    pki.verify_signed(
        "TCB info",
        &collateral.tcb_info_issuer_chain,
        &collateral.tcb_info,
        &collateral.tcb_info_signature,
    )?;
    pki.verify_signed(
        "QE identity",
        &collateral.qe_identity_issuer_chain,
        &collateral.qe_identity,
        &collateral.qe_identity_signature,
    )?;
    let tcb_info: dcap_qvl::tcb_info::TcbInfo = serde_json::from_str(&collateral.tcb_info)
        .map_err(|e| malformed("TCB info", e.to_string()))?;
    let qe_identity: dcap_qvl::qe_identity::QeIdentity =
        serde_json::from_str(&collateral.qe_identity)
            .map_err(|e| malformed("QE identity", e.to_string()))?;

    // 2. The PCK certificate, and the platform it describes.
    let pck = pki.verify_path("PCK", &qe_data.certification_data.body.data)?;
    if pck.intermediates != 1 {
        return Err(TdxVerifyError::BadSignature {
            reason: format!(
                "the PCK certificate is {} certificates below the root, not 2 (PCK CA, root)",
                pck.intermediates + 1
            ),
        });
    }
    let platform = dcap_qvl::intel::parse_pck_extension(&pck.der)
        .map_err(|e| malformed("PCK certificate's SGX extension", format!("{e:#}")))?;

    // 3. The QE report, signed by the PCK key.
    pki::verify_p256_by_cert(&pck.der, &qe_data.qe_report, &qe_data.qe_report_signature)
        .map_err(|e| bad_signature(format!("QE report signature by the PCK key {e}")))?;
    let qe = enclave_report(&qe_data.qe_report);

    // 4. The QE vouches for the attestation key.
    let mut bound = [0u8; 64];
    bound[..32].copy_from_slice(
        &Sha256::new()
            .chain_update(auth.ecdsa_attestation_key)
            .chain_update(&qe_data.qe_auth_data.data)
            .finalize(),
    );
    if qe.report_data != bound {
        return Err(bad_signature(format!(
            "the QE report binds {}, not the quote's attestation key ({})",
            hex::encode(qe.report_data),
            hex::encode(bound)
        )));
    }

    // 5. The quote, signed by the attestation key.
    let signed = raw
        .get(..quote.signed_length())
        .ok_or(TdxVerifyError::Truncated {
            what: "quote",
            offset: raw.len(),
        })?;
    let mut point = [0x04u8; 65];
    point[1..].copy_from_slice(&auth.ecdsa_attestation_key);
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|e| {
        bad_signature(format!(
            "the quote's attestation key is not a P-256 point: {e}"
        ))
    })?;
    let (r, s) = auth.ecdsa_signature.split_at(32);
    crate::signature::p256_fixed(
        &key,
        signed,
        p256::FieldBytes::from_slice(r),
        p256::FieldBytes::from_slice(s),
    )
    .map_err(|e| bad_signature(format!("the quote's signature by its attestation key: {e}")))?;

    // 6. Where the QE, the platform and the TDX module stand.
    let qe_status = tcb::qe_status(&qe, &qe_identity)?;
    let platform_status = tcb::platform_status(&tcb_info, &platform, td)?;
    let mut status = platform_status.merge(&qe_status);
    tcb::refuse_revoked(&status)?;
    // A TD 1.5's current TCB (after TD-preserving module updates) must be appraisable
    // too, and not revoked.
    if let Some(svn) = current_svn {
        let current = tcb::status_at(&tcb_info, &platform, svn)?.merge(&qe_status);
        tcb::refuse_revoked(&current)?;
        status.status = tcb::relaunch_status(status.status, current.status);
    }
    Ok(ChainVerdict {
        status: status.status.to_string(),
        advisory_ids: status.advisory_ids,
    })
}

/// The quote's authentication data, after checking that it certifies the attestation
/// key the one way Veil takes: a QE report around the PCK chain (types 6 and 5).
pub(crate) fn certified_auth_data(quote: &Quote) -> Result<&AuthDataV4, TdxVerifyError> {
    let auth = match &quote.auth_data {
        AuthData::V4(a) => a,
        AuthData::V3(_) => {
            return Err(unsupported("quote", "version 3 authentication data".into()));
        }
    };
    let cert_type = |what: &'static str, got: u16, want: u16, name: &str| {
        if got == want {
            Ok(())
        } else {
            Err(unsupported(
                what,
                format!("type {got} (Veil takes type {want}, {name})"),
            ))
        }
    };
    cert_type(
        "quote certification data",
        auth.certification_data.cert_type,
        CERT_DATA_QE_REPORT,
        "the QE report",
    )?;
    cert_type(
        "QE certification data",
        auth.qe_report_data.certification_data.cert_type,
        CERT_DATA_PCK_CHAIN,
        "the PCK chain in the quote",
    )?;
    Ok(auth)
}

/// The TD report, and for a TD 1.5 its current TEE_TCB_SVN.
fn td_report(quote: &Quote) -> Result<(&TDReport10, Option<&[u8; 16]>), TdxVerifyError> {
    if !matches!(quote.header.version, 4 | 5) {
        return Err(unsupported(
            "quote",
            format!("version {} (TDX quotes are 4 or 5)", quote.header.version),
        ));
    }
    if quote.header.tee_type != TEE_TYPE_TDX {
        return Err(unsupported(
            "quote TEE type",
            format!("{:#x} is not TDX", quote.header.tee_type),
        ));
    }
    if quote.header.attestation_key_type != ATTESTATION_KEY_ECDSA_P256 {
        return Err(unsupported(
            "attestation key type",
            format!(
                "{} (Intel's TD QE signs with type {ATTESTATION_KEY_ECDSA_P256}, ECDSA P-256)",
                quote.header.attestation_key_type
            ),
        ));
    }
    if quote.header.qe_vendor_id != dcap_qvl::INTEL_QE_VENDOR_ID {
        return Err(unsupported(
            "QE vendor",
            format!("{} is not Intel", hex::encode(quote.header.qe_vendor_id)),
        ));
    }
    match &quote.report {
        Report::TD10(td) => Ok((td, None)),
        // Bound service TDs are refused with the attributes, once the report is known
        // to be signed (`TdQuote::check_no_service_tds`).
        Report::TD15(td) => Ok((&td.base, Some(&td.tee_tcb_svn2))),
        Report::TD15Ex(_) => Err(unsupported(
            "TD report",
            "TD 1.5ex reports (quote body type 4) are not taken by this path".into(),
        )),
        Report::SgxEnclave(_) => Err(unsupported(
            "quote body",
            "an SGX enclave report in a TDX quote".into(),
        )),
    }
}

/// The fields of an SGX enclave report (384 bytes, Intel's `sgx_report_body_t`).
fn enclave_report(b: &[u8; 384]) -> EnclaveReport {
    fn take<const N: usize>(b: &[u8; 384], at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&b[at..at + N]);
        out
    }
    EnclaveReport {
        cpu_svn: take(b, 0),
        misc_select: u32::from_le_bytes(take(b, 16)),
        reserved1: take(b, 20),
        attributes: take(b, 48),
        mr_enclave: take(b, 64),
        reserved2: take(b, 96),
        mr_signer: take(b, 128),
        reserved3: take(b, 160),
        isv_prod_id: u16::from_le_bytes(take(b, 256)),
        isv_svn: u16::from_le_bytes(take(b, 258)),
        reserved4: take(b, 260),
        report_data: take(b, 320),
    }
}

fn unsupported(what: &'static str, reason: String) -> TdxVerifyError {
    TdxVerifyError::Unsupported { what, reason }
}

fn malformed(what: &'static str, reason: String) -> TdxVerifyError {
    TdxVerifyError::Malformed { what, reason }
}

fn bad_signature(reason: String) -> TdxVerifyError {
    TdxVerifyError::BadSignature { reason }
}

/// Differential tests: on recorded genuine quotes, and on every mutation tried, this
/// path must never accept what dcap-qvl refuses for a reason other than SEPT_VE_DISABLE,
/// and must reach the same TCB verdict where both accept.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::tdx::INTEL_SGX_ROOT_CA_DER;

    fn data(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn collateral(path: &str) -> QuoteCollateralV3 {
        serde_json::from_slice(&data(path)).expect("collateral JSON")
    }

    /// dcap-qvl's verdict: the status, or its error text.
    fn dcap_qvl(
        raw: &[u8],
        c: &QuoteCollateralV3,
        now: u64,
    ) -> Result<(String, Vec<String>), String> {
        dcap_qvl::verify::QuoteVerifier::new(INTEL_SGX_ROOT_CA_DER.to_vec())
            .verify(raw, c, now)
            .map(|r| (r.status, r.advisory_ids))
            .map_err(|e| format!("{e:#}"))
    }

    struct Case {
        quote: Vec<u8>,
        collateral: QuoteCollateralV3,
        now: u64,
        /// dcap-qvl's refusal at the very end for this TD's attributes, if any.
        dcap_refuses_for: Option<&'static str>,
    }

    fn cases() -> [Case; 2] {
        [
            // A plain TD (dcap-qvl's own sample): both accept.
            Case {
                quote: data("tdx/tdx_quote.bin"),
                collateral: collateral("tdx/tdx_quote_collateral.json"),
                now: 1_751_328_000,
                dcap_refuses_for: None,
            },
            // Azure's paravisor TD: dcap-qvl walks the whole chain, then refuses the TD.
            Case {
                quote: data("azure/tdx-td-quote.bin"),
                collateral: collateral("azure/tdx-collateral-00806f050000.json"),
                now: 1_748_736_000,
                dcap_refuses_for: Some("SEPT_VE_DISABLE is not enabled"),
            },
        ]
    }

    /// Whether dcap-qvl's answer counts as "the chain holds" for this case.
    fn dcap_chain_holds(case: &Case, answer: &Result<(String, Vec<String>), String>) -> bool {
        match (answer, case.dcap_refuses_for) {
            (Ok(_), None) => true,
            (Err(e), Some(reason)) => e.contains(reason),
            _ => false,
        }
    }

    #[test]
    fn genuine_quotes_get_dcap_qvls_verdict() {
        for case in cases() {
            let ours = verify_chain(
                &case.quote,
                &case.collateral,
                INTEL_SGX_ROOT_CA_DER,
                case.now,
            )
            .expect("the genuine chain holds");
            let theirs = dcap_qvl(&case.quote, &case.collateral, case.now);
            assert!(dcap_chain_holds(&case, &theirs), "{theirs:?}");
            if let Ok((status, mut advisories)) = theirs {
                let mut ours_advisories = ours.advisory_ids.clone();
                ours_advisories.sort();
                advisories.sort();
                assert_eq!(
                    (ours.status.as_str(), ours_advisories),
                    (status.as_str(), advisories)
                );
            }
        }
    }

    #[test]
    fn no_mutation_of_a_quote_is_taken_that_dcap_qvl_refuses() {
        for case in cases() {
            let last_cert = case
                .quote
                .windows(27)
                .rposition(|w| w == b"-----BEGIN CERTIFICATE-----")
                .expect("a PEM chain");
            // Every byte of the header and TD report, then every 7th byte of the
            // authentication data (signature, key, QE report, PCK chain).
            let positions = (0..632).chain((632..case.quote.len()).step_by(7));
            for i in positions {
                let mut q = case.quote.clone();
                q[i] ^= 0x01;
                let ours = verify_chain(&q, &case.collateral, INTEL_SGX_ROOT_CA_DER, case.now);
                if ours.is_ok() {
                    let theirs = dcap_qvl(&q, &case.collateral, case.now);
                    assert!(
                        dcap_chain_holds(&case, &theirs),
                        "byte {i} flipped: taken here, refused by dcap-qvl: {theirs:?}"
                    );
                }
                // Every byte up to the chain's last certificate counts, but for the
                // authentication data's length (its parts carry their own lengths).
                // The last certificate is the root's copy, which the pinned root
                // stands in for; dcap-qvl takes changes there too.
                if i < 632 || (636..last_cert).contains(&i) {
                    assert!(ours.is_err(), "byte {i} flipped and taken");
                }
            }
        }
    }

    #[test]
    fn changed_collateral_is_refused_and_named() {
        for case in cases() {
            let run = |c: &QuoteCollateralV3| {
                verify_chain(&case.quote, c, INTEL_SGX_ROOT_CA_DER, case.now)
                    .expect_err("changed collateral")
                    .to_string()
            };
            let mut c = case.collateral.clone();
            c.tcb_info = c.tcb_info.replacen(
                "\"tcbStatus\":\"OutOfDate\"",
                "\"tcbStatus\":\"UpToDate\"",
                1,
            );
            assert_ne!(c.tcb_info, case.collateral.tcb_info);
            assert!(run(&c).contains("TCB info signature"));

            let mut c = case.collateral.clone();
            c.qe_identity = c
                .qe_identity
                .replacen("\"isvprodid\":2", "\"isvprodid\":3", 1);
            assert_ne!(c.qe_identity, case.collateral.qe_identity);
            assert!(run(&c).contains("QE identity signature"));

            let mut c = case.collateral.clone();
            c.tcb_info_signature[5] ^= 1;
            assert!(run(&c).contains("TCB info signature"));

            // CRLs: a changed byte in the signed part breaks its signature.
            for crl in [0, 1] {
                let mut c = case.collateral.clone();
                let der = if crl == 0 {
                    &mut c.root_ca_crl
                } else {
                    &mut c.pck_crl
                };
                let at = der.len() / 2;
                der[at] ^= 1;
                let e = run(&c);
                assert!(e.contains("CRL") || e.contains("certificate path"), "{e}");
            }
            // Without the PCK CRL (the root's CRL twice) no CRL speaks for the PCK
            // certificate, which is refused.
            let mut c = case.collateral.clone();
            c.pck_crl = c.root_ca_crl.clone();
            assert!(run(&c).contains("PCK certificate path"));
        }
    }

    /// A real TD 1.5 quote (v5) of another platform: every signature holds, and its CPU
    /// SVN meets no TCB level of its collateral (component 7 is 3, every level wants 5).
    /// Both refuse it there.
    #[test]
    fn a_td_1_5_quote_goes_through_the_chain_to_its_tcb_level() {
        let quote = data("tdx/tdx_quote_outdated.bin");
        let c = collateral("tdx/tdx_quote_outdated_collateral.json");
        let now = 1_772_323_200;
        assert!(matches!(
            Quote::parse(&quote).expect("parses").report,
            Report::TD15(_)
        ));
        let e = verify_chain(&quote, &c, INTEL_SGX_ROOT_CA_DER, now).expect_err("no TCB level");
        assert!(
            e.to_string()
                .contains("no TCB level of the TCB info is met by CPUSVN 0303020204010003"),
            "{e}"
        );
        let theirs = dcap_qvl(&quote, &c, now).expect_err("dcap-qvl refuses it too");
        assert!(theirs.contains("No matching TCB level"), "{theirs}");
        // A flipped signed byte is refused by its signature before any TCB matching.
        let mut q = quote.clone();
        q[48 + 6 + 136] ^= 1; // MRTD
        let e = verify_chain(&q, &c, INTEL_SGX_ROOT_CA_DER, now).expect_err("changed MRTD");
        assert!(
            e.to_string().contains("signature by its attestation key"),
            "{e}"
        );
        // MRSERVICETD: header (48), body header (6), TD 1.0 fields (584), TEE_TCB_SVN2
        // (16). Signed like the rest; a TD bound to service TDs is refused once its
        // report is known to be signed (`TdQuote::check_no_service_tds`).
        let mut q = quote.clone();
        q[48 + 6 + 584 + 16] ^= 1;
        let e = verify_chain(&q, &c, INTEL_SGX_ROOT_CA_DER, now).expect_err("changed");
        assert!(
            e.to_string().contains("signature by its attestation key"),
            "{e}"
        );
        let td = crate::tdx::TdQuote::parse(&quote).expect("quote");
        assert_eq!(td.service_tds, [0; 48]);
        td.check_no_service_tds().expect("none bound");
        let bound = crate::tdx::TdQuote::parse(&q).expect("quote");
        assert_eq!(bound.service_tds[0], 1);
        let e = bound.check_no_service_tds().expect_err("bound");
        assert!(
            e.to_string()
                .contains("service TDs are bound (SERVTD_HASH 0100000000"),
            "{e}"
        );
    }

    #[test]
    fn certification_data_of_another_type_is_refused_by_type() {
        let case = &cases()[1];
        // Header (48), TD report (584), length (4), signature (64), key (64): the
        // outer certification data's type.
        assert_eq!(case.quote[764..766], [6, 0]);
        let mut q = case.quote.clone();
        q[764] = 5;
        let e = verify_chain(&q, &case.collateral, INTEL_SGX_ROOT_CA_DER, case.now)
            .expect_err("type 5 outside");
        assert!(
            matches!(&e, TdxVerifyError::Unsupported { what: "quote certification data", reason } if reason.starts_with("type 5")),
            "{e}"
        );
    }

    #[test]
    fn another_root_or_a_time_outside_the_certificates_is_refused() {
        let case = &cases()[0];
        let snp_root = data("snp/milan_ark.pem");
        let e = verify_chain(&case.quote, &case.collateral, &snp_root, case.now)
            .expect_err("not a DER root");
        assert!(
            matches!(
                e,
                TdxVerifyError::Malformed {
                    what: "trusted root CA",
                    ..
                }
            ),
            "{e}"
        );
        // 2060: past the root's and every certificate's end.
        let e = verify_chain(
            &case.quote,
            &case.collateral,
            INTEL_SGX_ROOT_CA_DER,
            2_840_000_000,
        )
        .expect_err("expired");
        assert!(matches!(e, TdxVerifyError::BadSignature { .. }), "{e}");
    }
}

//! Intel's collateral put together from PCS answers (`veil_attest::tdx::pcs`), on the
//! two recorded TD quotes and their recorded collateral (tests/data/tdx/README.md,
//! tests/data/azure/README.md): the request is read from the quote's PCK certificate,
//! the answers assemble into exactly the collateral Intel signed, and that collateral
//! verifies the quote. Answers for another platform, of another kind, or with a part
//! missing are refused, naming which; a changed TCB info assembles (nothing is believed
//! there) and the verifier refuses it.

mod pcs_support;

use pcs_support::served;
use veil_attest::tdx::pcs::{
    CollateralRequest, INTEL_PCS_URL, PckCa, PcsError, QE_IDENTITY_ISSUER_CHAIN, assemble,
};
use veil_attest::tdx::{TdQuote, TdxEvidence, TdxPolicy, TdxVerifier, TdxVerifyError};
use veil_attest::{Evidence, Verifier};

const SAMPLE_QUOTE: &[u8] = include_bytes!("data/tdx/tdx_quote.bin");
const SAMPLE_COLLATERAL: &str = include_str!("data/tdx/tdx_quote_collateral.json");
const AZURE_QUOTE: &[u8] = include_bytes!("data/azure/tdx-td-quote.bin");
const AZURE_COLLATERAL: &str = include_str!("data/azure/tdx-collateral-00806f050000.json");
/// 2025-07-01, inside the sample collateral's dates (tests/tdx.rs).
const SAMPLE_NOW: u64 = 1_751_328_000;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).expect("JSON")
}

fn verify_sample(collateral: &str) -> Result<veil_attest::Verified, TdxVerifyError> {
    let td = TdQuote::parse(SAMPLE_QUOTE).expect("sample");
    let mut user_data = [0u8; 32];
    user_data.copy_from_slice(&td.report_data[..32]);
    TdxVerifier::new(TdxPolicy {
        now: Some(SAMPLE_NOW),
        ignore_report_data_tail: true,
        ..TdxPolicy::default()
    })
    .with_collateral_json(collateral)?
    .verify(
        &Evidence::Tdx(TdxEvidence {
            quote: SAMPLE_QUOTE.to_vec(),
            collateral: None,
        }),
        &user_data,
    )
}

#[test]
fn the_request_is_read_from_the_quotes_pck_certificate() {
    let azure = CollateralRequest::for_quote(AZURE_QUOTE).expect("Azure's TD quote");
    assert_eq!(azure.fmspc_hex(), "00806F050000");
    assert_eq!(azure.ca, PckCa::Platform);
    assert_eq!(
        azure.tcb_info_url(INTEL_PCS_URL),
        "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=00806F050000"
    );
    assert_eq!(
        azure.pck_crl_url("http://pccs/"),
        "http://pccs/sgx/certification/v4/pckcrl?ca=platform&encoding=der"
    );
    assert_eq!(
        azure.qe_identity_url(INTEL_PCS_URL),
        "https://api.trustedservices.intel.com/tdx/certification/v4/qe/identity"
    );
    let sample = CollateralRequest::for_quote(SAMPLE_QUOTE).expect("the sample");
    assert_eq!(sample.fmspc_hex(), "B0C06F000000");

    let e = CollateralRequest::for_quote(&SAMPLE_QUOTE[..600]).expect_err("truncated");
    assert!(matches!(e, PcsError::Quote(_)), "{e}");
    // A quote whose PCK chain is not PEM names the certificate.
    let mut broken = SAMPLE_QUOTE.to_vec();
    let at = broken
        .windows(27)
        .position(|w| w == b"-----BEGIN CERTIFICATE-----")
        .expect("the PCK chain");
    broken[at + 40] = b'!';
    let e = CollateralRequest::for_quote(&broken).expect_err("broken PEM");
    assert!(e.to_string().contains("PCK certificate"), "{e}");
}

#[test]
fn answers_assemble_into_the_collateral_intel_signed_and_it_verifies() {
    for (quote, recorded) in [
        (SAMPLE_QUOTE, SAMPLE_COLLATERAL),
        (AZURE_QUOTE, AZURE_COLLATERAL),
    ] {
        let request = CollateralRequest::for_quote(quote).expect("request");
        let assembled = assemble(&request, &served(recorded)).expect("assembled");
        assert_eq!(json(&assembled), json(recorded));
    }
    let assembled = assemble(
        &CollateralRequest::for_quote(SAMPLE_QUOTE).expect("request"),
        &served(SAMPLE_COLLATERAL),
    )
    .expect("assembled");
    let verified = verify_sample(&assembled).expect("the sample verifies");
    assert_eq!(verified.tdx.expect("TDX facts").tcb_status, "UpToDate");

    // A PCCS sends the root CA's CRL in hex: taken the same.
    let mut answers = served(SAMPLE_COLLATERAL);
    answers.root_ca_crl = hex::encode(&answers.root_ca_crl).into_bytes();
    let from_hex = assemble(
        &CollateralRequest::for_quote(SAMPLE_QUOTE).expect("request"),
        &answers,
    )
    .expect("hex CRL");
    assert_eq!(json(&from_hex), json(SAMPLE_COLLATERAL));
}

#[test]
fn answers_for_another_platform_or_kind_or_with_a_part_missing_are_refused() {
    let request = CollateralRequest::for_quote(AZURE_QUOTE).expect("request");

    // The sample platform's TCB info, for Azure's quote.
    let mut answers = served(AZURE_COLLATERAL);
    answers.tcb_info = served(SAMPLE_COLLATERAL).tcb_info;
    let e = assemble(&request, &answers).expect_err("another platform");
    assert!(matches!(e, PcsError::WrongSubject { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("TDX platform B0C06F000000, not the TDX platform 00806F050000"),
        "{e}"
    );

    // An SGX QE's identity in place of the TD QE's.
    let mut answers = served(AZURE_COLLATERAL);
    let body = String::from_utf8(answers.qe_identity.body.clone()).expect("UTF-8");
    answers.qe_identity.body = body
        .replacen(r#""id":"TD_QE""#, r#""id":"QE""#, 1)
        .into_bytes();
    let e = assemble(&request, &answers).expect_err("SGX QE");
    assert!(
        e.to_string().contains("QE identity answer is for QE"),
        "{e}"
    );

    let mut answers = served(AZURE_COLLATERAL);
    answers.qe_identity.issuer_chain = None;
    let e = assemble(&request, &answers).expect_err("no header");
    assert!(
        e.to_string().contains(QE_IDENTITY_ISSUER_CHAIN) && e.to_string().contains("missing"),
        "{e}"
    );

    let mut answers = served(AZURE_COLLATERAL);
    answers.pck_crl.issuer_chain = Some("not%20PEM".into());
    let e = assemble(&request, &answers).expect_err("header not PEM");
    assert!(
        e.to_string()
            .contains("PCK CRL answer's SGX-PCK-CRL-Issuer-Chain"),
        "{e}"
    );

    let mut answers = served(AZURE_COLLATERAL);
    answers.pck_crl.body = b"<html>maintenance</html>".to_vec();
    let e = assemble(&request, &answers).expect_err("not a CRL");
    assert!(
        e.to_string().contains("PCK CRL answer") && e.to_string().contains("neither a DER CRL"),
        "{e}"
    );

    let mut answers = served(AZURE_COLLATERAL);
    let body = String::from_utf8(answers.tcb_info.body.clone()).expect("UTF-8");
    let cut = body.rfind('"').expect("signature's closing quote");
    answers.tcb_info.body = format!("{}\"}}", &body[..cut - 2]).into_bytes();
    let e = assemble(&request, &answers).expect_err("short signature");
    assert!(
        e.to_string().contains("signature of 63 bytes, not 64"),
        "{e}"
    );

    let mut answers = served(AZURE_COLLATERAL);
    answers.tcb_info.body = b"{\"tcbInfo\":".to_vec();
    let e = assemble(&request, &answers).expect_err("cut JSON");
    assert!(e.to_string().contains("TCB info answer is not what"), "{e}");
}

#[test]
fn a_changed_tcb_info_assembles_and_the_verifier_refuses_it() {
    let request = CollateralRequest::for_quote(SAMPLE_QUOTE).expect("request");
    let mut answers = served(SAMPLE_COLLATERAL);
    let body = String::from_utf8(answers.tcb_info.body.clone()).expect("UTF-8");
    // One TCB level's status raised: what a forger would want.
    answers.tcb_info.body = body
        .replacen("\"OutOfDate\"", "\"UpToDate\"", 1)
        .into_bytes();
    assert_ne!(
        answers.tcb_info.body,
        body.as_bytes(),
        "the TCB info lists an OutOfDate level"
    );
    let forged = assemble(&request, &answers).expect("assembling believes nothing");
    let e = verify_sample(&forged).expect_err("Intel did not sign this");
    assert!(matches!(e, TdxVerifyError::BadSignature { .. }), "{e}");
}

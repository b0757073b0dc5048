//! Intel's collateral put together from PCS answers (`veil_attest::tdx::pcs`), on the
//! two recorded TD quotes and their recorded collateral (tests/data/tdx/README.md,
//! tests/data/azure/README.md): the request is read from the quote's PCK certificate,
//! the answers assemble into exactly the collateral Intel signed, and that collateral
//! verifies the quote. Answers for another platform, of another kind, or with a part
//! missing are refused, naming which; a changed TCB info assembles (nothing is believed
//! there) and the verifier refuses it.
//!
//! Then what a node does with fetched collateral: a verifier takes it in place of what
//! it holds only if Intel's chain holds for the node's own quote with it, and it is for
//! the platform held and of no older TCB evaluation.

mod pcs_support;

use pcs_support::served;
use veil_attest::tdx::pcs::{
    CollateralRequest, INTEL_PCS_URL, PckCa, PcsError, QE_IDENTITY_ISSUER_CHAIN, assemble,
};
use veil_attest::tdx::{
    CollateralRefresh, TdQuote, TdxEvidence, TdxPolicy, TdxVerifier, TdxVerifyError,
};
use veil_attest::{Evidence, PlatformPolicy, Verifier};

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

/// 2025-06-21: inside both recorded collaterals' dates (the sample's from 06-19, the
/// Azure platform's until 06-26).
const BOTH_VALID: u64 = 1_750_464_000;

fn sample_user_data() -> [u8; 32] {
    let td = TdQuote::parse(SAMPLE_QUOTE).expect("sample");
    let mut user_data = [0u8; 32];
    user_data.copy_from_slice(&td.report_data[..32]);
    user_data
}

fn verifier_at(now: u64) -> TdxVerifier {
    TdxVerifier::new(TdxPolicy {
        now: Some(now),
        ignore_report_data_tail: true,
        ..TdxPolicy::default()
    })
}

fn sample_evidence() -> Evidence {
    Evidence::Tdx(TdxEvidence {
        quote: SAMPLE_QUOTE.to_vec(),
        collateral: None,
    })
}

#[test]
fn fetched_collateral_is_taken_only_where_it_holds_for_the_nodes_own_quote() {
    // None held: taken, and the node's quotes verify with it.
    let mut v = verifier_at(SAMPLE_NOW);
    let e = v
        .verify(&sample_evidence(), &sample_user_data())
        .expect_err("no collateral yet");
    assert!(e.to_string().contains("none is configured"), "{e}");
    let taken = v
        .refresh_collateral(SAMPLE_COLLATERAL, SAMPLE_QUOTE)
        .expect("genuine");
    assert_eq!(
        taken,
        CollateralRefresh::Taken {
            fmspc: "B0C06F000000".into(),
            evaluation: 17
        }
    );
    v.verify(&sample_evidence(), &sample_user_data())
        .expect("verifies with the fetched collateral");

    // Forged (a TCB level raised), for another platform than the node's quote, or out
    // of date: refused by name, and what is held stays.
    let forged = SAMPLE_COLLATERAL.replacen("\\\"OutOfDate\\\"", "\\\"UpToDate\\\"", 1);
    assert_ne!(
        forged, SAMPLE_COLLATERAL,
        "the TCB info lists an OutOfDate level"
    );
    let e = v
        .refresh_collateral(&forged, SAMPLE_QUOTE)
        .expect_err("forged");
    assert!(matches!(e, TdxVerifyError::BadSignature { .. }), "{e}");
    let mut at_both = verifier_at(BOTH_VALID);
    let e = at_both
        .refresh_collateral(AZURE_COLLATERAL, SAMPLE_QUOTE)
        .expect_err("another platform's collateral for this quote");
    assert!(e.to_string().contains("FMSPC"), "{e}");
    let e = verifier_at(SAMPLE_NOW + 60 * 86_400)
        .refresh_collateral(SAMPLE_COLLATERAL, SAMPLE_QUOTE)
        .expect_err("expired");
    assert!(e.to_string().contains("expired"), "{e}");
    v.verify(&sample_evidence(), &sample_user_data())
        .expect("still the collateral taken before");
}

#[test]
fn held_collateral_of_another_platform_or_newer_in_any_part_is_kept() {
    // The policy's author chose collateral for the sample's platform; a node on
    // Azure's platform fetches its own: kept, named.
    let mut v = verifier_at(BOTH_VALID)
        .with_collateral_json(SAMPLE_COLLATERAL)
        .expect("collateral");
    assert_eq!(
        v.refresh_collateral(AZURE_COLLATERAL, AZURE_QUOTE)
            .expect("genuine for Azure's quote"),
        CollateralRefresh::KeptOtherPlatform {
            held: "B0C06F000000".into(),
            fetched: "00806F050000".into()
        }
    );

    // Held collateral of a later TCB evaluation (its number raised here: what is held
    // is not re-checked by this step) is not displaced by an older one the network
    // could replay; an equal or later one is taken.
    let later = SAMPLE_COLLATERAL.replacen(
        "\\\"tcbEvaluationDataNumber\\\":17",
        "\\\"tcbEvaluationDataNumber\\\":18",
        1,
    );
    assert_ne!(later, SAMPLE_COLLATERAL);
    let mut v = verifier_at(SAMPLE_NOW)
        .with_collateral_json(&later)
        .expect("collateral");
    assert_eq!(
        v.refresh_collateral(SAMPLE_COLLATERAL, SAMPLE_QUOTE)
            .expect("genuine"),
        CollateralRefresh::KeptNewer {
            part: "TCB info",
            held: (18, 1_750_328_163),
            fetched: (17, 1_750_328_163)
        }
    );
    // Nor by a PCK CRL older than the one held (one from before a revocation): here
    // the held set's PCK CRL is the later one of the sample's platform (not re-checked
    // by this step).
    let mut held = json(AZURE_COLLATERAL);
    held["pck_crl"] = json(SAMPLE_COLLATERAL)["pck_crl"].clone();
    let mut v = verifier_at(1_748_736_000)
        .with_collateral_json(&held.to_string())
        .expect("collateral");
    assert!(matches!(
        v.refresh_collateral(AZURE_COLLATERAL, AZURE_QUOTE),
        Ok(CollateralRefresh::KeptNewer {
            part: "PCK CRL",
            ..
        })
    ));

    let mut v = verifier_at(SAMPLE_NOW)
        .with_collateral_json(SAMPLE_COLLATERAL)
        .expect("collateral");
    assert!(matches!(
        v.refresh_collateral(SAMPLE_COLLATERAL, SAMPLE_QUOTE),
        Ok(CollateralRefresh::Taken { evaluation: 17, .. })
    ));
}

#[test]
fn a_policy_names_where_collateral_for_a_nodes_own_td_quote_is_missing() {
    let mut policy = PlatformPolicy {
        tdx: Some(TdxPolicy::default()),
        ..PlatformPolicy::default()
    };
    let slot = policy
        .missing_tdx_collateral(&sample_evidence())
        .expect("a TDX section without collateral");
    *slot = Some(SAMPLE_COLLATERAL.to_owned());
    assert!(policy.missing_tdx_collateral(&sample_evidence()).is_none());
    // A policy without a TDX section has nowhere to put it.
    assert!(
        PlatformPolicy::default()
            .missing_tdx_collateral(&sample_evidence())
            .is_none()
    );
}

#[test]
fn a_platform_verifier_offers_collateral_to_the_check_of_its_own_kind_of_td() {
    let own = Evidence::AzureTdx(pcs_support::recorded_azure_tdx());
    let mrtd = TdQuote::parse(AZURE_QUOTE).expect("quote").mr_td;
    let tdx_policy = TdxPolicy {
        allowed_mrtd: vec![mrtd],
        now: Some(1_748_736_000),
        allowed_tcb_status: vec!["OutOfDate".into()],
        ..TdxPolicy::default()
    };
    let policy = PlatformPolicy {
        azure_tdx: Some((tdx_policy.clone(), None)),
        profile: Some(veil_attest::Profile::AzureTdx),
        ..PlatformPolicy::default()
    };
    // No EK CA is involved in this profile; the TPM verifier's root never gets asked.
    let ek = veil_attest::tpm::EkTrust::from_pem(include_bytes!("data/snp/milan_ark.pem"))
        .expect("a root");
    let mut verifier = veil_attest::PlatformVerifier::new(
        veil_attest::tpm::TpmVerifier::new(ek),
        &policy,
        "test policy",
    )
    .expect("policy")
    .with_azure_tdx(TdxVerifier::new(tdx_policy));
    // Through the verifier aTLS uses, user data is 32 bytes and the recorded quote was
    // made over a 9-byte nonce: the furthest it can go is the nonce check, after the
    // TD quote's chain and the AK's signature.
    let e = verifier
        .verify(&own, &[7; 32])
        .expect_err("no collateral yet");
    assert!(e.to_string().contains("none is configured"), "{e}");
    // Plain TDX evidence has no check of its kind here: nothing to refresh.
    assert_eq!(
        verifier
            .refresh_tdx_collateral(&sample_evidence(), SAMPLE_COLLATERAL)
            .expect("no TDX section"),
        None
    );
    assert!(matches!(
        verifier.refresh_tdx_collateral(&own, AZURE_COLLATERAL),
        Ok(Some(CollateralRefresh::Taken { .. }))
    ));
    let e = verifier
        .verify(&own, &[7; 32])
        .expect_err("the recorded nonce");
    assert!(
        e.to_string()
            .contains("the vTPM quote was made for nonce 6368616c6c656e6765"),
        "with the collateral taken, all but the recorded nonce (\"challenge\") holds: {e}"
    );
}

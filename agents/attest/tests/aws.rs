//! The `aws-sev-snp` profile: NitroTPM has no EK certificate, so the AK is believed
//! because an SEV-SNP report (VLEK-signed on AWS's shared hosts) binds it and the
//! caller's data; then its quote. On a real TPM (swtpm) and recorded AWS reports:
//! the quote of an AK nobody activated verifies only through that path; evidence
//! without a report, or with a report that binds something else, is refused before
//! the quote is looked at.

mod support;

use support::{LocalCa, Swtpm};
use veil_attest::peer::cloud_policy_like_own;
use veil_attest::snp::{SnpEvidence, SnpProduct};
use veil_attest::tpm::{EkTrust, TpmAttester, TpmAttesterConfig, TpmVerifier, TpmVerifyError};
use veil_attest::{
    Attester, Evidence, HardwareEvidence, PlatformPolicy, PlatformVerifier, PlatformVerifyError,
    Profile, Verifier,
};

const NONCE: [u8; 32] = [0x24; 32];

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/snp/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn quote(tpm: &Swtpm) -> veil_attest::tpm::TpmEvidence {
    let mut config = TpmAttesterConfig::with_tcti(tpm.tcti());
    config.event_log = None;
    config.systemd_log = None;
    let mut att = TpmAttester::open(&config).expect("open swtpm");
    match att.evidence(&NONCE).expect("quote") {
        Evidence::Tpm(t) => t,
        _ => panic!("not TPM evidence"),
    }
}

/// The recorded v5 report's launch digest, pinned (it was asked for from VMPL 1).
fn aws_policy() -> PlatformVerifier {
    let report = data("aws-vlek-report-v5.bin");
    let policy = PlatformPolicy::from_json(
        "aws.json",
        &format!(
            r#"{{"profile": "aws-sev-snp",
                 "sevSnp": {{"product": "milan", "maxVmpl": 1, "measurements": ["{}"]}}}}"#,
            hex::encode(&report[0x90..0xc0])
        ),
    )
    .expect("policy");
    PlatformVerifier::new(TpmVerifier::new(EkTrust::default()), &policy, "aws.json")
        .expect("verifier")
}

#[test]
fn a_quote_of_an_unactivated_ak_verifies_only_as_hardware_bound() {
    let tpm = Swtpm::start(LocalCa::shared());
    let ev = quote(&tpm);
    // The ordinary path wants an activated AK.
    let e = TpmVerifier::new(EkTrust::default())
        .verify_tpm(&ev, &NONCE)
        .expect_err("not activated");
    assert!(matches!(e, TpmVerifyError::AkNotActivated { .. }), "{e}");
    // The hardware-bound path checks the AK's shape, the signature, nonce and PCRs.
    let v = TpmVerifier::verify_quote_of_hardware_bound_ak(&ev, &NONCE).expect("verifies");
    assert_eq!(v.pcrs.len(), 16);
    let e = TpmVerifier::verify_quote_of_hardware_bound_ak(&ev, &[0; 32]).expect_err("nonce");
    assert!(matches!(e, TpmVerifyError::NonceMismatch { .. }), "{e}");
    let mut bad = ev.clone();
    bad.quote[10] ^= 1;
    let e = TpmVerifier::verify_quote_of_hardware_bound_ak(&bad, &NONCE).expect_err("signature");
    assert!(matches!(e, TpmVerifyError::BadSignature { .. }), "{e}");
}

#[test]
fn under_the_aws_profile_the_snp_report_must_bind_the_ak_and_comes_first() {
    let tpm = Swtpm::start(LocalCa::shared());
    let v = aws_policy();
    assert!(!v.activates_ak());

    // A NitroTPM-like quote without a report: refused, whatever the quote says.
    let ev = quote(&tpm);
    let e = v
        .verify(&Evidence::Tpm(ev.clone()), &NONCE)
        .expect_err("no report");
    assert!(matches!(e, PlatformVerifyError::NoHardware), "{e}");

    // A genuine AWS report (VLEK chain to AMD) that binds another session's data, not
    // this AK: refused at the binding, so the quote is never believed.
    let mut with_report = ev;
    with_report.hardware = Some(HardwareEvidence::SevSnp(SnpEvidence {
        report: data("aws-vlek-report-v5.bin"),
        vcek: data("aws-vlek-v5.der"),
        cert_chain: None,
    }));
    let e = v
        .verify(&Evidence::Tpm(with_report), &NONCE)
        .expect_err("binds something else");
    assert!(matches!(e, PlatformVerifyError::Hardware { .. }), "{e}");
    assert!(e.to_string().contains("report_data"), "{e}");

    // The profile needs its sevSnp section with launch digests.
    let e = PlatformPolicy::from_json("aws.json", r#"{"profile": "aws-sev-snp"}"#)
        .expect_err("no sevSnp");
    assert!(e.to_string().contains("needs a \"sevSnp\" section"), "{e}");
}

/// A joiner on AWS derives what its join service must show from its own evidence
/// (`veil_attest::peer`): a quote whose AK its SEV-SNP report binds, under the AWS
/// profile, with its own launch digest and generation (from its VLEK). A TPM whose EK
/// is certified is not a cloud's: it activates, and derives nothing here.
#[test]
fn a_joiner_on_aws_asks_its_service_for_a_report_like_its_own() {
    let tpm = Swtpm::start(LocalCa::shared());
    let mut own = quote(&tpm);
    let certified = Evidence::Tpm(own.clone());
    let e = cloud_policy_like_own(&certified).expect_err("a certified EK");
    assert!(
        e.to_string()
            .contains("activated against its EK certificate"),
        "{e}"
    );

    own.ek_cert.clear();
    let report = data("aws-vlek-report-v5.bin");
    own.hardware = Some(HardwareEvidence::SevSnp(SnpEvidence {
        report: report.clone(),
        vcek: data("aws-vlek-v5.der"),
        cert_chain: None,
    }));
    let policy = cloud_policy_like_own(&Evidence::Tpm(own.clone())).expect("policy");
    assert_eq!(policy.profile, Some(Profile::AwsSevSnp));
    let snp = policy.sev_snp.as_ref().expect("a sevSnp section");
    assert_eq!(snp.product, SnpProduct::Milan, "the VLEK's generation");
    assert_eq!(
        snp.allowed_measurements,
        vec![<[u8; 48]>::try_from(&report[0x90..0xc0]).expect("48 bytes")]
    );
    let v = PlatformVerifier::new(TpmVerifier::new(EkTrust::default()), &policy, "derived")
        .expect("a policy the verifier takes");
    assert!(!v.activates_ak());
    // The recorded report binds another session's data, not this AK: refused there.
    let e = v
        .verify(&Evidence::Tpm(own), &NONCE)
        .expect_err("binds something else");
    assert!(e.to_string().contains("report_data"), "{e}");

    // Without a report there is nothing a cloud vouches for.
    let mut bare = quote(&tpm);
    bare.ek_cert.clear();
    let e = cloud_policy_like_own(&Evidence::Tpm(bare)).expect_err("no report");
    assert!(
        e.to_string().contains("neither an EK certificate nor"),
        "{e}"
    );
}

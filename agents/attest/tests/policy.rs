//! The platform policy at work on recorded real SEV-SNP and TDX evidence (the vectors of
//! tests/snp.rs and tests/tdx.rs): evidence of a platform the policy accepts reaches
//! that platform's verifier; any other platform is refused by name. A real swtpm
//! attaches a hardware report from a fake configfs-tsm entry (a test double of the
//! guest kernel's interface) to its quotes, as a confidential VM's vTPM would.

mod support;

use support::{LocalCa, Swtpm};
use veil_attest::cvm::ak_binding;
use veil_attest::snp::attester::{build_cert_table, cert_guids};
use veil_attest::snp::{SnpAttester, SnpCertChain, SnpEvidence, SnpPolicy};
use veil_attest::tdx::{TdQuote, TdxEvidence, TdxPolicy, TdxVerifier};
use veil_attest::tpm::{EkTrust, TpmAttester, TpmAttesterConfig, TpmEvidence, TpmVerifier};
use veil_attest::{
    Attester, Evidence, EvidencePlatform, HardwareAttester, HardwareEvidence, PlatformPolicy,
    PlatformVerifier, PlatformVerifyError, Verifier,
};

const SNP_REPORT_HEX: &str = include_str!("data/snp/report_milan.hex");
const VCEK_MILAN: &[u8] = include_bytes!("data/snp/vcek_milan.der");
const TDX_QUOTE: &[u8] = include_bytes!("data/tdx/tdx_quote.bin");
const TDX_COLLATERAL: &str = include_str!("data/tdx/tdx_quote_collateral.json");
/// Inside the TDX sample collateral's validity window (see tests/tdx.rs).
const TDX_NOW: u64 = 1_751_328_000;

fn snp() -> (Evidence, [u8; 32]) {
    let report = hex::decode(SNP_REPORT_HEX.trim()).expect("hex test vector");
    let mut user = [0u8; 32];
    user.copy_from_slice(&report[0x50..0x70]);
    let ev = Evidence::SevSnp(SnpEvidence {
        report,
        vcek: VCEK_MILAN.to_vec(),
        cert_chain: None::<SnpCertChain>,
    });
    (ev, user)
}

fn tdx() -> (Evidence, [u8; 32]) {
    let td = TdQuote::parse(TDX_QUOTE).expect("parse sample");
    let mut user = [0u8; 32];
    user.copy_from_slice(&td.report_data[..32]);
    let ev = Evidence::Tdx(TdxEvidence {
        quote: TDX_QUOTE.to_vec(),
        collateral: Some(TDX_COLLATERAL.to_owned()),
    });
    (ev, user)
}

fn tpm() -> TpmVerifier {
    TpmVerifier::new(EkTrust::default())
}

fn from_file(text: &str) -> PlatformVerifier {
    let policy = PlatformPolicy::from_json("policy.json", text).expect("policy parses");
    PlatformVerifier::new(tpm(), &policy, "policy.json").expect("verifier")
}

#[test]
fn snp_evidence_reaches_the_snp_verifier_only_where_the_policy_accepts_it() {
    let (ev, user) = snp();
    // The recorded report fills all 64 bytes of report_data (it was not made by
    // Veil's attester), so only this test policy relaxes the tail.
    let policy = PlatformPolicy {
        sev_snp: Some(SnpPolicy {
            require_zero_report_data_tail: false,
            ..SnpPolicy::default()
        }),
        azure_tdx: None,
        azure_sev_snp: None,
        tdx: None,
        tdx_collateral: None,
        require_hardware: false,
        profile: None,
        gcp: false,
    };
    let v = PlatformVerifier::new(tpm(), &policy, "test policy").expect("verifier");
    let verified = v.verify(&ev, &user).expect("recorded report verifies");
    assert_eq!(verified.platform, EvidencePlatform::SevSnp);
    let info = verified.snp.expect("SNP facts");
    assert_eq!(info.vmpl, 0);
    assert!(verified.pcrs.is_empty() && verified.tpm.is_none());

    let err = from_file("{}")
        .verify(&ev, &user)
        .expect_err("no sevSnp section");
    assert!(
        matches!(err, PlatformVerifyError::NotAccepted { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("SEV-SNP evidence"), "{err}");
    assert!(err.to_string().contains("\"sevSnp\" section"), "{err}");
}

#[test]
fn snp_policy_from_a_file_checks_the_chain_and_the_binding() {
    let (ev, user) = snp();
    // Turin's pinned roots do not sign a Milan VCEK.
    let err = from_file(r#"{"sevSnp": {"product": "turin"}}"#)
        .verify(&ev, &user)
        .expect_err("wrong product");
    let msg = err.to_string();
    assert!(
        msg.starts_with("SEV-SNP evidence refused: VCEK certificate chain not trusted"),
        "{msg}"
    );

    // Milan: chain and signature hold, and Veil's strict layout (32 bytes of user data,
    // 32 zero bytes) refuses this recorded report's report_data.
    let err = from_file(r#"{"sevSnp": {"product": "milan"}}"#)
        .verify(&ev, &user)
        .expect_err("report_data tail");
    let msg = err.to_string();
    assert!(msg.contains("report_data is"), "{msg}");
}

#[test]
fn tdx_evidence_reaches_the_tdx_verifier_only_where_the_policy_accepts_it() {
    let (ev, user) = tdx();
    let accepting = PlatformVerifier::tpm_only(tpm()).with_tdx(TdxVerifier::new(TdxPolicy {
        now: Some(TDX_NOW),
        ignore_report_data_tail: true,
        ..TdxPolicy::default()
    }));
    let verified = accepting
        .verify(&ev, &user)
        .expect("recorded quote verifies");
    assert_eq!(verified.platform, EvidencePlatform::Tdx);
    assert_eq!(verified.tdx.expect("TDX facts").tcb_status, "UpToDate");

    let err = from_file(r#"{"sevSnp": {"product": "milan"}}"#)
        .verify(&ev, &user)
        .expect_err("no tdx section");
    assert!(err.to_string().contains("\"tdx\" section"), "{err}");

    // A policy from a file checks at the real clock: the sample's collateral expired in
    // July 2025, and that is what the error says.
    let err = from_file(r#"{"tdx": {}}"#)
        .verify(&ev, &user)
        .expect_err("expired collateral");
    assert!(
        err.to_string()
            .starts_with("TDX evidence refused: TDX collateral not valid"),
        "{err}"
    );
}

#[test]
fn tpm_evidence_goes_to_the_tpm_verifier_whatever_the_policy() {
    // A quote from an AK nobody activated: the TPM verifier's own refusal, under the
    // platform prefix, with or without hardware sections.
    let ev = Evidence::Tpm(TpmEvidence {
        quote: vec![0xff, 0x54, 0x43, 0x47],
        signature: vec![0; 8],
        pcrs: Default::default(),
        ak_public: vec![0; 4],
        ek_public: vec![0; 4],
        ek_cert: vec![0; 4],
        event_log: None,
        systemd_log: None,
        hardware: None,
    });
    for text in ["{}", r#"{"sevSnp": {"product": "milan"}, "tdx": {}}"#] {
        let err = from_file(text)
            .verify(&ev, &[0; 32])
            .expect_err("unusable quote");
        assert!(matches!(err, PlatformVerifyError::Tpm(_)), "{err}");
        assert!(
            err.to_string().starts_with("TPM evidence refused: "),
            "{err}"
        );
    }
}

/// A configfs-tsm report entry, as the SEV-SNP guest driver shows it, answering with
/// the recorded report and its certificate table.
fn fake_snp_tsm(dir: &std::path::Path) {
    let entry = dir.join("veil-test");
    std::fs::create_dir(&entry).expect("mkdir");
    std::fs::write(entry.join("provider"), "sev_guest\n").expect("provider");
    std::fs::write(entry.join("generation"), "1\n").expect("generation");
    let (Evidence::SevSnp(recorded), _) = snp() else {
        unreachable!("snp() makes SNP evidence")
    };
    std::fs::write(entry.join("outblob"), &recorded.report).expect("outblob");
    let (vcek, _, _) = cert_guids();
    std::fs::write(
        entry.join("auxblob"),
        build_cert_table(&[(vcek, VCEK_MILAN)]),
    )
    .expect("auxblob");
}

fn accepting_recorded_snp(require_hardware: bool) -> PlatformPolicy {
    // The recorded report's launch digest (offset 0x90, 48 bytes), pinned.
    let report = hex::decode(SNP_REPORT_HEX.trim()).expect("hex test vector");
    let measurement: [u8; 48] = report[0x90..0xc0].try_into().expect("48 bytes");
    PlatformPolicy {
        sev_snp: Some(SnpPolicy {
            require_zero_report_data_tail: false,
            allowed_measurements: vec![measurement],
            ..SnpPolicy::default()
        }),
        azure_tdx: None,
        azure_sev_snp: None,
        tdx: None,
        tdx_collateral: None,
        require_hardware,
        profile: None,
        gcp: false,
    }
}

#[test]
fn a_cvm_quote_carries_a_report_over_its_ak_and_the_verifier_checks_that_binding() {
    let ca = LocalCa::shared();
    let swtpm = Swtpm::start(ca);
    let tsm = tempfile::tempdir().expect("tempdir");
    fake_snp_tsm(tsm.path());
    let mut config = TpmAttesterConfig::with_tcti(swtpm.tcti());
    config.event_log = None;
    config.systemd_log = None;
    config.hardware = Some(HardwareAttester::SevSnp(
        SnpAttester::new(tsm.path()).with_entry_name("veil-test"),
    ));
    let mut att = TpmAttester::open(&config).expect("open swtpm");

    let user = [0x5a; 32];
    let Evidence::Tpm(quote) = att.evidence(&user).expect("evidence") else {
        panic!("a TPM attester makes TPM evidence")
    };
    // The hardware was asked for a report over the AK and the user data.
    let mut inblob = ak_binding(&user, &att.identity().ak_public).to_vec();
    inblob.extend_from_slice(&[0; 32]);
    let asked = std::fs::read(tsm.path().join("veil-test/inblob")).expect("inblob");
    assert_eq!(asked, inblob);
    assert!(matches!(quote.hardware, Some(HardwareEvidence::SevSnp(_))));

    let mut tpm = TpmVerifier::new(ca.trust());
    let (challenge, pending) = tpm.challenge(att.identity()).expect("challenge");
    let secret = att.activate(&challenge).expect("activate");
    tpm.add_trusted_ak(pending.finish(&secret).expect("secret matches"));
    let verifier = |policy: &PlatformPolicy| {
        let mut v = PlatformVerifier::new(TpmVerifier::new(ca.trust()), policy, "test policy")
            .expect("verifier");
        let ak = tpm
            .trusted_ak(&quote_ak_name(&quote))
            .expect("activated")
            .clone();
        v.tpm_mut().add_trusted_ak(ak);
        v
    };
    let ev = Evidence::Tpm(quote.clone());

    // The fake hands out a genuine report that binds other data: the chain and the
    // signature hold, the binding to this AK and this user data does not.
    let err = verifier(&accepting_recorded_snp(false))
        .verify(&ev, &user)
        .expect_err("report binds something else");
    let msg = err.to_string();
    assert!(
        msg.starts_with("the SEV-SNP report attached to the TPM quote is refused: report_data is"),
        "{msg}"
    );
    assert!(
        msg.contains(&hex::encode(ak_binding(&user, &quote.ak_public))),
        "{msg}"
    );

    // A policy without an SNP section does not take the attached report on faith.
    let err = verifier(&PlatformPolicy::default())
        .verify(&ev, &user)
        .expect_err("no sevSnp section");
    assert!(
        matches!(err, PlatformVerifyError::NotAccepted { .. }),
        "{err}"
    );

    // Without the report: accepted as a plain TPM quote, unless hardware is required.
    let mut bare = quote.clone();
    bare.hardware = None;
    let bare = Evidence::Tpm(bare);
    let ok = verifier(&accepting_recorded_snp(false))
        .verify(&bare, &user)
        .expect("plain TPM quote");
    assert_eq!(ok.platform, EvidencePlatform::Tpm);
    assert!(ok.snp.is_none());
    let err = verifier(&accepting_recorded_snp(true))
        .verify(&bare, &user)
        .expect_err("hardware required");
    assert!(matches!(err, PlatformVerifyError::NoHardware), "{err}");
}

/// The AK's name (nameAlg || SHA-256 of its public area), as the verifier keys it.
fn quote_ak_name(quote: &TpmEvidence) -> Vec<u8> {
    veil_attest::tpm::public::TpmPublic::from_tpm2b(&quote.ak_public)
        .and_then(|p| p.name())
        .expect("AK public area")
}

#[test]
fn tdx_collateral_in_the_policy_serves_quotes_that_carry_none() {
    let (Evidence::Tdx(mut bare), user) = tdx() else {
        unreachable!("tdx() makes TDX evidence")
    };
    bare.collateral = None;
    let bare = Evidence::Tdx(bare);

    let err = from_file(r#"{"tdx": {}}"#)
        .verify(&bare, &user)
        .expect_err("no collateral anywhere");
    assert!(err.to_string().contains("none is configured"), "{err}");

    // With the policy's collateral the quote gets as far as its validity window (the
    // sample collateral expired in July 2025; this verifier reads the real clock).
    let with = format!(r#"{{"tdx": {{"collateral": {TDX_COLLATERAL}}}}}"#);
    let err = from_file(&with)
        .verify(&bare, &user)
        .expect_err("expired collateral");
    assert!(
        err.to_string().contains("TDX collateral not valid"),
        "{err}"
    );
    assert!(!err.to_string().contains("none is configured"), "{err}");

    let policy = PlatformPolicy::from_json("p.json", r#"{"tdx": {"collateral": {"x": 1}}}"#)
        .expect("parses as JSON");
    let err = PlatformVerifier::new(tpm(), &policy, "p.json").expect_err("not collateral");
    assert!(
        err.to_string()
            .starts_with("p.json: the TDX collateral cannot be used"),
        "{err}"
    );
}

//! The `azure-sev-snp` verification on recorded real evidence from Azure CVMs
//! (tests/data/azure/README.md: the trustee project's test data, Apache-2.0): the
//! genuine evidence of a Milan and of a Genoa host verifies under AMD's pinned roots,
//! through the HCL report's runtime data to the vTPM quote; a flipped byte anywhere,
//! another VM's quote, a TDX report, another nonce or another generation's roots is
//! refused, naming what failed.

use std::collections::BTreeMap;

use base64::Engine as _;
use veil_attest::azure::{
    AzureError, AzureSnpEvidence, HclKind, HclReport, thim_vcek, verify_azure_snp, verify_azure_tdx,
};
use veil_attest::peer::cloud_policy_like_own;
use veil_attest::snp::{SnpPolicy, SnpProduct, SnpVerifier};
use veil_attest::tdx::TdQuote;
use veil_attest::tpm::quote::Quote;
use veil_attest::tpm::quote::QuoteBindingError;
use veil_attest::tpm::{EkTrust, TpmVerifier};
use veil_attest::{
    Digest32, Evidence, PlatformPolicy, PlatformVerifier, PlatformVerifyError, Profile, Verifier,
};

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/azure/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn evidence(host: &str) -> AzureSnpEvidence {
    AzureSnpEvidence {
        hcl_report: data(&format!("{host}-hcl-report.bin")),
        vcek: data(&format!("{host}-vcek.der")),
        cert_chain: None,
        quote: data(&format!("{host}-quote.bin")),
        signature: data(&format!("{host}-quote.sig")),
        pcrs: data(&format!("{host}-quote-pcrs.bin"))
            .chunks(32)
            .enumerate()
            .map(|(i, v)| (i as u32, Digest32(v.try_into().expect("32 bytes"))))
            .collect::<BTreeMap<u32, Digest32>>(),
    }
}

fn verifier(product: SnpProduct) -> SnpVerifier {
    SnpVerifier::new(SnpPolicy {
        product,
        ..SnpPolicy::default()
    })
    .expect("pinned roots")
}

const NONCE: &[u8] = b"challenge";

#[test]
fn a_milan_cvms_evidence_verifies_from_amds_root_to_its_pcrs() {
    let ev = evidence("milan");
    let v = verify_azure_snp(&ev, &verifier(SnpProduct::Milan), NONCE).expect("verifies");
    assert_eq!(v.snp.vmpl, 0, "the paravisor's report comes from VMPL 0");
    assert_eq!(v.pcrs.len(), 24);
    assert_eq!(v.vm_configuration["secure-boot"], true);
    assert_eq!(
        v.vm_configuration["vmUniqueId"],
        "26F8BC30-774E-4290-8E7A-535F3B672AEE"
    );
}

#[test]
fn a_genoa_cvms_evidence_verifies_under_the_genoa_roots_only() {
    let ev = evidence("genoa");
    let nonce = Quote::parse(&ev.quote).expect("quote").extra_data;
    let genoa = verify_azure_snp(&ev, &verifier(SnpProduct::Genoa), &nonce).expect("verifies");
    // Each VM's paravisor AK is its own: what a join service knows the VM by.
    let milan = verify_azure_snp(&evidence("milan"), &verifier(SnpProduct::Milan), NONCE)
        .expect("verifies");
    assert_ne!(genoa.runtime.ak_sha256(), milan.runtime.ak_sha256());
    let e = verify_azure_snp(&ev, &verifier(SnpProduct::Milan), &nonce)
        .expect_err("a Genoa VCEK under Milan's roots");
    assert!(matches!(e, AzureError::Snp(_)), "{e}");
    assert!(e.to_string().contains("Milan"), "{e}");
}

#[test]
fn another_nonce_a_changed_pcr_or_a_changed_quote_is_refused() {
    let milan = verifier(SnpProduct::Milan);
    let e = verify_azure_snp(&evidence("milan"), &milan, b"another").expect_err("nonce");
    assert!(
        matches!(e, AzureError::Quote(QuoteBindingError::Nonce { .. })),
        "{e}"
    );

    let mut ev = evidence("milan");
    ev.pcrs.entry(7).and_modify(|v| v.0[0] ^= 1);
    let e = verify_azure_snp(&ev, &milan, NONCE).expect_err("pcr");
    assert!(
        matches!(e, AzureError::Quote(QuoteBindingError::PcrDigest { .. })),
        "{e}"
    );

    let mut ev = evidence("milan");
    let last = ev.quote.len() - 1;
    ev.quote[last] ^= 1;
    let e = verify_azure_snp(&ev, &milan, NONCE).expect_err("quote");
    assert!(matches!(e, AzureError::QuoteSignature(_)), "{e}");
}

#[test]
fn a_quote_by_another_vms_ak_is_refused() {
    let genoa = evidence("genoa");
    let ev = AzureSnpEvidence {
        quote: genoa.quote,
        signature: genoa.signature,
        pcrs: genoa.pcrs,
        ..evidence("milan")
    };
    let nonce = Quote::parse(&ev.quote).expect("quote").extra_data;
    let e = verify_azure_snp(&ev, &verifier(SnpProduct::Milan), &nonce).expect_err("swap");
    assert!(matches!(e, AzureError::QuoteSignature(_)), "{e}");
    assert!(
        e.to_string()
            .contains("not signed by the AK that the HCL report names"),
        "{e}"
    );
}

#[test]
fn a_flipped_byte_in_the_report_runtime_data_or_vcek_is_named() {
    let milan = verifier(SnpProduct::Milan);
    // The SNP report's measurement: its signature no longer holds.
    let mut ev = evidence("milan");
    ev.hcl_report[32 + 0x90] ^= 1;
    let e = verify_azure_snp(&ev, &milan, NONCE).expect_err("report");
    assert!(matches!(e, AzureError::Snp(_)), "{e}");
    assert!(e.to_string().contains("signature"), "{e}");

    // The runtime data (here inside the AK's modulus): the report no longer binds it.
    let mut ev = evidence("milan");
    ev.hcl_report[32 + 1184 + 20 + 200] ^= 1;
    let e = verify_azure_snp(&ev, &milan, NONCE).expect_err("runtime data");
    assert!(matches!(e, AzureError::Snp(_)), "{e}");
    assert!(e.to_string().contains("report_data is"), "{e}");

    // The VCEK's signature: it no longer chains to the pinned ASK.
    let mut ev = evidence("milan");
    let n = ev.vcek.len() - 10;
    ev.vcek[n] ^= 1;
    let e = verify_azure_snp(&ev, &milan, NONCE).expect_err("vcek");
    assert!(matches!(e, AzureError::Snp(_)), "{e}");
    assert!(e.to_string().contains("VCEK"), "{e}");
}

#[test]
fn malformed_or_foreign_hcl_reports_are_refused_by_what_is_wrong() {
    let good = data("milan-hcl-report.bin");
    let e = HclReport::parse(&good[..1000]).expect_err("truncated");
    assert!(e.to_string().contains("shorter than its fixed part"), "{e}");
    let mut bad = good.clone();
    bad[0] = b'X';
    let e = HclReport::parse(&bad).expect_err("signature");
    assert!(e.to_string().contains("not HCLA"), "{e}");
    let mut bad = good.clone();
    bad[32 + 1184 + 17] = 0xff; // the runtime data's length
    let e = HclReport::parse(&bad).expect_err("length");
    assert!(e.to_string().contains("runtime data of"), "{e}");

    // A TDX CVM's report under the SEV-SNP profile.
    let tdx = data("tdx-hcl-report.bin");
    assert_eq!(HclReport::parse(&tdx).expect("tdx").kind(), HclKind::Tdx);
    let ev = AzureSnpEvidence {
        hcl_report: tdx,
        ..evidence("milan")
    };
    let e = verify_azure_snp(&ev, &verifier(SnpProduct::Milan), NONCE).expect_err("tdx");
    assert!(
        matches!(
            e,
            AzureError::WrongKind {
                got: "TDX",
                want: "SEV-SNP"
            }
        ),
        "{e}"
    );
}

/// The launch measurement in a recorded HCL report (the paravisor's, SHA-384).
fn measurement(host: &str) -> String {
    hex::encode(&data(&format!("{host}-hcl-report.bin"))[32 + 0x90..32 + 0x90 + 48])
}

fn platform_verifier(policy: &str) -> PlatformVerifier {
    let policy = PlatformPolicy::from_json("policy.json", policy).expect("policy");
    // No EK CA is involved in this profile; the TPM verifier's root never gets asked.
    let ek = EkTrust::from_pem(include_bytes!("data/snp/milan_ark.pem")).expect("a root");
    PlatformVerifier::new(TpmVerifier::new(ek), &policy, "policy.json").expect("verifier")
}

#[test]
fn the_evidence_crosses_the_wire_as_its_own_kind_and_back() {
    let ev = Evidence::AzureSevSnp(evidence("genoa"));
    let bytes = ev.encode();
    let text = String::from_utf8(bytes.clone()).expect("JSON");
    assert!(text.contains(r#""kind":"azure-sev-snp""#), "{text}");
    assert_eq!(Evidence::decode(&bytes).expect("decodes"), ev);
    // A body with a field Veil does not know is refused, not ignored.
    let extra = text.replacen(r#""hclReport""#, r#""surprise":1,"hclReport""#, 1);
    let e = Evidence::decode(extra.as_bytes()).expect_err("unknown field");
    assert!(e.to_string().contains("surprise"), "{e}");
}

/// Through the verifier the aTLS handshake uses. Its user data is 32 bytes, and the
/// recorded quotes were made over other nonces (9 and 48 bytes): so the furthest a
/// recorded quote can go is the nonce check, which comes after the SNP report, its
/// VCEK chain, the runtime-data binding and the AK's signature have all held.
#[test]
fn under_the_azure_profile_everything_but_the_recorded_nonce_holds() {
    let v = platform_verifier(&format!(
        r#"{{"azureSevSnp": {{"product": "genoa", "measurements": ["{}"]}}}}"#,
        measurement("genoa")
    ));
    let ev = Evidence::AzureSevSnp(evidence("genoa"));
    let e = v.verify(&ev, &[7; 32]).expect_err("recorded nonce");
    let PlatformVerifyError::Azure(AzureError::Quote(QuoteBindingError::Nonce { expected, got })) =
        &e
    else {
        panic!("not the nonce: {e}");
    };
    assert_eq!(expected, &hex::encode([7; 32]));
    assert_eq!(got.len(), 96, "the recorded 48-byte nonce: {got}");
}

#[test]
fn another_paravisor_measurement_is_refused() {
    let v = platform_verifier(&format!(
        r#"{{"azureSevSnp": {{"product": "genoa", "measurements": ["{}"]}}}}"#,
        measurement("milan")
    ));
    let e = v
        .verify(&Evidence::AzureSevSnp(evidence("genoa")), &[7; 32])
        .expect_err("measurement");
    assert!(
        matches!(e, PlatformVerifyError::Azure(AzureError::Snp(_))),
        "{e}"
    );
    assert!(e.to_string().contains("measurement"), "{e}");
}

#[test]
fn evidence_of_one_profile_is_refused_under_another() {
    let genoa = evidence("genoa");
    let hcl = HclReport::parse(&genoa.hcl_report).expect("hcl");
    // Azure evidence where only bare SEV-SNP reports are accepted.
    let bare_snp = platform_verifier(&format!(
        r#"{{"sevSnp": {{"product": "genoa", "measurements": ["{}"]}}}}"#,
        measurement("genoa")
    ));
    let e = bare_snp
        .verify(&Evidence::AzureSevSnp(genoa.clone()), &[7; 32])
        .expect_err("azure under sevSnp");
    assert!(e.to_string().contains("no \"azureSevSnp\" section"), "{e}");
    // The paravisor's SNP report, taken out and sent bare, under the Azure profile.
    let azure = platform_verifier(&format!(
        r#"{{"azureSevSnp": {{"product": "genoa", "measurements": ["{}"]}}}}"#,
        measurement("genoa")
    ));
    let bare = Evidence::SevSnp(veil_attest::SnpEvidence {
        report: hcl.hw_report().to_vec(),
        vcek: genoa.vcek.clone(),
        cert_chain: None,
    });
    let e = azure
        .verify(&bare, &hcl.runtime_data_sha256())
        .expect_err("bare snp under azureSevSnp");
    assert!(e.to_string().contains("no \"sevSnp\" section"), "{e}");
}

#[test]
fn an_azure_section_without_measurements_or_above_vmpl_0_is_refused() {
    for (text, needle) in [
        (
            r#"{"azureSevSnp": {"product": "milan"}}"#.to_owned(),
            "needs its \"measurements\"",
        ),
        (
            format!(
                r#"{{"azureSevSnp": {{"product": "milan", "maxVmpl": 2, "measurements": ["{}"]}}}}"#,
                measurement("milan")
            ),
            "only a report from VMPL 0",
        ),
    ] {
        let e = PlatformPolicy::from_json("site.json", &text).expect_err(&text);
        assert!(e.to_string().contains(needle), "{e}");
    }
    let ok = PlatformPolicy::from_json(
        "site.json",
        &format!(
            r#"{{"requireHardware": true, "azureSevSnp": {{"product": "milan", "measurements": ["{}"]}}}}"#,
            measurement("milan")
        ),
    )
    .expect("an Azure-only strict policy");
    assert_eq!(ok.accepts(), "azure-sev-snp");
}

#[test]
fn a_profile_takes_its_own_evidence_kind_only_whatever_else_the_sections_allow() {
    let m = measurement("genoa");
    let sections = format!(
        r#""azureSevSnp": {{"product": "genoa", "measurements": ["{m}"]}},
           "sevSnp": {{"product": "genoa", "measurements": ["{m}"]}}"#
    );
    let genoa = evidence("genoa");
    let hcl = HclReport::parse(&genoa.hcl_report).expect("hcl");
    let bare = Evidence::SevSnp(veil_attest::SnpEvidence {
        report: hcl.hw_report().to_vec(),
        vcek: genoa.vcek.clone(),
        cert_chain: None,
    });

    // Under azure-sev-snp, the paravisor's report sent bare is refused by kind, though
    // the sevSnp section alone would have taken it.
    let azure = platform_verifier(&format!(r#"{{"profile": "azure-sev-snp", {sections}}}"#));
    let e = azure
        .verify(&bare, &hcl.runtime_data_sha256())
        .expect_err("bare SNP under azure-sev-snp");
    assert!(matches!(e, PlatformVerifyError::WrongProfile { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("presented sev-snp evidence, but nodes under profile \"azure-sev-snp\" must present azure-sev-snp evidence"),
        "{e}"
    );
    assert!(!azure.activates_ak());

    // Under qemu, Azure evidence is refused by kind before anything is checked.
    let qemu = platform_verifier(&format!(r#"{{"profile": "qemu", {sections}}}"#));
    let e = qemu
        .verify(&Evidence::AzureSevSnp(genoa), &[7; 32])
        .expect_err("azure under qemu");
    assert!(matches!(e, PlatformVerifyError::WrongProfile { .. }), "{e}");
    assert!(qemu.activates_ak());
}

#[test]
fn a_profile_without_its_section_or_an_unknown_one_is_refused_when_read() {
    for (text, needle) in [
        (
            r#"{"profile": "azure-sev-snp"}"#,
            "needs an \"azureSevSnp\" section",
        ),
        (r#"{"profile": "azure"}"#, "'azure' is not a profile"),
    ] {
        let e = PlatformPolicy::from_json("site.json", text).expect_err(text);
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
}

#[test]
fn the_vcek_comes_out_of_the_metadata_services_answer_and_bad_answers_are_named() {
    let der = data("milan-vcek.der");
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD
            .encode(&der)
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The shape THIM answers with (the chain and TCB fields are not needed).
    let answer = serde_json::json!({
        "vcekCert": pem, "certificateChain": "-----BEGIN CERTIFICATE-----…", "tcbm": "DB18000000000004"
    });
    let got = thim_vcek(answer.to_string().as_bytes()).expect("vcek");
    assert_eq!(got, der);
    for (bad, needle) in [
        (&b"{}"[..], "missing field `vcekCert`"),
        (&br#"{"vcekCert": "hello"}"#[..], "not one PEM certificate"),
        (
            &br#"{"vcekCert": "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"}"#[..],
            "vcekCert: ",
        ),
    ] {
        let e = thim_vcek(bad).expect_err("bad answer");
        assert!(matches!(e, AzureError::Thim(_)), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
}

fn tdx_evidence() -> veil_attest::azure::AzureTdxEvidence {
    veil_attest::azure::AzureTdxEvidence {
        hcl_report: data("tdx-hcl-report.bin"),
        td_quote: data("tdx-td-quote.bin"),
        quote: data("tdx-quote.bin"),
        signature: data("tdx-quote.sig"),
        pcrs: data("tdx-quote-pcrs.bin")
            .chunks(32)
            .enumerate()
            .map(|(i, v)| (i as u32, Digest32(v.try_into().expect("32 bytes"))))
            .collect(),
    }
}

/// The recorded TD quote's MRTD (Azure's TDX paravisor).
fn td_mrtd() -> String {
    let q = TdQuote::parse(&data("tdx-td-quote.bin")).expect("TD quote");
    hex::encode(q.mr_td)
}

#[test]
fn an_azure_tdx_cvms_chain_holds_up_to_intels_verdict_on_its_td_quote() {
    let ev = tdx_evidence();
    let hcl = HclReport::parse(&ev.hcl_report).expect("HCL report");
    assert_eq!(hcl.kind(), HclKind::Tdx);
    // The TD quote the metadata service made binds the runtime data…
    let q = veil_attest::tdx::TdQuote::parse(&ev.td_quote).expect("TD quote");
    assert_eq!(q.report_data[..32], hcl.runtime_data_sha256());
    assert_eq!(q.report_data[32..], [0; 32]);
    // …whose AK signed the vTPM quote over the recorded nonce.
    let runtime = hcl.runtime().expect("runtime data");
    let pcrs = ev.pcrs.iter().map(|(i, v)| (*i, v.0)).collect();
    veil_attest::azure::verify_rsa_quote(&runtime.ak, &ev.quote, &ev.signature, NONCE, &pcrs)
        .expect("the AK's quote verifies");
    // The Milan CVM's AK did not sign it.
    let milan = HclReport::parse(&data("milan-hcl-report.bin"))
        .expect("milan")
        .runtime()
        .expect("runtime");
    let e = veil_attest::azure::verify_rsa_quote(&milan.ak, &ev.quote, &ev.signature, NONCE, &pcrs)
        .expect_err("another AK");
    assert!(matches!(e, AzureError::QuoteSignature(_)), "{e}");

    // The whole check asks Intel's verdict on the TD quote first. Collateral for
    // another platform is refused as such.
    // The TD's TCB (module 1.x at ISVSVN 2, TDX component 2 at 6) is out of date by
    // this collateral of 2025: it is accepted here only because the policy says so.
    let verifier_with = |collateral: &str, now: u64, status: &[&str]| {
        let policy = veil_attest::tdx::TdxPolicy {
            allowed_mrtd: vec![q.mr_td],
            now: Some(now),
            allowed_tcb_status: status.iter().map(|s| s.to_string()).collect(),
            ..veil_attest::tdx::TdxPolicy::default()
        };
        veil_attest::tdx::TdxVerifier::new(policy)
            .with_collateral_json(collateral)
            .expect("collateral parses")
    };
    let verifier = |collateral: &str, now: u64| verifier_with(collateral, now, &["OutOfDate"]);
    let read = |path: &str| {
        std::fs::read_to_string(format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR")))
            .expect("collateral")
    };
    let other = read("tdx/tdx_quote_collateral.json");
    let e = verify_azure_tdx(&ev, &verifier(&other, 1_751_328_000), NONCE)
        .expect_err("another platform's collateral");
    assert!(matches!(e, AzureError::Tdx(_)), "{e}");
    assert!(e.to_string().contains("FMSPC b0c06f000000"), "{e}");

    // With Intel's collateral for this platform (FMSPC 00806F050000, signed by Intel,
    // valid 2025-05-27 to 06-26), at a time inside it, the whole chain holds: the PCK
    // chain and CRLs, the QE report, the quote's signature, the TCB level. Azure's
    // paravisor TD runs without SEPT_VE_DISABLE (it takes #VE for the guest it
    // partitions); the azure-tdx check takes that, the plain TDX check does not.
    let own = read("azure/tdx-collateral-00806f050000.json");
    let june_2025 = 1_748_736_000;
    let verified = verify_azure_tdx(&ev, &verifier(&own, june_2025), NONCE).expect("genuine");
    assert_eq!(verified.platform, veil_attest::EvidencePlatform::AzureTdx);
    let tdx = verified.tdx.as_ref().expect("TDX facts");
    assert_eq!(tdx.mr_td, q.mr_td);
    assert_eq!(tdx.tcb_status, "OutOfDate");
    let e = verify_azure_tdx(&ev, &verifier_with(&own, june_2025, &["UpToDate"]), NONCE)
        .expect_err("an out-of-date TCB under the default policy");
    assert!(
        matches!(&e, AzureError::Tdx(veil_attest::tdx::TdxVerifyError::TcbStatus { got, .. }) if got == "OutOfDate"),
        "{e}"
    );
    assert_eq!(
        tdx.td_attributes[3] & (1 << 4),
        0,
        "SEPT_VE_DISABLE is clear"
    );
    assert!(verified.azure.is_some());
    let plain = verifier(&own, june_2025)
        .verify_tdx(
            &veil_attest::tdx::TdxEvidence {
                quote: ev.td_quote.clone(),
                collateral: None,
            },
            &hcl.runtime_data_sha256(),
        )
        .expect_err("a plain TD must disable SEPT #VE");
    assert!(plain.to_string().contains("SEPT_VE_DISABLE"), "{plain}");
    // Without the paravisor's MRTD pinned, the TD is not taken at all.
    let unpinned = veil_attest::tdx::TdxVerifier::new(veil_attest::tdx::TdxPolicy {
        allowed_tcb_status: vec!["OutOfDate".into()],
        now: Some(june_2025),
        ..veil_attest::tdx::TdxPolicy::default()
    })
    .with_collateral_json(&own)
    .expect("collateral parses");
    let e = verify_azure_tdx(&ev, &unpinned, NONCE).expect_err("no MRTD pinned");
    assert!(e.to_string().contains("MRTDs pinned"), "{e}");
    // Outside the collateral's dates, or with its TCB info changed, it is refused.
    let e = verify_azure_tdx(&ev, &verifier(&own, june_2025 + 60 * 86_400), NONCE)
        .expect_err("expired collateral");
    assert!(e.to_string().contains("expired"), "{e}");
    let forged = own.replacen(
        "\\\"tcbEvaluationDataNumber\\\":17",
        "\\\"tcbEvaluationDataNumber\\\":18",
        1,
    );
    assert_ne!(
        forged, own,
        "the TCB info holds an evaluation number to change"
    );
    let e =
        verify_azure_tdx(&ev, &verifier(&forged, june_2025), NONCE).expect_err("changed TCB info");
    assert!(e.to_string().contains("TCB info signature"), "{e}");
    // A flipped byte in the TD quote's signature, or in its TD report, is refused.
    for (offset, what) in [(636, "signature"), (48 + 136, "MRTD")] {
        let mut bad = tdx_evidence();
        bad.td_quote[offset] ^= 1;
        let e = verify_azure_tdx(&bad, &verifier(&own, june_2025), NONCE).expect_err(what);
        assert!(e.to_string().contains("does not verify"), "{what}: {e}");
    }

    // An SEV-SNP CVM's HCL report under the TDX check.
    let snp = veil_attest::azure::AzureTdxEvidence {
        hcl_report: data("milan-hcl-report.bin"),
        ..tdx_evidence()
    };
    let e = verify_azure_tdx(&snp, &verifier(&own, june_2025), NONCE).expect_err("SNP");
    assert!(
        matches!(
            e,
            AzureError::WrongKind {
                got: "SEV-SNP",
                want: "TDX"
            }
        ),
        "{e}"
    );
}

#[test]
fn azure_tdx_evidence_has_its_own_kind_section_and_profile() {
    let ev = Evidence::AzureTdx(tdx_evidence());
    let bytes = ev.encode();
    assert!(String::from_utf8_lossy(&bytes).contains(r#""kind":"azure-tdx""#));
    assert_eq!(Evidence::decode(&bytes).expect("decodes"), ev);

    let m = measurement("genoa");
    let mrtd = td_mrtd();
    // Under azure-sev-snp it is refused by kind.
    let v = platform_verifier(&format!(
        r#"{{"profile": "azure-sev-snp", "azureSevSnp": {{"product": "genoa", "measurements": ["{m}"]}},
           "azureTdx": {{"mrtd": ["{mrtd}"]}}}}"#
    ));
    let e = v.verify(&ev, &[7; 32]).expect_err("wrong profile");
    assert!(matches!(e, PlatformVerifyError::WrongProfile { .. }), "{e}");
    // Without an azureTdx section it is not accepted at all.
    let v = platform_verifier(&format!(
        r#"{{"azureSevSnp": {{"product": "genoa", "measurements": ["{m}"]}}}}"#
    ));
    let e = v.verify(&ev, &[7; 32]).expect_err("no section");
    assert!(e.to_string().contains("no \"azureTdx\" section"), "{e}");
    // Under its profile it reaches Intel's verdict (no collateral here at all).
    let v = platform_verifier(&format!(
        r#"{{"profile": "azure-tdx", "azureTdx": {{"mrtd": ["{mrtd}"]}}}}"#
    ));
    let e = v.verify(&ev, &[7; 32]).expect_err("no collateral");
    assert!(
        matches!(e, PlatformVerifyError::AzureTdx(AzureError::Tdx(_))),
        "{e}"
    );
    // With Intel's collateral at a time inside it, everything holds up to the vTPM
    // quote's nonce, which is the recorded one, not this session's.
    let collateral = std::fs::read_to_string(format!(
        "{}/tests/data/azure/tdx-collateral-00806f050000.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("collateral");
    let tdx = veil_attest::tdx::TdxVerifier::new(veil_attest::tdx::TdxPolicy {
        allowed_mrtd: vec![
            TdQuote::parse(&data("tdx-td-quote.bin"))
                .expect("quote")
                .mr_td,
        ],
        allowed_tcb_status: vec!["OutOfDate".into()],
        now: Some(1_748_736_000),
        ..veil_attest::tdx::TdxPolicy::default()
    })
    .with_collateral_json(&collateral)
    .expect("collateral parses");
    let e = v
        .with_azure_tdx(tdx)
        .verify(&ev, &[7; 32])
        .expect_err("recorded nonce");
    assert!(
        matches!(
            e,
            PlatformVerifyError::AzureTdx(AzureError::Quote(QuoteBindingError::Nonce { .. }))
        ),
        "{e}"
    );

    for (text, needle) in [
        (
            r#"{"profile": "azure-tdx"}"#,
            "needs an \"azureTdx\" section",
        ),
        (
            r#"{"azureTdx": {}}"#,
            "\"azureTdx\" section needs its \"mrtd\"",
        ),
    ] {
        let e = PlatformPolicy::from_json("site.json", text).expect_err(text);
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
}

#[test]
fn the_td_quote_request_carries_the_td_report_and_the_answer_is_checked() {
    let hcl = data("tdx-hcl-report.bin");
    let report = HclReport::parse(&hcl).expect("HCL report");
    let body: serde_json::Value =
        serde_json::from_slice(&veil_attest::azure::td_quote_request(report.hw_report()))
            .expect("JSON");
    let sent = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body["report"].as_str().expect("report"))
        .expect("base64url");
    assert_eq!(sent, &hcl[32..32 + 1024]);

    let quote = data("tdx-td-quote.bin");
    let answer = serde_json::json!({
        "quote": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&quote)
    });
    let got =
        veil_attest::azure::td_quote_from_answer(answer.to_string().as_bytes()).expect("quote");
    assert_eq!(got, quote);
    for bad in [&b"{}"[..], br#"{"quote": "!"}"#, br#"{"quote": "AAAA"}"#] {
        let e = veil_attest::azure::td_quote_from_answer(bad).expect_err("bad answer");
        assert!(matches!(e, AzureError::Imds(_)), "{e}");
    }
}

/// A joiner on an Azure SEV-SNP CVM derives what its join service must show from its
/// own evidence (`veil_attest::peer`): Azure's kind, under the Azure profile, with its
/// own paravisor's launch measurement and generation. A service on another host
/// generation or with another paravisor is refused; one like it gets as far as the
/// recorded nonce.
#[test]
fn a_joiner_on_azure_asks_its_service_for_evidence_like_its_own() {
    let policy = cloud_policy_like_own(&Evidence::AzureSevSnp(evidence("genoa"))).expect("policy");
    assert_eq!(policy.profile, Some(Profile::AzureSevSnp));
    let snp = policy
        .azure_sev_snp
        .as_ref()
        .expect("an azureSevSnp section");
    assert_eq!(snp.product, SnpProduct::Genoa);
    assert_eq!(
        hex::encode(snp.allowed_measurements[0]),
        measurement("genoa")
    );
    let ek = EkTrust::from_pem(include_bytes!("data/snp/milan_ark.pem")).expect("a root");
    let v = PlatformVerifier::new(TpmVerifier::new(ek), &policy, "derived").expect("verifier");
    assert!(!v.activates_ak());
    let e = v
        .verify(&Evidence::AzureSevSnp(evidence("genoa")), &[7; 32])
        .expect_err("recorded nonce");
    assert!(
        matches!(
            e,
            PlatformVerifyError::Azure(AzureError::Quote(QuoteBindingError::Nonce { .. }))
        ),
        "{e}"
    );
    let e = v
        .verify(&Evidence::AzureSevSnp(evidence("milan")), &[7; 32])
        .expect_err("another host generation");
    assert!(
        matches!(e, PlatformVerifyError::Azure(AzureError::Snp(_))),
        "{e}"
    );
}

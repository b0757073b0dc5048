//! The `gcp-sev-snp` / `gcp-tdx` vTPM part on recorded real evidence from GCE
//! confidential VMs (tests/data/gcp/README.md: vaportpm's fixtures, MIT): Google's AK
//! certificate chains to the pinned EK/AK CA root and signs the quote over the nonce.
//! A flipped byte anywhere, a missing intermediate, another machine's certificate, a
//! time before the certificate, another nonce or another profile is refused, naming
//! what failed; the profiles refuse evidence without the CPU's report.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use veil_attest::gcp::{GcpError, GcpVerifier, GcpVtpmEvidence};
use veil_attest::peer::cloud_policy_like_own;
use veil_attest::snp::SnpEvidence;
use veil_attest::tpm::quote::QuoteBindingError;
use veil_attest::tpm::{EkTrust, TpmVerifier};
use veil_attest::{
    Digest32, Evidence, EvidencePlatform, HardwareEvidence, PlatformPolicy, PlatformVerifier,
    PlatformVerifyError, Profile, Verifier,
};

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/gcp/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn evidence(machine: &str) -> GcpVtpmEvidence {
    GcpVtpmEvidence {
        ak_cert: data(&format!("{machine}-ak-cert.der")),
        intermediates: vec![data(&format!("{machine}-intermediate.der"))],
        quote: data(&format!("{machine}-quote.bin")),
        signature: data(&format!("{machine}-quote.sig")),
        pcrs: data(&format!("{machine}-quote-pcrs.bin"))
            .chunks(32)
            .enumerate()
            .map(|(i, v)| (i as u32, Digest32(v.try_into().expect("32 bytes"))))
            .collect::<BTreeMap<u32, Digest32>>(),
        hardware: None,
    }
}

fn nonce(machine: &str) -> [u8; 32] {
    data(&format!("{machine}-nonce.bin"))
        .try_into()
        .expect("a 32-byte nonce")
}

/// 2026-06-01, inside every recorded certificate's validity.
fn june_2026() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_272_000)
}

fn gcp() -> GcpVerifier {
    GcpVerifier::pinned().expect("pinned root").at(june_2026())
}

fn platform_verifier(policy: &str) -> PlatformVerifier {
    let policy = PlatformPolicy::from_json("policy.json", policy).expect("policy");
    PlatformVerifier::new(TpmVerifier::new(EkTrust::default()), &policy, "policy.json")
        .expect("verifier")
        .with_gcp(gcp())
}

#[test]
fn both_machines_evidence_verifies_from_googles_root_to_the_pcrs() {
    for machine in ["amd", "tdx"] {
        let (pcrs, info) = gcp()
            .verify(&evidence(machine), &nonce(machine))
            .unwrap_or_else(|e| panic!("{machine}: {e}"));
        assert_eq!(pcrs.len(), 24);
        assert!(
            info.ak_subject.contains("O=Google Compute Engine"),
            "{info:?}"
        );
        assert!(
            info.ak_issuer.contains("CN=EK/AK CA Intermediate"),
            "{info:?}"
        );
    }
}

#[test]
fn through_the_atls_verifier_the_evidence_is_bound_to_its_32_byte_user_data() {
    let v = platform_verifier(r#"{"gcp": {}}"#);
    let ev = Evidence::GcpVtpm(evidence("amd"));
    let verified = v.verify(&ev, &nonce("amd")).expect("verifies");
    assert_eq!(verified.platform, EvidencePlatform::GcpVtpm);
    assert_eq!(verified.pcrs.len(), 24);
    assert!(verified.tpm.is_none() && verified.snp.is_none());
    // The machine is the certified AK: each VM's own, and named as GCE's.
    let machine = verified.machine().expect("a vTPM names its machine");
    let other = v
        .verify(&Evidence::GcpVtpm(evidence("tdx")), &nonce("tdx"))
        .expect("the other machine verifies")
        .machine()
        .expect("and names its machine");
    assert_ne!(machine, other);
    assert!(machine.to_string().starts_with("gcp-vtpm-ak:"), "{machine}");
    let e = v.verify(&ev, &[0; 32]).expect_err("another session");
    assert!(
        matches!(
            e,
            PlatformVerifyError::Gcp(GcpError::Quote(QuoteBindingError::Nonce { .. }))
        ),
        "{e}"
    );
    // Over the wire and back, as its own kind.
    let bytes = ev.encode();
    assert!(String::from_utf8_lossy(&bytes).contains(r#""kind":"gcp-vtpm""#));
    assert_eq!(Evidence::decode(&bytes).expect("decodes"), ev);
}

#[test]
fn a_flipped_byte_in_the_quote_signature_pcrs_or_certificate_is_named() {
    let n = nonce("amd");
    let mut ev = evidence("amd");
    ev.quote[20] ^= 1;
    let e = gcp().verify(&ev, &n).expect_err("quote");
    assert!(matches!(e, GcpError::QuoteSignature(_)), "{e}");

    let mut ev = evidence("amd");
    let last = ev.signature.len() - 1;
    ev.signature[last] ^= 1;
    let e = gcp().verify(&ev, &n).expect_err("signature");
    assert!(matches!(e, GcpError::QuoteSignature(_)), "{e}");

    let mut ev = evidence("amd");
    ev.pcrs.entry(4).and_modify(|v| v.0[0] ^= 1);
    let e = gcp().verify(&ev, &n).expect_err("pcr");
    assert!(
        matches!(e, GcpError::Quote(QuoteBindingError::PcrDigest { .. })),
        "{e}"
    );

    // Inside the certificate's signed part (its validity): Google's signature fails.
    let mut ev = evidence("amd");
    ev.ak_cert[200] ^= 1;
    let e = gcp().verify(&ev, &n).expect_err("certificate");
    assert!(matches!(e, GcpError::AkCert(_)), "{e}");
    assert!(
        e.to_string().contains("Google's pinned EK/AK CA root"),
        "{e}"
    );
}

#[test]
fn another_machines_certificate_a_missing_intermediate_or_an_early_clock_is_refused() {
    let n = nonce("amd");
    // The TDX machine's (genuine) certificate with the AMD machine's quote.
    let ev = GcpVtpmEvidence {
        ak_cert: data("tdx-ak-cert.der"),
        intermediates: vec![data("tdx-intermediate.der")],
        ..evidence("amd")
    };
    let e = gcp().verify(&ev, &n).expect_err("swapped certificate");
    assert!(matches!(e, GcpError::QuoteSignature(_)), "{e}");

    let ev = GcpVtpmEvidence {
        intermediates: Vec::new(),
        ..evidence("amd")
    };
    let e = gcp().verify(&ev, &n).expect_err("no intermediate");
    assert!(e.to_string().contains("EK/AK CA Intermediate"), "{e}");

    // 2025: before the AK certificate was issued.
    let early = GcpVerifier::pinned()
        .expect("root")
        .at(UNIX_EPOCH + Duration::from_secs(1_740_000_000));
    let e = early.verify(&evidence("amd"), &n).expect_err("too early");
    assert!(matches!(e, GcpError::AkCert(_)), "{e}");
    assert!(e.to_string().contains("AK certificate"), "{e}");
}

#[test]
fn the_gcp_profiles_need_the_cpus_report_and_take_no_other_kind() {
    const M: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";
    let ev = Evidence::GcpVtpm(evidence("tdx"));
    let n = nonce("tdx");
    // The recorded vectors carry no CPU report: under the profile they are refused
    // for that, after everything else held.
    let v = platform_verifier(&format!(
        r#"{{"profile": "gcp-tdx", "gcp": {{}}, "tdx": {{"mrtd": ["{M}"]}}}}"#
    ));
    let e = v.verify(&ev, &n).expect_err("no TDX quote over the AK");
    assert!(
        matches!(
            e,
            PlatformVerifyError::ProfileNeedsHardware {
                hardware: "TDX",
                ..
            }
        ),
        "{e}"
    );
    let v = platform_verifier(&format!(
        r#"{{"requireHardware": true, "gcp": {{}}, "tdx": {{"mrtd": ["{M}"]}}}}"#
    ));
    let e = v.verify(&ev, &n).expect_err("requireHardware");
    assert!(matches!(e, PlatformVerifyError::NoHardware), "{e}");

    // Not under Azure's profile, nor where the policy has no gcp section.
    let azure = platform_verifier(&format!(
        r#"{{"profile": "azure-sev-snp", "gcp": {{}}, "azureSevSnp": {{"product": "genoa", "measurements": ["{M}"]}}}}"#
    ));
    let e = azure.verify(&ev, &n).expect_err("gcp under azure");
    assert!(matches!(e, PlatformVerifyError::WrongProfile { .. }), "{e}");
    let none = platform_verifier("{}");
    let e = none.verify(&ev, &n).expect_err("no gcp section");
    assert!(e.to_string().contains("no \"gcp\" section"), "{e}");

    // A gcp profile without its CPU section is refused when the policy is read.
    for (text, needle) in [
        (
            r#"{"profile": "gcp-sev-snp", "gcp": {}}"#,
            "needs a \"sevSnp\" section",
        ),
        (
            r#"{"profile": "gcp-tdx", "tdx": {"mrtd": []}}"#,
            "needs a \"gcp\" section",
        ),
        (r#"{"gcp": {"project": "x"}}"#, "unknown field `project`"),
    ] {
        let e = PlatformPolicy::from_json("site.json", text).expect_err(text);
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
}

#[test]
fn the_intermediate_is_named_by_the_certificates_issuer_url() {
    let url = veil_attest::gcp::issuer_url(&data("amd-ak-cert.der")).expect("parses");
    assert_eq!(
        url.as_deref(),
        Some(
            "http://privateca-content-65d53b14-0000-212a-a633-883d24f57bb8.storage.googleapis.com/0c3e79eb0898d02ebb0a/ca.crt"
        )
    );
    // A non-certificate is an error, not a panic.
    let e = veil_attest::gcp::issuer_url(b"not DER").expect_err("garbage");
    assert!(matches!(e, GcpError::AkCert(_)), "{e}");
}

/// A joiner on GCE derives what its join service must show from its own evidence
/// (`veil_attest::peer`): Google's certified AK, and where its own evidence carries
/// the CPU's report, a report like it under the matching profile. Without one (the
/// recorded machines had no configfs-tsm) Google's certificate is all it can ask for.
#[test]
fn a_joiner_on_gce_asks_its_service_for_evidence_like_its_own() {
    let policy = cloud_policy_like_own(&Evidence::GcpVtpm(evidence("amd"))).expect("policy");
    assert!(policy.gcp && policy.profile.is_none() && !policy.require_hardware);
    let v = PlatformVerifier::new(TpmVerifier::new(EkTrust::default()), &policy, "derived")
        .expect("verifier")
        .with_gcp(gcp());
    v.verify(&Evidence::GcpVtpm(evidence("tdx")), &nonce("tdx"))
        .expect("another GCE VM's evidence");

    // With the CPU's report in its own evidence (a recorded Milan report stands in for
    // the one configfs-tsm gives on GCE): that report's kind, measurement and profile.
    let report = hex::decode(include_str!("data/snp/report_milan.hex").trim()).expect("hex");
    let mut own = evidence("amd");
    own.hardware = Some(HardwareEvidence::SevSnp(SnpEvidence {
        report: report.clone(),
        vcek: include_bytes!("data/snp/vcek_milan.der").to_vec(),
        cert_chain: None,
    }));
    let policy = cloud_policy_like_own(&Evidence::GcpVtpm(own)).expect("policy");
    assert_eq!(policy.profile, Some(Profile::GcpSevSnp));
    assert!(policy.gcp && policy.require_hardware);
    let snp = policy.sev_snp.as_ref().expect("a sevSnp section");
    assert_eq!(snp.allowed_measurements[0].as_slice(), &report[0x90..0xc0]);
    let v = PlatformVerifier::new(TpmVerifier::new(EkTrust::default()), &policy, "derived")
        .expect("verifier")
        .with_gcp(gcp());
    let e = v
        .verify(&Evidence::GcpVtpm(evidence("tdx")), &nonce("tdx"))
        .expect_err("no CPU report");
    assert!(matches!(e, PlatformVerifyError::NoHardware), "{e}");
}

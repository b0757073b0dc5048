//! TPM attestation against real software TPMs (swtpm), one per test.

mod support;

use support::{LocalCa, Swtpm};
use veil_attest::tpm::public::TpmPublic;
use veil_attest::tpm::{
    CredentialChallenge, EkTrust, TpmAttester, TpmAttesterConfig, TpmEvidence, TpmVerifier,
    TpmVerifyError,
};
use veil_attest::{Attester, Digest32, Evidence, EvidenceError, Verifier};

const NONCE: [u8; 32] = [0x42; 32];

fn attester(tpm: &Swtpm) -> TpmAttester {
    let mut config = TpmAttesterConfig::with_tcti(tpm.tcti());
    config.event_log = None;
    config.systemd_log = None;
    TpmAttester::open(&config).expect("open swtpm")
}

/// Runs the whole activation handshake and returns a verifier that trusts the AK.
fn activated(att: &mut TpmAttester, trust: EkTrust) -> TpmVerifier {
    let mut verifier = TpmVerifier::new(trust);
    let (challenge, pending) = verifier.challenge(att.identity()).expect("challenge");
    let secret = att.activate(&challenge).expect("activate");
    let ak = pending.finish(&secret).expect("secret matches");
    verifier.add_trusted_ak(ak);
    verifier
}

fn tpm_evidence(ev: Evidence) -> TpmEvidence {
    match ev {
        Evidence::Tpm(t) => t,
        #[allow(unreachable_patterns)]
        _ => panic!("not TPM evidence"),
    }
}

#[test]
fn quote_round_trip_returns_the_tpms_pcr_values() {
    let tpm = Swtpm::start(LocalCa::shared());
    let mut att = attester(&tpm);
    let verifier = activated(&mut att, LocalCa::shared().trust());

    let evidence = att.evidence(&NONCE).expect("evidence");
    // Through the wire encoding, as a peer would receive it.
    let bytes = evidence.encode();
    let decoded = Evidence::decode(&bytes).expect("decode");
    assert_eq!(decoded, evidence);

    let verified = verifier.verify(&decoded, &NONCE).expect("verifies");
    let read = att
        .read_pcrs(&(0..16).collect::<Vec<_>>())
        .expect("pcr_read");
    assert_eq!(verified.pcrs, read);
    assert_eq!(verified.pcrs.len(), 16);
    assert_eq!(verified.user_data, NONCE);
}

#[test]
fn old_quote_still_verifies_after_extend_but_tampered_pcr_does_not() {
    let tpm = Swtpm::start(LocalCa::shared());
    let mut att = attester(&tpm);
    let verifier = activated(&mut att, LocalCa::shared().trust());
    let ev = tpm_evidence(att.evidence(&NONCE).expect("evidence"));

    att.extend_pcr(15, &[0xc1; 32]).expect("extend");
    let old = verifier
        .verify_tpm(&ev, &NONCE)
        .expect("old quote verifies");
    let now = att.read_pcrs(&[15]).expect("read");
    assert_ne!(old.pcrs[&15], now[&15], "PCR 15 moved on after the quote");

    // Presenting the new value with the old quote is caught by the digest.
    let mut tampered = ev.clone();
    tampered.pcrs.insert(15, Digest32(now[&15]));
    let err = verifier
        .verify_tpm(&tampered, &NONCE)
        .expect_err("tampered");
    assert!(
        matches!(err, TpmVerifyError::PcrDigestMismatch { .. }),
        "{err}"
    );

    // A value the quote does not cover must not ride along.
    let mut extra = ev.clone();
    extra.pcrs.insert(20, Digest32([0; 32]));
    let err = verifier.verify_tpm(&extra, &NONCE).expect_err("extra");
    assert!(matches!(err, TpmVerifyError::Malformed { .. }), "{err}");

    // A fresh quote reflects the extend.
    let fresh = verifier
        .verify(&att.evidence(&NONCE).expect("evidence"), &NONCE)
        .expect("fresh");
    assert_eq!(fresh.pcrs[&15], now[&15]);
}

#[test]
fn stale_nonce_is_refused() {
    let tpm = Swtpm::start(LocalCa::shared());
    let mut att = attester(&tpm);
    let verifier = activated(&mut att, LocalCa::shared().trust());
    let ev = att.evidence(&[1; 32]).expect("evidence");
    let err = verifier.verify(&ev, &[2; 32]).expect_err("replay");
    match &err {
        TpmVerifyError::NonceMismatch { expected, got } => {
            assert_eq!(expected, &"02".repeat(32));
            assert_eq!(got, &"01".repeat(32));
        }
        other => panic!("expected NonceMismatch, got {other}"),
    }
}

#[test]
fn flipped_signature_or_quote_byte_is_refused() {
    let tpm = Swtpm::start(LocalCa::shared());
    let mut att = attester(&tpm);
    let verifier = activated(&mut att, LocalCa::shared().trust());
    let ev = tpm_evidence(att.evidence(&NONCE).expect("evidence"));

    let mut sig = ev.clone();
    let last = sig.signature.len() - 1;
    sig.signature[last] ^= 0x01;
    let err = verifier
        .verify_tpm(&sig, &NONCE)
        .expect_err("bad signature");
    assert!(matches!(err, TpmVerifyError::BadSignature { .. }), "{err}");

    // Changing the signed quote (here: the nonce inside it) breaks the signature too.
    let mut quote = ev.clone();
    let pos = quote
        .quote
        .windows(32)
        .position(|w| w == NONCE)
        .expect("nonce in quote");
    quote.quote[pos] ^= 0x80;
    let err = verifier.verify_tpm(&quote, &NONCE).expect_err("bad quote");
    assert!(matches!(err, TpmVerifyError::BadSignature { .. }), "{err}");
}

/// Tiny deterministic PRNG so failures reproduce.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn truncated_and_garbled_evidence_is_an_error_not_a_panic() {
    let tpm = Swtpm::start(LocalCa::shared());
    let mut att = attester(&tpm);
    let verifier = activated(&mut att, LocalCa::shared().trust());
    let ev = att.evidence(&NONCE).expect("evidence");
    let bytes = ev.encode();

    for cut in [0, 1, 10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        let err = Evidence::decode(&bytes[..cut]).expect_err("truncated");
        assert!(
            matches!(err, EvidenceError::Truncated { .. }),
            "cut {cut}: {err}"
        );
    }
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for len in [1usize, 7, 64, 1000, 5000] {
        let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert!(Evidence::decode(&junk).is_err());
    }
    // Bytes flipped inside the JSON: either rejected by the decoder or by the verifier.
    for _ in 0..200 {
        let mut b = bytes.clone();
        let i = (rng.next() % b.len() as u64) as usize;
        b[i] ^= 1 << (rng.next() % 8);
        if let Ok(ev2) = Evidence::decode(&b) {
            if ev2 != ev {
                assert!(
                    verifier.verify(&ev2, &NONCE).is_err(),
                    "flip at {i} accepted"
                );
            }
        }
    }

    // Structures cut inside otherwise valid evidence.
    let tev = tpm_evidence(ev);
    for cut in [0, 3, 6, 20, tev.quote.len() - 1] {
        let mut t = tev.clone();
        t.quote.truncate(cut);
        t.signature = tev.signature.clone();
        let err = verifier.verify_tpm(&t, &NONCE).expect_err("short quote");
        assert!(
            matches!(err, TpmVerifyError::BadSignature { .. }),
            "unsigned bytes must fail the signature first: {err}"
        );
    }
    for cut in [0, 1, 5, tev.signature.len() - 1] {
        let mut t = tev.clone();
        t.signature.truncate(cut);
        let err = verifier
            .verify_tpm(&t, &NONCE)
            .expect_err("short signature");
        assert!(matches!(err, TpmVerifyError::Truncated { .. }), "{err}");
    }
    for cut in [0, 1, 2, 10, tev.ak_public.len() - 1] {
        let mut t = tev.clone();
        t.ak_public.truncate(cut);
        let err = verifier.verify_tpm(&t, &NONCE).expect_err("short AK");
        assert!(matches!(err, TpmVerifyError::Truncated { .. }), "{err}");
    }
    let mut t = tev.clone();
    t.signature = (0..72).map(|_| rng.next() as u8).collect();
    assert!(verifier.verify_tpm(&t, &NONCE).is_err());
}

#[test]
fn software_make_credential_activates_on_swtpm() {
    let tpm = Swtpm::start(LocalCa::shared());
    let mut att = attester(&tpm);
    let id = att.identity().clone();
    let ek = TpmPublic::from_tpm2b(&id.ek_public).expect("EK");
    let ak = TpmPublic::from_tpm2b(&id.ak_public).expect("AK");
    let ak_name = ak.name().expect("name");

    let (challenge, expected) = CredentialChallenge::new(&ek, &ak_name).expect("make");
    let secret = att
        .activate(&challenge)
        .expect("TPM accepts the software blob");
    assert_eq!(secret.as_slice(), expected.as_slice());

    // Bound to the AK's name: a blob for another name is refused by the TPM.
    let mut other = ak_name.clone();
    other[5] ^= 1;
    let (challenge, _) = CredentialChallenge::new(&ek, &other).expect("make");
    assert!(att.activate(&challenge).is_err());
}

#[test]
fn ak_of_another_tpm_cannot_be_activated_with_this_ek() {
    let ca = LocalCa::shared();
    let (tpm_a, tpm_b) = (Swtpm::start(ca), Swtpm::start(ca));
    let (mut a, mut b) = (attester(&tpm_a), attester(&tpm_b));
    let verifier = TpmVerifier::new(ca.trust());

    // B presents its AK with A's (genuine, certified) EK.
    let mut forged = a.identity().clone();
    forged.ak_public = b.identity().ak_public.clone();
    let (challenge, pending) = verifier.challenge(&forged).expect("EK itself is fine");
    assert!(
        b.activate(&challenge).is_err(),
        "B lacks A's EK private key"
    );
    assert!(
        a.activate(&challenge).is_err(),
        "A holds no object with B's AK name"
    );
    let err = pending.finish(&[0; 32]).expect_err("guess");
    assert!(
        matches!(err, TpmVerifyError::ActivationFailed { .. }),
        "{err}"
    );

    // So B's quotes stay unverifiable.
    let mut verifier = verifier;
    verifier.add_trusted_ak({
        let (c, p) = verifier.challenge(a.identity()).expect("challenge");
        p.finish(&a.activate(&c).expect("activate"))
            .expect("A's own AK")
    });
    let mut ev = tpm_evidence(b.evidence(&NONCE).expect("evidence"));
    ev.ek_cert = a.identity().ek_cert.clone();
    ev.ek_public = a.identity().ek_public.clone();
    let err = verifier.verify_tpm(&ev, &NONCE).expect_err("B's AK");
    assert!(
        matches!(err, TpmVerifyError::AkNotActivated { .. }),
        "{err}"
    );
}

#[test]
fn ek_certificate_checks() {
    let ca = LocalCa::shared();
    let other_ca = LocalCa::new();
    let (tpm_a, tpm_other) = (Swtpm::start(ca), Swtpm::start(&other_ca));
    let (a, other) = (attester(&tpm_a), attester(&tpm_other));
    let verifier = TpmVerifier::new(ca.trust());

    let err = verifier.challenge(other.identity()).expect_err("other CA");
    assert!(
        matches!(err, TpmVerifyError::EkCertNotTrusted { .. }),
        "{err}"
    );

    // Trusting only the root without the intermediate: no path.
    let root_only = TpmVerifier::new(EkTrust::from_pem(&ca.root_pem()).expect("root"));
    let err = root_only
        .challenge(a.identity())
        .expect_err("no intermediate");
    assert!(
        matches!(err, TpmVerifyError::EkCertNotTrusted { .. }),
        "{err}"
    );

    // The intermediate alone may serve as the anchor.
    let issuer_only = TpmVerifier::new(EkTrust::from_pem(&ca.intermediate_pem()).expect("ca"));
    issuer_only
        .challenge(a.identity())
        .expect("intermediate as anchor");

    // A genuine certificate presented with a different EK key.
    let mut mixed = a.identity().clone();
    mixed.ek_public = other.identity().ek_public.clone();
    let err = verifier.challenge(&mixed).expect_err("key mismatch");
    assert!(
        matches!(&err, TpmVerifyError::EkCertNotTrusted { reason } if reason.contains("different key")),
        "{err}"
    );

    // The un-activated AK of a trusted TPM is not enough either.
    let mut att = a;
    let ev = att.evidence(&NONCE).expect("evidence");
    let err = verifier.verify(&ev, &NONCE).expect_err("not activated");
    assert!(
        matches!(err, TpmVerifyError::AkNotActivated { .. }),
        "{err}"
    );
}

#[test]
fn event_logs_are_attached_unless_too_large_for_a_handshake() {
    let ca = LocalCa::shared();
    let tpm = Swtpm::start(ca);
    let dir = tempfile::tempdir().expect("tempdir");
    let (fw, sd) = (dir.path().join("fw.log"), dir.path().join("sd.log"));
    std::fs::write(&fw, b"firmware log bytes").expect("write");
    std::fs::write(&sd, b"systemd log bytes").expect("write");
    let mut config = TpmAttesterConfig::with_tcti(tpm.tcti());
    config.event_log = Some(fw.clone());
    config.systemd_log = Some(sd.clone());
    let mut att = TpmAttester::open(&config).expect("open swtpm");
    let verifier = activated(&mut att, ca.trust());

    let ev = att.evidence(&NONCE).expect("evidence");
    let verified = verifier.verify(&ev, &NONCE).expect("verify");
    assert_eq!(
        verified.event_log.as_deref(),
        Some(&b"firmware log bytes"[..])
    );
    assert_eq!(
        verified.systemd_log.as_deref(),
        Some(&b"systemd log bytes"[..])
    );

    // Together over the limit: neither is attached, and the quote still verifies.
    let half = veil_attest::tpm::MAX_ATTACHED_LOG_BYTES / 2 + 1;
    std::fs::write(&fw, vec![b'f'; half]).expect("write");
    std::fs::write(&sd, vec![b's'; half]).expect("write");
    let ev = att.evidence(&NONCE).expect("evidence");
    let verified = verifier.verify(&ev, &NONCE).expect("verify");
    assert_eq!(verified.event_log, None);
    assert_eq!(verified.systemd_log, None);
}

#[test]
fn ca_files_are_read_with_their_intermediates_and_errors_name_the_file() {
    let ca = LocalCa::shared();
    let tpm = Swtpm::start(ca);
    let a = attester(&tpm);
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, issuer) = (dir.path().join("root.pem"), dir.path().join("issuer.pem"));
    std::fs::write(&root, ca.root_pem()).expect("write root");
    std::fs::write(&issuer, ca.intermediate_pem()).expect("write issuer");

    let trust = EkTrust::from_pem_files(&root, Some(&issuer)).expect("both files");
    TpmVerifier::new(trust)
        .challenge(a.identity())
        .expect("root and intermediate make a path");
    let root_only = EkTrust::from_pem_files(&root, None).expect("root file");
    assert!(TpmVerifier::new(root_only).challenge(a.identity()).is_err());

    let missing = dir.path().join("missing.pem");
    let err = EkTrust::from_pem_files(&missing, None).expect_err("no such file");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let garbled = dir.path().join("garbled.pem");
    std::fs::write(&garbled, "not a certificate").expect("write");
    let err = EkTrust::from_pem_files(&root, Some(&garbled)).expect_err("garbled");
    assert!(err.to_string().contains("garbled.pem"), "{err}");
}

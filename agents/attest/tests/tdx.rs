//! TDX verification against a real recorded quote and its Intel PCS collateral (from
//! dcap-qvl 0.7.1's samples, see tests/data/tdx/README.md), at a fixed clock inside the
//! collateral's validity window; and quote generation against a fake configfs-tsm tree.

use std::fs;

use veil_attest::tdx::{
    TdQuote, TdxAttestError, TdxAttester, TdxEvidence, TdxPolicy, TdxVerifier, TdxVerifyError,
    check_td_attributes,
};
use veil_attest::tsm::TsmError;
use veil_attest::{Attester, Evidence, EvidencePlatform, Verifier};

const QUOTE: &[u8] = include_bytes!("data/tdx/tdx_quote.bin");
const COLLATERAL: &str = include_str!("data/tdx/tdx_quote_collateral.json");

/// 2025-07-01T00:00:00Z: inside every window of the sample collateral (latest start:
/// QE identity issued 2025-06-19T10:32:27Z; earliest end: PCK CRL next update
/// 2025-07-19T10:00:35Z).
const NOW: u64 = 1_751_328_000;

/// Offset of the ECDSA quote signature in a v4 quote: header (48) + TD report (584) +
/// auth data length (4).
const SIGNATURE_OFFSET: usize = 636;

const MRTD: &str = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";
const RTMR1: &str = "0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378";

fn h48(s: &str) -> [u8; 48] {
    let v = hex::decode(s).expect("hex");
    v.try_into().expect("48 bytes")
}

fn evidence(quote: &[u8]) -> Evidence {
    Evidence::Tdx(TdxEvidence {
        quote: quote.to_vec(),
        collateral: Some(COLLATERAL.to_owned()),
    })
}

/// The sample's report_data[0..32]. Its other 32 bytes are not zero (the quote was not
/// made by Veil's attester), so the recorded-vector policy sets
/// `ignore_report_data_tail`; production policies leave it off, and
/// `strict_report_data_layout_rejects_the_sample` shows the strict default at work.
fn sample_user_data() -> [u8; 32] {
    let td = TdQuote::parse(QUOTE).expect("parse sample");
    let mut u = [0u8; 32];
    u.copy_from_slice(&td.report_data[..32]);
    u
}

fn policy() -> TdxPolicy {
    TdxPolicy {
        now: Some(NOW),
        ignore_report_data_tail: true,
        ..TdxPolicy::default()
    }
}

fn verify(policy: TdxPolicy, quote: &[u8]) -> Result<veil_attest::Verified, TdxVerifyError> {
    TdxVerifier::new(policy).verify(&evidence(quote), &sample_user_data())
}

#[test]
fn recorded_sample_verifies() {
    let mut p = policy();
    p.allowed_mrtd = vec![h48(MRTD)];
    p.expected_rtmrs.insert(1, h48(RTMR1));
    p.expected_rtmrs.insert(3, [0u8; 48]);
    let v = verify(p, QUOTE).expect("sample verifies");
    assert_eq!(v.platform, EvidencePlatform::Tdx);
    assert_eq!(v.user_data, sample_user_data());
    assert!(v.tpm.is_none() && v.pcrs.is_empty());
    let tdx = v.tdx.expect("tdx info");
    assert_eq!(tdx.quote_version, 4);
    assert_eq!(tdx.mr_td, h48(MRTD));
    assert_eq!(tdx.rtmrs[1], h48(RTMR1));
    assert_eq!(tdx.tcb_status, "UpToDate");
    assert!(tdx.advisory_ids.is_empty());
}

#[test]
fn strict_report_data_layout_rejects_the_sample() {
    let p = TdxPolicy {
        now: Some(NOW),
        ..TdxPolicy::default()
    };
    let err = verify(p, QUOTE).expect_err("tail is not zero");
    assert!(
        matches!(err, TdxVerifyError::ReportDataMismatch { .. }),
        "{err}"
    );
}

#[test]
fn flipped_signature_byte_is_bad_signature() {
    let mut q = QUOTE.to_vec();
    q[SIGNATURE_OFFSET + 5] ^= 0x01;
    let err = verify(policy(), &q).expect_err("tampered");
    assert!(matches!(err, TdxVerifyError::BadSignature { .. }), "{err}");
}

#[test]
fn flipped_report_byte_is_bad_signature() {
    // MRTD is covered by the quote signature: changing it cannot pass.
    let mut q = QUOTE.to_vec();
    q[48 + 136] ^= 0x80;
    let err = verify(policy(), &q).expect_err("tampered");
    assert!(matches!(err, TdxVerifyError::BadSignature { .. }), "{err}");
}

#[test]
fn expired_collateral_is_rejected() {
    for now in [None, Some(4_102_444_800)] {
        let p = TdxPolicy { now, ..policy() };
        let err = verify(p, QUOTE).expect_err("expired");
        match &err {
            TdxVerifyError::CollateralInvalid { reason } => {
                assert!(reason.contains("expired"), "{err}")
            }
            other => panic!("expected CollateralInvalid, got {other}"),
        }
    }
    let p = TdxPolicy {
        now: Some(1_700_000_000),
        ..policy()
    };
    let err = verify(p, QUOTE).expect_err("before issue");
    assert!(
        matches!(&err, TdxVerifyError::CollateralInvalid { reason } if reason.contains("not yet valid")),
        "{err}"
    );
}

#[test]
fn missing_or_garbled_collateral_is_an_error() {
    let ev = Evidence::Tdx(TdxEvidence {
        quote: QUOTE.to_vec(),
        collateral: None,
    });
    let err = TdxVerifier::new(policy())
        .verify(&ev, &sample_user_data())
        .expect_err("no collateral");
    assert!(
        matches!(err, TdxVerifyError::CollateralInvalid { .. }),
        "{err}"
    );
    // Configured collateral is used when the evidence has none.
    TdxVerifier::new(policy())
        .with_collateral_json(COLLATERAL)
        .expect("collateral parses")
        .verify(&ev, &sample_user_data())
        .expect("configured collateral");

    let ev = Evidence::Tdx(TdxEvidence {
        quote: QUOTE.to_vec(),
        collateral: Some("{\"pck_crl\":".into()),
    });
    let err = TdxVerifier::new(policy())
        .verify(&ev, &sample_user_data())
        .expect_err("garbled collateral");
    assert!(matches!(err, TdxVerifyError::Malformed { .. }), "{err}");
}

#[test]
fn wrong_user_data_is_report_data_mismatch() {
    let mut user = sample_user_data();
    user[0] ^= 0xff;
    let err = TdxVerifier::new(policy())
        .verify(&evidence(QUOTE), &user)
        .expect_err("wrong user data");
    assert!(
        matches!(err, TdxVerifyError::ReportDataMismatch { .. }),
        "{err}"
    );
}

#[test]
fn mrtd_not_allowed() {
    let mut p = policy();
    p.allowed_mrtd = vec![[0x11; 48]];
    let err = verify(p, QUOTE).expect_err("mrtd");
    match &err {
        TdxVerifyError::MrtdMismatch { got, .. } => assert_eq!(got, MRTD),
        other => panic!("expected MrtdMismatch, got {other}"),
    }
}

#[test]
fn rtmr_mismatch_names_the_index() {
    let mut p = policy();
    p.expected_rtmrs.insert(1, h48(RTMR1));
    p.expected_rtmrs.insert(2, [0x22; 48]);
    let err = verify(p, QUOTE).expect_err("rtmr");
    match &err {
        TdxVerifyError::RtmrMismatch { index, .. } => assert_eq!(*index, 2),
        other => panic!("expected RtmrMismatch, got {other}"),
    }
    assert!(err.to_string().contains("RTMR2"), "{err}");

    let mut p = policy();
    p.expected_rtmrs.insert(4, [0; 48]);
    let err = verify(p, QUOTE).expect_err("no RTMR4");
    assert!(matches!(err, TdxVerifyError::Unsupported { .. }), "{err}");
}

#[test]
fn tcb_status_policy() {
    let mut p = policy();
    p.allowed_tcb_status = vec!["SWHardeningNeeded".into()];
    let err = verify(p, QUOTE).expect_err("status");
    match &err {
        TdxVerifyError::TcbStatus { got, allowed } => {
            assert_eq!(got, "UpToDate");
            assert_eq!(allowed, &["SWHardeningNeeded".to_owned()]);
        }
        other => panic!("expected TcbStatus, got {other}"),
    }
    let mut p = policy();
    p.allowed_tcb_status = vec!["UpToDate".into(), "SWHardeningNeeded".into()];
    verify(p, QUOTE).expect("status allowed");
}

#[test]
fn truncated_and_garbled_quotes_fail_cleanly() {
    // The signed quote ends at 4936 (48 + 584 + 4 + 4300 bytes of auth data); the
    // sample carries 70 zero bytes of padding after it, which are not part of the quote.
    for len in [0, 1, 47, 48, 100, 632, 636, 700, 2000, 4935] {
        let err = verify(policy(), &QUOTE[..len]).expect_err("truncated");
        assert!(
            matches!(err, TdxVerifyError::Truncated { .. }),
            "len {len}: {err}"
        );
    }
    assert!(matches!(
        TdQuote::parse(&QUOTE[..300]),
        Err(TdxVerifyError::Truncated { .. })
    ));
    // Wrong TEE type, wrong version, and byte noise.
    let mut q = QUOTE.to_vec();
    q[4] = 0x00;
    let err = verify(policy(), &q).expect_err("SGX tee type");
    assert!(
        matches!(
            err,
            TdxVerifyError::Unsupported { .. } | TdxVerifyError::Malformed { .. }
        ),
        "{err}"
    );
    let mut q = QUOTE.to_vec();
    q[0] = 9;
    assert!(verify(policy(), &q).is_err());
    let mut state = 0x1234_5678_u32;
    for _ in 0..64 {
        let mut q = QUOTE.to_vec();
        for _ in 0..8 {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let i = (state as usize) % q.len();
            q[i] = (state >> 24) as u8;
        }
        let _ = verify(policy(), &q);
        let _ = TdQuote::parse(&q);
    }
}

#[test]
fn debug_attribute_check() {
    let sample = TdQuote::parse(QUOTE).expect("parse");
    assert!(!sample.is_debug());
    check_td_attributes(&sample.td_attributes, false, false).expect("sample is not debug");

    let mut debug = sample.td_attributes;
    debug[0] |= 0x01;
    let err = check_td_attributes(&debug, false, false).expect_err("debug TD");
    assert!(
        matches!(
            err,
            TdxVerifyError::DebugAllowed {
                debug_bit: true,
                ..
            }
        ),
        "{err}"
    );
    check_td_attributes(&debug, true, false).expect("debug allowed by policy");

    let mut profiling = sample.td_attributes;
    profiling[0] |= 0x10;
    assert!(matches!(
        check_td_attributes(&profiling, false, false),
        Err(TdxVerifyError::DebugAllowed {
            debug_bit: false,
            ..
        })
    ));
}

#[test]
fn tdx_evidence_json_round_trip() {
    let ev = evidence(QUOTE);
    let bytes = ev.encode();
    let text = std::str::from_utf8(&bytes).expect("utf8");
    assert!(text.contains(r#""kind":"tdx""#), "{text}");
    let back = Evidence::decode(&bytes).expect("decode");
    assert_eq!(back, ev);
    // The decoded evidence still verifies.
    TdxVerifier::new(policy())
        .verify(&back, &sample_user_data())
        .expect("round-tripped evidence verifies");
}

/// A fake configfs-tsm entry: the attester writes `inblob`, reads `generation` and
/// `outblob`. The "kernel" here is the recorded quote, so the attester must be asked for
/// the sample's own report data.
fn fake_entry(dir: &std::path::Path, provider: &str) -> std::path::PathBuf {
    let entry = dir.join("entry");
    fs::create_dir(&entry).expect("mkdir");
    fs::write(entry.join("provider"), format!("{provider}\n")).expect("provider");
    fs::write(entry.join("generation"), "1\n").expect("generation");
    fs::write(entry.join("outblob"), QUOTE).expect("outblob");
    entry
}

#[test]
fn attester_sequence_on_fake_configfs_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entry = fake_entry(dir.path(), "tdx_guest");
    let rd = TdQuote::parse(QUOTE).expect("parse").report_data;
    let quote = veil_attest::tdx::attester::generate_in_entry(&entry, &rd).expect("generate");
    assert_eq!(quote, QUOTE);
    assert_eq!(fs::read(entry.join("inblob")).expect("inblob"), rd);

    // Veil's layout: user data then 32 zero bytes; the recorded quote does not match.
    let user = [0x42; 32];
    let inblob = veil_attest::tdx::attester::report_data(&user);
    assert_eq!(&inblob[..32], &user);
    assert_eq!(&inblob[32..], &[0u8; 32]);
    let err = veil_attest::tdx::attester::generate_in_entry(&entry, &inblob)
        .expect_err("quote for other report data");
    assert!(
        matches!(err, TdxAttestError::ReportDataMismatch { .. }),
        "{err}"
    );
    assert_eq!(fs::read(entry.join("inblob")).expect("inblob"), inblob);
}

#[test]
fn attester_rejects_wrong_provider_and_missing_configfs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entry = fake_entry(dir.path(), "sev_guest");
    let err =
        veil_attest::tdx::attester::generate_in_entry(&entry, &[0; 64]).expect_err("sev provider");
    assert!(
        matches!(err, TdxAttestError::Tsm(TsmError::WrongProvider { .. })),
        "{err}"
    );

    // A plain directory has no configfs files: the attester creates an entry, fails
    // cleanly naming the file, and removes the entry again.
    let root = dir.path().join("report");
    fs::create_dir(&root).expect("root");
    let mut att = TdxAttester::with_root(&root);
    let err = att.evidence(&[0; 32]).expect_err("no configfs");
    assert!(
        matches!(&err, TdxAttestError::Tsm(TsmError::Io { path, .. }) if path.ends_with("provider")),
        "{err}"
    );
    assert_eq!(fs::read_dir(&root).expect("read root").count(), 0);

    let mut att = TdxAttester::with_root(dir.path().join("absent"));
    let err = att.evidence(&[0; 32]).expect_err("no root");
    assert!(
        matches!(err, TdxAttestError::Tsm(TsmError::Io { .. })),
        "{err}"
    );
}

#[test]
fn pinned_root_is_the_intel_sgx_root_ca() {
    use sha2::{Digest, Sha256};
    assert_eq!(
        hex::encode(Sha256::digest(veil_attest::tdx::INTEL_SGX_ROOT_CA_DER)),
        "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
    );
}

#[test]
fn other_trust_anchor_is_bad_signature() {
    // The PCK platform CA (an intermediate below the Intel root) as the only anchor:
    // the collateral's root CA CRL and the quote's chain no longer lead to it.
    let chain: serde_json::Value = serde_json::from_str(COLLATERAL).expect("json");
    let pem = chain["pck_crl_issuer_chain"].as_str().expect("chain");
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    let err = TdxVerifier::new(policy())
        .with_root_ca(der)
        .verify(&evidence(QUOTE), &sample_user_data())
        .expect_err("wrong anchor");
    assert!(matches!(err, TdxVerifyError::BadSignature { .. }), "{err}");
}

#[test]
fn a_td_without_sept_ve_disable_is_refused() {
    let sample = TdQuote::parse(QUOTE).expect("parse");
    check_td_attributes(&sample.td_attributes, false, false).expect("the sample sets it");
    let mut open = sample.td_attributes;
    open[3] &= !(1 << 4); // bit 28
    let err = check_td_attributes(&open, false, false).expect_err("SEPT #VE allowed");
    assert!(matches!(err, TdxVerifyError::SeptVeEnabled { .. }), "{err}");
    assert!(err.to_string().contains("SEPT_VE_DISABLE"), "{err}");
    // Not even a debug-allowing policy takes it; only the Azure paravisor's check does.
    assert!(check_td_attributes(&open, true, false).is_err());
    check_td_attributes(&open, false, true).expect("a paravisor TD may take #VE");
}

#[test]
fn migratable_service_bound_or_reserved_attributes_are_refused() {
    let sample = TdQuote::parse(QUOTE).expect("parse");
    // (byte, bit, what the error names), little-endian bit numbers 29, 17 and 40.
    for (byte, bit, name) in [
        (3, 5, "MIGRATABLE"),
        (2, 1, "SERVTD_EXT"),
        (5, 0, "reserve"),
    ] {
        let mut attrs = sample.td_attributes;
        attrs[byte] |= 1 << bit;
        for sept_ve_allowed in [false, true] {
            let err = check_td_attributes(&attrs, true, sept_ve_allowed).expect_err(name);
            assert!(
                matches!(
                    err,
                    TdxVerifyError::Unsupported {
                        what: "TD attributes",
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}

#[test]
fn configured_collateral_wins_over_what_the_evidence_carries() {
    // Evidence that carries collateral of its own (here unusable): the verifier's
    // configured collateral is the one used, so a node cannot pick older collateral
    // under which its TCB looks better.
    let carried = Evidence::Tdx(TdxEvidence {
        quote: QUOTE.to_vec(),
        collateral: Some("{\"pck_crl\": \"not what Intel signed\"}".into()),
    });
    let configured = TdxVerifier::new(policy())
        .with_collateral_json(COLLATERAL)
        .expect("collateral");
    configured
        .verify(&carried, &sample_user_data())
        .expect("verified under the configured collateral");
    // Without configured collateral, the carried one is all there is, and it fails.
    assert!(
        TdxVerifier::new(policy())
            .verify(&carried, &sample_user_data())
            .is_err()
    );
}

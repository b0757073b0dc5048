//! SEV-SNP reports signed by a cloud's VLEK (AWS) on recorded real evidence
//! (tests/data/snp/README.md): they verify through the pinned ASVK to AMD's ARK; a VLEK
//! under the VCEK's ASK, a VCEK-signed report presented with a VLEK, a flipped byte, a
//! generation without a pinned ASVK or an unknown signing-key field is refused by name.

use veil_attest::snp::attester::{build_cert_table, cert_guids, vlek_guid};
use veil_attest::snp::{
    SnpAttester, SnpEvidence, SnpPolicy, SnpProduct, SnpVerifier, SnpVerifyError,
};
use veil_attest::{Attester, Evidence};

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/snp/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn evidence(version: &str) -> (SnpEvidence, [u8; 32]) {
    let report = data(&format!("aws-vlek-report-{version}.bin"));
    let user: [u8; 32] = report[0x50..0x70].try_into().expect("32 bytes");
    (
        SnpEvidence {
            report,
            vcek: data(&format!("aws-vlek-{version}.der")),
            cert_chain: None,
        },
        user,
    )
}

/// The recorded reports fill all of report_data (they were not made by Veil) and were
/// asked for from VMPL 1.
fn verifier(product: SnpProduct) -> SnpVerifier {
    SnpVerifier::new(SnpPolicy {
        product,
        max_vmpl: 1,
        require_zero_report_data_tail: false,
        ..SnpPolicy::default()
    })
    .expect("pinned roots")
}

#[test]
fn vlek_signed_reports_of_two_versions_verify_through_the_pinned_asvk() {
    // Both were asked for from VMPL 1 (snpguest's default): a policy must allow that.
    for (version, vmpl) in [("v3", 1), ("v5", 1)] {
        let (ev, user) = evidence(version);
        assert_eq!((ev.report[0x48] >> 2) & 7, 1, "{version}: signed by a VLEK");
        let v = SnpVerifier::new(SnpPolicy {
            max_vmpl: vmpl,
            require_zero_report_data_tail: false,
            ..SnpPolicy::default()
        })
        .expect("pinned roots");
        let (_, info) = v
            .verify_snp(&ev, &user)
            .unwrap_or_else(|e| panic!("{version}: {e}"));
        assert_eq!(info.vmpl, vmpl, "{version}");
        assert_eq!(format!("v{}", info.report_version), version);
    }
    let (ev, user) = evidence("v5");
    let vmpl_0 = SnpVerifier::new(SnpPolicy {
        require_zero_report_data_tail: false,
        ..SnpPolicy::default()
    })
    .expect("pinned roots");
    let e = vmpl_0
        .verify_snp(&ev, &user)
        .map(|_| ())
        .expect_err("VMPL 1 under a VMPL 0 policy");
    assert!(e.to_string().contains("VMPL 1"), "{e}");
}

#[test]
fn a_vlek_chains_only_to_its_generations_asvk() {
    let (ev, user) = evidence("v5");
    let e = verifier(SnpProduct::Genoa)
        .verify_snp(&ev, &user)
        .expect_err("a Milan VLEK under Genoa's ASVK");
    assert!(matches!(e, SnpVerifyError::ChainNotTrusted { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("not signed by the pinned Genoa ASVK"),
        "{e}"
    );
    // Turin has no pinned ASVK: said so, not a signature error.
    let e = verifier(SnpProduct::Turin)
        .verify_snp(&ev, &user)
        .expect_err("no Turin ASVK");
    assert!(e.to_string().contains("no Turin ASVK is pinned"), "{e}");
}

#[test]
fn the_signing_key_field_decides_which_chain_and_cannot_be_switched() {
    // The VLEK-signed report claimed as VCEK-signed: the VLEK is then held to the
    // ASK, which did not sign it (and the field is under the report's signature).
    let (mut ev, user) = evidence("v5");
    ev.report[0x48] &= !(7 << 2);
    let e = verifier(SnpProduct::Milan)
        .verify_snp(&ev, &user)
        .expect_err("claimed VCEK");
    assert!(e.to_string().contains("VCEK ("), "{e}");
    assert!(e.to_string().contains("pinned Milan ASK"), "{e}");

    // A field that names no key.
    let (mut ev, user) = evidence("v5");
    ev.report[0x48] |= 7 << 2;
    let e = verifier(SnpProduct::Milan)
        .verify_snp(&ev, &user)
        .expect_err("no key");
    assert!(e.to_string().contains("signing key field is 7"), "{e}");

    // A flipped byte in the measurement: the VLEK's signature no longer holds.
    let (mut ev, user) = evidence("v5");
    ev.report[0x90] ^= 1;
    let e = verifier(SnpProduct::Milan)
        .verify_snp(&ev, &user)
        .expect_err("flipped");
    assert!(e.to_string().contains("signature"), "{e}");

    // Another instance's VLEK with this report.
    let (mut ev, user) = evidence("v5");
    ev.vcek = data("aws-vlek-v3.der");
    let e = verifier(SnpProduct::Milan)
        .verify_snp(&ev, &user)
        .expect_err("another VLEK");
    assert!(e.to_string().contains("signature"), "{e}");
}

/// The node side through a TEST DOUBLE of configfs-tsm (files laid out as the kernel
/// lays them): for a VLEK-signed report the attester takes the VLEK entry of the
/// host's certificate table, not the VCEK one beside it.
#[test]
fn the_attester_takes_the_vlek_for_a_vlek_signed_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entry = dir.path().join("veil-test");
    std::fs::create_dir(&entry).expect("mkdir");
    std::fs::write(entry.join("provider"), "sev_guest\n").expect("provider");
    std::fs::write(entry.join("generation"), "1\n").expect("generation");
    let (ev, user) = evidence("v5");
    std::fs::write(entry.join("outblob"), &ev.report).expect("outblob");
    let (vcek_guid, _, _) = cert_guids();
    let decoy = data("vcek_milan.der");
    let table = build_cert_table(&[(vcek_guid, &decoy), (vlek_guid(), &ev.vcek)]);
    std::fs::write(entry.join("auxblob"), &table).expect("auxblob");

    let mut attester = SnpAttester::new(dir.path()).with_entry_name("veil-test");
    let got = attester.evidence(&user).expect("evidence");
    let Evidence::SevSnp(snp) = &got else {
        panic!("not SEV-SNP: {got:?}")
    };
    assert_eq!(snp.vcek, ev.vcek, "the VLEK, not the VCEK entry");
    assert!(snp.cert_chain.is_none());
    verifier(SnpProduct::Milan)
        .verify_snp(snp, &user)
        .expect("verifies through the ASVK");

    // Without a VLEK entry the error names the VLEK.
    let table = build_cert_table(&[(vcek_guid, &decoy)]);
    std::fs::write(entry.join("auxblob"), &table).expect("auxblob");
    let e = attester.evidence(&user).expect_err("no VLEK");
    assert!(e.to_string().contains("no VLEK in auxblob"), "{e}");
}

/// The verifier remembers chains that held (a chip's VCEK comes with each report); a
/// remembered chain lets nothing else through.
#[test]
fn a_remembered_chain_changes_no_verdict() {
    let v = verifier(SnpProduct::Milan);
    let (ev, user) = evidence("v5");
    v.verify_snp(&ev, &user).expect("first");
    v.verify_snp(&ev, &user).expect("again, from memory");
    let mut flipped = ev.clone();
    flipped.report[0x90] ^= 1;
    let e = v
        .verify_snp(&flipped, &user)
        .map(|_| ())
        .expect_err("report");
    assert!(e.to_string().contains("signature"), "{e}");
    let mut tampered = ev.clone();
    let n = tampered.vcek.len() - 10;
    tampered.vcek[n] ^= 1;
    let e = v
        .verify_snp(&tampered, &user)
        .map(|_| ())
        .expect_err("VLEK");
    assert!(matches!(e, SnpVerifyError::ChainNotTrusted { .. }), "{e}");
    v.verify_snp(&ev, &user).expect("the genuine one still");
}

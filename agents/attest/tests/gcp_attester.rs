//! The `gcp-*` node side against a real TPM (swtpm): the AK recreated from the template
//! in NV 0x01c10003, its certificate from NV 0x01c10002, a quote over the user data.
//!
//! There is no GCE host here, so a TEST DOUBLE provisions the vTPM as GCE does: an ECC
//! P-256 restricted signing template in NV, and a certificate for the key it makes,
//! issued by a test CA (openssl) that plays Google's part. The verifier then runs for
//! real, trusting that test CA; under Google's pinned root the same evidence is
//! refused. Google's real chain is tested on recorded evidence (tests/gcp.rs).

mod cloud_support;
mod support;

use cloud_support::gce_provisioning_test_double;
use support::{LocalCa, Swtpm};
use veil_attest::gcp::attester::{GcpAttester, ak_cert_present};
use veil_attest::gcp::{GcpError, GcpVerifier};
use veil_attest::tpm::quote::QuoteBindingError;

#[test]
fn the_node_recreates_the_certified_ak_and_its_quote_verifies_under_the_issuing_ca() {
    let tpm = Swtpm::start(LocalCa::shared());
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(!ak_cert_present(&tpm.tcti()).expect("list NV"));
    let test_ca = gce_provisioning_test_double(&tpm.tcti(), dir.path());
    assert!(ak_cert_present(&tpm.tcti()).expect("list NV"));

    let user_data = [0x3c; 32];
    let mut attester =
        GcpAttester::open(&tpm.tcti(), (0..24).collect(), Vec::new(), None).expect("open");
    let ev = attester.gather(&user_data).expect("evidence");
    drop(attester);
    assert_eq!(ev.pcrs.len(), 24);
    assert!(ev.hardware.is_none(), "no configfs-tsm here");

    let (pcrs, info) = GcpVerifier::trusting(&test_ca)
        .expect("test CA")
        .verify(&ev, &user_data)
        .expect("verifies under the CA that issued the AK certificate");
    assert_eq!(pcrs.len(), 24);
    assert!(info.ak_subject.contains("CN=4242"), "{info:?}");
    let e = GcpVerifier::trusting(&test_ca)
        .expect("test CA")
        .verify(&ev, &[0; 32])
        .expect_err("another nonce");
    assert!(
        matches!(e, GcpError::Quote(QuoteBindingError::Nonce { .. })),
        "{e}"
    );

    // The same evidence does not chain to Google's root.
    let e = GcpVerifier::pinned()
        .expect("pinned")
        .verify(&ev, &user_data)
        .expect_err("not Google's");
    assert!(matches!(e, GcpError::AkCert(_)), "{e}");

    // The AK comes back the same after a reboot of the agent: the same certificate
    // verifies a second quote.
    let mut again = GcpAttester::open(&tpm.tcti(), vec![0, 4], Vec::new(), None).expect("reopen");
    let ev = again.gather(&[0x11; 32]).expect("second evidence");
    GcpVerifier::trusting(&test_ca)
        .expect("test CA")
        .verify(&ev, &[0x11; 32])
        .expect("the recreated AK is the certified one");
}

#[test]
fn a_vtpm_without_a_gce_ak_certificate_is_named() {
    let tpm = Swtpm::start(LocalCa::shared());
    let e = GcpAttester::open(&tpm.tcti(), (0..24).collect(), Vec::new(), None)
        .expect_err("no AK certificate");
    assert!(e.to_string().contains("NV 0x01c10002"), "{e}");
}

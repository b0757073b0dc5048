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

use std::process::Command;

use cloud_support::define_owner_nv;
use support::{LocalCa, Swtpm};
use tss_esapi::Context;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::{
    EccPoint, EccScheme, HashScheme, KeyDerivationFunctionScheme, Public, PublicBuilder,
    PublicEccParametersBuilder, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use veil_attest::gcp::attester::{GcpAttester, ak_cert_present};
use veil_attest::gcp::{
    GCP_ECC_AK_CERT_NV_INDEX, GCP_ECC_AK_TEMPLATE_NV_INDEX, GcpError, GcpVerifier,
};
use veil_attest::tpm::quote::QuoteBindingError;

fn context(tpm: &Swtpm) -> Context {
    let tcti: TctiNameConf = tpm.tcti().parse().expect("tcti");
    Context::new(tcti).expect("open swtpm")
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The TEST DOUBLE of GCE's provisioning: the AK template and, for the key it makes, a
/// certificate from a test CA. Returns the test CA's certificate (PEM).
fn gce_provisioning_test_double(tpm: &Swtpm, dir: &std::path::Path) -> Vec<u8> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .build()
        .expect("attributes");
    let template = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new()
                .with_symmetric(SymmetricDefinitionObject::Null)
                .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
                .with_curve(EccCurve::NistP256)
                .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                .with_is_signing_key(true)
                .with_restricted(true)
                .build()
                .expect("ECC parameters"),
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .expect("template");
    let mut ctx = context(tpm);
    let created = ctx
        .execute_with_nullauth_session(|ctx| {
            ctx.create_primary(
                Hierarchy::Endorsement,
                template.clone(),
                None,
                None,
                None,
                None,
            )
        })
        .expect("the AK from the template");
    let Public::Ecc { unique, .. } = created.out_public else {
        panic!("not an ECC key")
    };
    // SubjectPublicKeyInfo of a P-256 key: the fixed DER prefix, then the point.
    let mut spki =
        hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").expect("prefix");
    spki.push(0x04);
    for coord in [unique.x().value(), unique.y().value()] {
        spki.extend(std::iter::repeat_n(0, 32 - coord.len()));
        spki.extend_from_slice(coord);
    }
    std::fs::write(dir.join("ak.der"), &spki).expect("ak key");
    openssl(
        dir,
        &[
            "pkey", "-pubin", "-inform", "DER", "-in", "ak.der", "-out", "ak.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=Test EK-AK CA (plays Google)",
            "-addext",
            "basicConstraints=critical,CA:true",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-new",
            "-force_pubkey",
            "ak.pem",
            "-subj",
            "/O=Test GCE/CN=4242",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-days",
            "30",
            "-outform",
            "DER",
            "-out",
            "ak-cert.der",
        ],
    );
    let cert = std::fs::read(dir.join("ak-cert.der")).expect("AK certificate");
    let template = template.marshall().expect("marshal the template");
    define_owner_nv(&mut ctx, GCP_ECC_AK_TEMPLATE_NV_INDEX, &template);
    define_owner_nv(&mut ctx, GCP_ECC_AK_CERT_NV_INDEX, &cert);
    std::fs::read(dir.join("ca.pem")).expect("CA")
}

#[test]
fn the_node_recreates_the_certified_ak_and_its_quote_verifies_under_the_issuing_ca() {
    let tpm = Swtpm::start(LocalCa::shared());
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(!ak_cert_present(&tpm.tcti()).expect("list NV"));
    let test_ca = gce_provisioning_test_double(&tpm, dir.path());
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

//! What the cloud test doubles share (tests only: it needs tss-esapi and openssl).

#![allow(dead_code)]

use std::process::Command;

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
use veil_attest::gcp::{GCP_ECC_AK_CERT_NV_INDEX, GCP_ECC_AK_TEMPLATE_NV_INDEX};

/// Defines NV `index` (owner read and write, `data.len()` bytes) and writes `data` to
/// it: how the tests' cloud test doubles provision a vTPM's NV.
pub fn define_owner_nv(ctx: &mut tss_esapi::Context, index: u32, data: &[u8]) {
    use std::io::Write as _;
    use tss_esapi::abstraction::nv;
    use tss_esapi::attributes::NvIndexAttributes;
    use tss_esapi::handles::NvIndexTpmHandle;
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::interface_types::resource_handles::NvAuth;
    use tss_esapi::structures::NvPublic;

    let attributes = NvIndexAttributes::builder()
        .with_owner_write(true)
        .with_owner_read(true)
        .build()
        .expect("attributes");
    let public = NvPublic::builder()
        .with_nv_index(NvIndexTpmHandle::new(index).expect("index"))
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(attributes)
        .with_data_area_size(data.len())
        .build()
        .expect("NV public");
    ctx.execute_with_nullauth_session(|ctx| {
        let mut rw = nv::NvOpenOptions::NewIndex {
            nv_public: public,
            auth_handle: NvAuth::Owner,
        }
        .open(ctx)?;
        rw.write_all(data)
            .map_err(|_| tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::InternalError))
    })
    .unwrap_or_else(|e| panic!("write NV {index:#x}: {e}"));
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
/// certificate from a test CA (made in `dir` by the first call there; later calls with
/// the same `dir` certify under the same CA). Returns the test CA's certificate (PEM).
pub fn gce_provisioning_test_double(tcti: &str, dir: &std::path::Path) -> Vec<u8> {
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
    let tcti: TctiNameConf = tcti.parse().expect("tcti");
    let mut ctx = Context::new(tcti).expect("open the TPM");
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
    if !dir.join("ca.pem").exists() {
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
    }
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

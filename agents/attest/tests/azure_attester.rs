//! The `azure-sev-snp` node side against a real TPM (swtpm): user data written to NV
//! 0x01400002, the HCL report read from NV 0x01400001, a quote by the AK persisted at
//! 0x81000003.
//!
//! There is no Azure paravisor here, so a TEST DOUBLE plays its part before the
//! attester runs: it persists an RSA AK at 0x81000003 and writes an HCL report whose
//! runtime data names that AK and carries the user data. Its SEV-SNP report is zeros
//! but for report_data, so the chain down to the quote holds while the hardware part is
//! refused: no AMD key signed it. The genuine hardware part is tested on recorded
//! Azure evidence (tests/azure.rs).

mod cloud_support;
mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloud_support::define_owner_nv;
use sha2::{Digest, Sha256};
use support::{LocalCa, Swtpm};
use tss_esapi::Context;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ak, ek, nv};
use tss_esapi::handles::{NvIndexTpmHandle, ObjectHandle, PersistentTpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::structures::Public;
use tss_esapi::tcti_ldr::TctiNameConf;
use veil_attest::azure::attester::{AzureSnpAttester, hcl_report_present};
use veil_attest::azure::{
    AzureError, HCL_AK_HANDLE, HCL_REPORT_NV_INDEX, HCL_USER_DATA_NV_INDEX, HclReport,
    verify_azure_snp, verify_rsa_quote,
};
use veil_attest::snp::{SnpPolicy, SnpProduct, SnpVerifier};
use veil_attest::tpm::quote::QuoteBindingError;

fn context(tpm: &Swtpm) -> Context {
    let tcti: TctiNameConf = tpm.tcti().parse().expect("tcti");
    Context::new(tcti).expect("open swtpm")
}

/// The TEST DOUBLE of Azure's paravisor: an RSA AK at 0x81000003 and an HCL report
/// naming it, with `user_data` (then zeros) as its `user-data`.
fn paravisor_test_double(tpm: &Swtpm, user_data: &[u8; 32]) {
    let mut ctx = context(tpm);
    let rsa = AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048);
    let ek = ek::create_ek_object_2(&mut ctx, rsa, None).expect("EK");
    let created = ak::create_ak_2(
        &mut ctx,
        ek,
        HashingAlgorithm::Sha256,
        rsa,
        SignatureSchemeAlgorithm::RsaSsa,
        None,
        None,
    )
    .expect("AK");
    let loaded =
        ak::load_ak(&mut ctx, ek, None, created.out_private, created.out_public).expect("load AK");
    let persistent = Persistent::Persistent(PersistentTpmHandle::new(HCL_AK_HANDLE).expect("h"));
    ctx.execute_with_nullauth_session(|ctx| {
        ctx.evict_control(Provision::Owner, ObjectHandle::from(loaded), persistent)
    })
    .expect("persist the AK at 0x81000003");
    let (public, _, _) = ctx.read_public(loaded).expect("AK public");
    let Public::Rsa {
        unique, parameters, ..
    } = public
    else {
        panic!("not an RSA AK")
    };
    let exponent = match parameters.exponent().value() {
        0 => 65537u32,
        e => e,
    };
    let mut padded = [0u8; 64];
    padded[..32].copy_from_slice(user_data);
    let runtime = serde_json::json!({
        "keys": [{
            "kid": "HCLAkPub", "kty": "RSA", "key_ops": ["sign"],
            "n": URL_SAFE_NO_PAD.encode(unique.value()),
            "e": URL_SAFE_NO_PAD.encode(exponent.to_be_bytes().iter().skip_while(|b| **b == 0).copied().collect::<Vec<u8>>()),
        }],
        "vm-configuration": { "secure-boot": true, "vmUniqueId": "TEST-DOUBLE" },
        "user-data": hex::encode_upper(padded),
    })
    .to_string()
    .into_bytes();
    let mut report = vec![0u8; 32 + 1184];
    report[..4].copy_from_slice(b"HCLA");
    // report_data of the (unsigned) SNP report: SHA-256 of the runtime data.
    report[32 + 0x50..32 + 0x70].copy_from_slice(&Sha256::digest(&runtime));
    for v in [20 + runtime.len() as u32, 1, 2, 1, runtime.len() as u32] {
        report.extend_from_slice(&v.to_le_bytes());
    }
    report.extend_from_slice(&runtime);
    define_owner_nv(&mut ctx, HCL_REPORT_NV_INDEX, &report);
}

fn vcek() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/azure/milan-vcek.der"
    ))
    .expect("vcek")
}

#[test]
fn the_node_writes_its_user_data_reads_the_report_and_quotes_with_the_named_ak() {
    let tpm = Swtpm::start(LocalCa::shared());
    let user_data = [0x5a; 32];
    assert!(!hcl_report_present(&tpm.tcti()).expect("list NV"));
    paravisor_test_double(&tpm, &user_data);
    assert!(hcl_report_present(&tpm.tcti()).expect("list NV"));

    let mut attester =
        AzureSnpAttester::open(&tpm.tcti(), (0..24).collect(), vcek(), None).expect("open");
    let ev = attester.gather(&user_data).expect("evidence");
    drop(attester);

    // The user data reached NV 0x01400002, padded to 64 bytes.
    let mut ctx = context(&tpm);
    let index = NvIndexTpmHandle::new(HCL_USER_DATA_NV_INDEX).expect("index");
    let written = ctx
        .execute_with_nullauth_session(|ctx| nv::read_full(ctx, NvAuth::Owner, index))
        .expect("read NV 0x01400002");
    assert_eq!(&written[..32], &user_data);
    assert_eq!(&written[32..], &[0u8; 32]);

    // The report read back names the AK that signed the quote, over our user data.
    let hcl = HclReport::parse(&ev.hcl_report).expect("report");
    let runtime = hcl.runtime().expect("runtime data");
    assert!(runtime.carries(&user_data));
    assert!(!runtime.carries(&[0x5b; 32]));
    let pcrs = ev.pcrs.iter().map(|(i, v)| (*i, v.0)).collect();
    assert_eq!(ev.pcrs.len(), 24);
    verify_rsa_quote(&runtime.ak, &ev.quote, &ev.signature, &user_data, &pcrs)
        .expect("the quote verifies with HCLAkPub");
    let e = verify_rsa_quote(&runtime.ak, &ev.quote, &ev.signature, &[0; 32], &pcrs)
        .expect_err("another nonce");
    assert!(
        matches!(e, AzureError::Quote(QuoteBindingError::Nonce { .. })),
        "{e}"
    );

    // The test double's SNP report is not signed by AMD: the hardware part is refused.
    let snp = SnpVerifier::new(SnpPolicy {
        product: SnpProduct::Milan,
        ..SnpPolicy::default()
    })
    .expect("pinned roots");
    let e = verify_azure_snp(&ev, &snp, &user_data).expect_err("no AMD signature");
    assert!(matches!(e, AzureError::Snp(_)), "{e}");

    // A second round writes the new user data over the old (the index exists now).
    let mut attester =
        AzureSnpAttester::open(&tpm.tcti(), vec![0, 7], vcek(), None).expect("reopen");
    let again = attester.gather(&[0x11; 32]).expect("second evidence");
    assert_eq!(again.pcrs.len(), 2);
    drop(attester);
    let written = context(&tpm)
        .execute_with_nullauth_session(|ctx| nv::read_full(ctx, NvAuth::Owner, index))
        .expect("read NV 0x01400002");
    assert_eq!(&written[..32], &[0x11; 32]);
}

#[test]
fn a_vtpm_without_azures_ak_or_report_is_named() {
    let tpm = Swtpm::start(LocalCa::shared());
    let e = AzureSnpAttester::open(&tpm.tcti(), (0..24).collect(), vcek(), None)
        .expect_err("no AK at 0x81000003");
    assert!(e.to_string().contains("0x81000003"), "{e}");
}

//! `veil_cloud::presented`, the choice the bootstrapper and the join service share, on
//! real TPMs (swtpm): a plain TPM with its EK certificate presents its own quote and
//! needs activation; a vTPM provisioned as GCE provisions its own (a TEST DOUBLE of
//! Google's provisioning, its CA playing Google's) presents the cloud's evidence, which
//! needs none.

#[path = "../../attest/tests/cloud_support/mod.rs"]
mod cloud_support;
#[path = "../../attest/tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};

use support::{LocalCa, Swtpm};
use veil_atls::AttesterIssuer;
use veil_attest::Evidence;
use veil_attest::tpm::{TpmAttester, TpmAttesterConfig};

fn presented(tcti: &str) -> (veil_cloud::Presented, Evidence) {
    let config = TpmAttesterConfig::with_tcti(tcti);
    let tpm = Arc::new(AttesterIssuer(Mutex::new(
        TpmAttester::open(&config).expect("open the TPM"),
    )));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let presented = runtime
        .block_on(veil_cloud::presented(&config, tpm))
        .expect("presented");
    let evidence = presented.issuer.issue(&[7; 32]).expect("issue evidence");
    (presented, Evidence::decode(&evidence).expect("decodes"))
}

#[test]
fn a_plain_tpm_presents_its_own_quote_which_needs_activation() {
    let tpm = Swtpm::start(LocalCa::shared());
    let (presented, evidence) = presented(&tpm.tcti());
    assert_eq!(presented.platform, "tpm");
    assert!(!presented.from_cloud);
    assert!(
        !presented.without_activation,
        "a TPM with an EK certificate is activated against it"
    );
    assert!(matches!(evidence, Evidence::Tpm(_)), "{evidence:?}");
}

#[test]
fn a_gce_vtpm_presents_the_clouds_evidence_which_needs_no_activation() {
    let tpm = Swtpm::start(LocalCa::shared());
    let dir = tempfile::tempdir().expect("tempdir");
    cloud_support::gce_provisioning_test_double(&tpm.tcti(), dir.path());
    let (presented, evidence) = presented(&tpm.tcti());
    assert_eq!(presented.platform, "gcp-vtpm");
    assert!(presented.from_cloud);
    assert!(presented.without_activation);
    assert!(matches!(evidence, Evidence::GcpVtpm(_)), "{evidence:?}");
}

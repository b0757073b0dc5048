//! What a node requires of a peer's hardware evidence, made from its own report
//! (`veil_attest::peer`), at work on recorded real SEV-SNP and TDX evidence with the
//! real verifiers: a peer with the node's own launch measurement passes, one launched
//! otherwise is refused by name.

use veil_attest::peer::{PeerPolicyError, policy_like_own, snp_like_own, tdx_like_own};
use veil_attest::snp::report::SnpReport;
use veil_attest::snp::{SnpEvidence, SnpPolicy, SnpProduct, SnpVerifier};
use veil_attest::tdx::{TdQuote, TdxEvidence, TdxPolicy, TdxVerifier};
use veil_attest::{HardwareEvidence, PlatformVerifier, Verifier};

const SNP_REPORT_HEX: &str = include_str!("data/snp/report_milan.hex");
const VCEK_MILAN: &[u8] = include_bytes!("data/snp/vcek_milan.der");
const VCEK_TURIN: &[u8] = include_bytes!("data/snp/vcek_turin.der");
const TDX_QUOTE: &[u8] = include_bytes!("data/tdx/tdx_quote.bin");
const TDX_COLLATERAL: &str = include_str!("data/tdx/tdx_quote_collateral.json");
/// Inside the TDX sample collateral's validity window (see tests/tdx.rs).
const TDX_NOW: u64 = 1_751_328_000;

fn recorded_snp() -> (SnpEvidence, [u8; 32]) {
    let report = hex::decode(SNP_REPORT_HEX.trim()).expect("hex test vector");
    let user: [u8; 32] = report[0x50..0x70].try_into().expect("32 bytes");
    let ev = SnpEvidence {
        report,
        vcek: VCEK_MILAN.to_vec(),
        cert_chain: None,
    };
    (ev, user)
}

/// The recorded report was not made by Veil's attester (its report data's tail is not
/// zero); everything else is Veil's default.
fn recorded_base() -> SnpPolicy {
    SnpPolicy {
        require_zero_report_data_tail: false,
        ..SnpPolicy::default()
    }
}

#[test]
fn a_peer_on_sev_snp_must_show_this_nodes_launch_measurement() {
    let (own, user) = recorded_snp();
    let policy = snp_like_own(&own, recorded_base()).expect("policy from our own report");
    let report = SnpReport::parse(&own.report).expect("report");
    assert_eq!(policy.product, SnpProduct::Milan, "found from our own VCEK");
    assert_eq!(policy.allowed_measurements, vec![*report.measurement()]);
    assert_eq!(policy.min_tcb, report.reported_tcb());
    assert!(!policy.allow_debug && !policy.allow_migration_agent);

    // A peer launched as we were (here: the very report) passes the real verifier.
    let verifier = SnpVerifier::new(policy).expect("verifier");
    verifier
        .verify_snp(&own, &user)
        .expect("a peer with our launch measurement");

    // Had we been launched otherwise, the same peer is refused, by its measurement.
    let mut other = own.clone();
    other.report[0x90] ^= 0x01;
    let policy = snp_like_own(&other, recorded_base()).expect("policy");
    let e = SnpVerifier::new(policy)
        .expect("verifier")
        .verify_snp(&own, &user)
        .expect_err("a peer launched otherwise");
    assert!(e.to_string().to_lowercase().contains("measurement"), "{e}");
}

#[test]
fn a_node_whose_own_vcek_is_not_amds_derives_nothing() {
    let (mut own, _) = recorded_snp();
    own.vcek = b"not a certificate".to_vec();
    let e = snp_like_own(&own, SnpPolicy::default()).expect_err("no AMD chain");
    assert!(matches!(e, PeerPolicyError::UnknownProduct { .. }), "{e}");
    assert!(
        e.to_string().contains("not signed by any pinned AMD ASK"),
        "{e}"
    );
    // Another generation's VCEK is recognised as that generation.
    assert_eq!(
        SnpVerifier::product_of_vcek(VCEK_TURIN),
        Some(SnpProduct::Turin)
    );
}

#[test]
fn a_peer_on_tdx_must_show_this_nodes_mrtd() {
    let own = TdxEvidence {
        quote: TDX_QUOTE.to_vec(),
        collateral: Some(TDX_COLLATERAL.to_owned()),
    };
    let td = TdQuote::parse(TDX_QUOTE).expect("sample");
    let user: [u8; 32] = td.report_data[..32].try_into().expect("32 bytes");
    let base = TdxPolicy {
        now: Some(TDX_NOW),
        ignore_report_data_tail: true,
        ..TdxPolicy::default()
    };
    let policy = tdx_like_own(&own, base.clone()).expect("policy from our own quote");
    assert_eq!(policy.allowed_mrtd, vec![td.mr_td]);
    let evidence = veil_attest::Evidence::Tdx(own.clone());
    TdxVerifier::new(policy)
        .verify(&evidence, &user)
        .expect("a peer with our MRTD");

    // Our own quote with another MRTD (launched from other firmware): refused.
    let at = TDX_QUOTE
        .windows(48)
        .position(|w| w == td.mr_td)
        .expect("MRTD in the quote");
    let mut other = own.clone();
    other.quote[at] ^= 0x01;
    let policy = tdx_like_own(&other, base).expect("policy");
    let e = TdxVerifier::new(policy)
        .verify(&evidence, &user)
        .expect_err("a peer with another MRTD");
    assert!(e.to_string().contains("MRTD"), "{e}");
}

#[test]
fn the_derived_policy_requires_hardware_and_is_one_a_verifier_accepts() {
    let (own, _) = recorded_snp();
    let policy = policy_like_own(&HardwareEvidence::SevSnp(own)).expect("policy");
    assert!(policy.require_hardware);
    assert!(policy.sev_snp.is_some() && policy.tdx.is_none());
    assert_eq!(policy.accepts(), "tpm+sev-snp-report");
    PlatformVerifier::new(
        veil_attest::tpm::TpmVerifier::new(Default::default()),
        &policy,
        "derived",
    )
    .expect("a policy PlatformVerifier takes (measurements pinned)");
}

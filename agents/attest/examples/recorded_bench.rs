//! CPU cost of verifying recorded SEV-SNP (VCEK and AWS's VLEK), TDX, Azure SEV-SNP CVM
//! and GCE vTPM evidence (the real vectors under
//! tests/data/), so hardware we lack still gets a figure:
//! `cargo run --release -p veil-attest --example recorded_bench [-- N]`.
//! Prints the mean wall time per verification (single thread, after a warm-up).

use std::time::Instant;

use veil_attest::snp::{SnpCertChain, SnpEvidence, SnpPolicy, SnpVerifier};
use veil_attest::tdx::{TdQuote, TdxEvidence, TdxPolicy, TdxVerifier};
use veil_attest::{Evidence, Verifier};

const SNP_REPORT_HEX: &str = include_str!("../tests/data/snp/report_milan.hex");
const SNP_VCEK: &[u8] = include_bytes!("../tests/data/snp/vcek_milan.der");
const SNP_ARK: &[u8] = include_bytes!("../tests/data/snp/milan_ark.pem");
const SNP_ASK: &[u8] = include_bytes!("../tests/data/snp/milan_ask.pem");
const TDX_QUOTE: &[u8] = include_bytes!("../tests/data/tdx/tdx_quote.bin");
const TDX_COLLATERAL: &str = include_str!("../tests/data/tdx/tdx_quote_collateral.json");
/// Inside the recorded TDX collateral's validity window (see tests/data/tdx/README.md).
const TDX_NOW: u64 = 1_751_328_000;

fn der(pem: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    Ok(sev::certs::snp::Certificate::from_pem(pem)?.to_der()?)
}

fn time(label: &str, n: u32, mut f: impl FnMut() -> bool) {
    for _ in 0..n.min(10) {
        assert!(f(), "{label}: recorded evidence did not verify");
    }
    let start = Instant::now();
    for _ in 0..n {
        assert!(f(), "{label}: recorded evidence did not verify");
    }
    let per = start.elapsed() / n;
    println!("{label}: mean {per:?} per verification over {n} (1 thread)");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::env::args().nth(1).map_or(Ok(200), |s| s.parse())?;

    let report = hex::decode(SNP_REPORT_HEX.trim())?;
    let mut snp_user = [0u8; 32];
    snp_user.copy_from_slice(&report[0x50..0x70]);
    let snp = Evidence::SevSnp(SnpEvidence {
        report,
        vcek: SNP_VCEK.to_vec(),
        cert_chain: Some(SnpCertChain {
            ask: der(SNP_ASK)?,
            ark: der(SNP_ARK)?,
        }),
    });
    // The recorded report fills all of report_data (it was not made by Veil).
    let snp_verifier = SnpVerifier::new(SnpPolicy {
        require_zero_report_data_tail: false,
        ..SnpPolicy::default()
    })?;
    time("SEV-SNP report + VCEK chain", n, || {
        snp_verifier.verify(&snp, &snp_user).is_ok()
    });

    let td = TdQuote::parse(TDX_QUOTE)?;
    let mut tdx_user = [0u8; 32];
    tdx_user.copy_from_slice(&td.report_data[..32]);
    let tdx = Evidence::Tdx(TdxEvidence {
        quote: TDX_QUOTE.to_vec(),
        collateral: Some(TDX_COLLATERAL.to_owned()),
    });
    let tdx_verifier = TdxVerifier::new(TdxPolicy {
        now: Some(TDX_NOW),
        ignore_report_data_tail: true,
        ..TdxPolicy::default()
    });
    time("TDX quote + collateral", n, || {
        tdx_verifier.verify(&tdx, &tdx_user).is_ok()
    });

    let azure = azure_evidence()?;
    let milan = SnpVerifier::new(SnpPolicy::default())?;
    time(
        "Azure SEV-SNP CVM (HCL report + VCEK chain + RSA vTPM quote)",
        n,
        || veil_attest::azure::verify_azure_snp(&azure, &milan, b"challenge").is_ok(),
    );

    let (azure_tdx, azure_tdx_verifier) = azure_tdx_evidence()?;
    time(
        "Azure TDX CVM (HCL report + TD quote, Veil's DCAP chain check + RSA vTPM quote)",
        n,
        || {
            veil_attest::azure::verify_azure_tdx(&azure_tdx, &azure_tdx_verifier, b"challenge")
                .is_ok()
        },
    );

    let vlek_report = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/snp/aws-vlek-report-v5.bin"
    ))?;
    let mut vlek_user = [0u8; 32];
    vlek_user.copy_from_slice(&vlek_report[0x50..0x70]);
    let vlek = SnpEvidence {
        report: vlek_report,
        vcek: std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/snp/aws-vlek-v5.der"
        ))?,
        cert_chain: None,
    };
    // The recorded AWS report was asked for from VMPL 1 and fills all of report_data.
    let vlek_verifier = SnpVerifier::new(SnpPolicy {
        require_zero_report_data_tail: false,
        max_vmpl: 1,
        ..SnpPolicy::default()
    })?;
    time("AWS SEV-SNP report + VLEK chain (ASVK)", n, || {
        vlek_verifier.verify_snp(&vlek, &vlek_user).is_ok()
    });

    let (gcp, nonce) = gcp_evidence()?;
    // Inside the recorded AK certificate's validity (tests/data/gcp/README.md).
    let june_2026 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_780_272_000);
    let gcp_verifier = veil_attest::gcp::GcpVerifier::pinned()?.at(june_2026);
    time(
        "GCE vTPM (AK certificate chain to Google's root + ECDSA quote)",
        n,
        || gcp_verifier.verify(&gcp, &nonce).is_ok(),
    );
    Ok(())
}

/// The recorded SEV-SNP GCE machine's vTPM evidence.
fn gcp_evidence() -> Result<(veil_attest::gcp::GcpVtpmEvidence, Vec<u8>), Box<dyn std::error::Error>>
{
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/gcp");
    let read = |f: &str| std::fs::read(format!("{dir}/amd-{f}"));
    let mut pcrs = std::collections::BTreeMap::new();
    for (i, v) in read("quote-pcrs.bin")?.chunks(32).enumerate() {
        pcrs.insert(i as u32, veil_attest::Digest32(v.try_into()?));
    }
    let ev = veil_attest::gcp::GcpVtpmEvidence {
        ak_cert: read("ak-cert.der")?,
        intermediates: vec![read("intermediate.der")?],
        quote: read("quote.bin")?,
        signature: read("quote.sig")?,
        pcrs,
        hardware: None,
    };
    Ok((ev, read("nonce.bin")?))
}

/// The recorded TDX CVM's evidence, and a verifier for it at a time inside its Intel
/// collateral (tests/data/azure/README.md); its TCB is out of date by that collateral.
fn azure_tdx_evidence()
-> Result<(veil_attest::azure::AzureTdxEvidence, TdxVerifier), Box<dyn std::error::Error>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/azure");
    let read = |f: &str| std::fs::read(format!("{dir}/{f}"));
    let mut pcrs = std::collections::BTreeMap::new();
    for (i, v) in read("tdx-quote-pcrs.bin")?.chunks(32).enumerate() {
        pcrs.insert(i as u32, veil_attest::Digest32(v.try_into()?));
    }
    let td_quote = read("tdx-td-quote.bin")?;
    let verifier = TdxVerifier::new(TdxPolicy {
        allowed_mrtd: vec![TdQuote::parse(&td_quote)?.mr_td],
        allowed_tcb_status: vec!["OutOfDate".into()],
        now: Some(1_748_736_000),
        ..TdxPolicy::default()
    })
    .with_collateral_json(&String::from_utf8(read(
        "tdx-collateral-00806f050000.json",
    )?)?)?;
    let ev = veil_attest::azure::AzureTdxEvidence {
        hcl_report: read("tdx-hcl-report.bin")?,
        td_quote,
        quote: read("tdx-quote.bin")?,
        signature: read("tdx-quote.sig")?,
        pcrs,
    };
    Ok((ev, verifier))
}

/// The recorded Milan CVM's evidence (tests/data/azure/README.md).
fn azure_evidence() -> Result<veil_attest::azure::AzureSnpEvidence, Box<dyn std::error::Error>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/azure");
    let read = |f: &str| std::fs::read(format!("{dir}/milan-{f}"));
    let mut pcrs = std::collections::BTreeMap::new();
    for (i, v) in read("quote-pcrs.bin")?.chunks(32).enumerate() {
        pcrs.insert(i as u32, veil_attest::Digest32(v.try_into()?));
    }
    Ok(veil_attest::azure::AzureSnpEvidence {
        hcl_report: read("hcl-report.bin")?,
        vcek: read("vcek.der")?,
        cert_chain: None,
        quote: read("quote.bin")?,
        signature: read("quote.sig")?,
        pcrs,
    })
}

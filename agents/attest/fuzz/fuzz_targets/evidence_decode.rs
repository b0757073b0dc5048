//! Feeds arbitrary bytes to every decoder a verifier runs on network input: the evidence
//! envelope, the TPM structures inside it (TPMS_ATTEST, TPMT_SIGNATURE, TPM2B_PUBLIC),
//! and a confidential VM's hardware report attached to a quote; plus the platform
//! policy a node reads from its state disk. None may panic; the raw input is also tried
//! as each structure directly.
//!
//! Run: `cargo +nightly fuzz run evidence_decode` in agents/attest/fuzz.

#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_attest::snp::SnpReport;
use veil_attest::tdx::TdQuote;
use veil_attest::{Evidence, HardwareEvidence, PlatformPolicy};
use veil_attest::tpm::public::TpmPublic;
use veil_attest::tpm::signature::EcdsaTpmSignature;
use veil_attest::tpm::{EkTrust, Quote};

fuzz_target!(|data: &[u8]| {
    let _ = Quote::parse(data).map(|q| q.sha256_pcrs());
    let _ = EcdsaTpmSignature::parse(data);
    let _ = TpmPublic::from_tpm2b(data).map(|p| p.name());

    if let Ok(Evidence::Tpm(ev)) = Evidence::decode(data) {
        let _ = Quote::parse(&ev.quote).map(|q| q.sha256_pcrs());
        let _ = EcdsaTpmSignature::parse(&ev.signature);
        let _ = TpmPublic::from_tpm2b(&ev.ak_public).map(|p| p.name());
        let _ = TpmPublic::from_tpm2b(&ev.ek_public);
        // Certificate parsing and chain building with no anchors must fail cleanly.
        let _ = EkTrust::default().verify_rsa_ek(&ev.ek_cert, std::time::SystemTime::now());
        match &ev.hardware {
            Some(HardwareEvidence::SevSnp(snp)) => {
                let _ = SnpReport::parse(&snp.report);
            }
            Some(HardwareEvidence::Tdx(tdx)) => {
                let _ = TdQuote::parse(&tdx.quote);
            }
            None => {}
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PlatformPolicy::from_json("fuzz input", text);
    }
});

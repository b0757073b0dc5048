//! Feeds arbitrary bytes to the SEV-SNP decoders a verifier runs on network input: the
//! evidence envelope, the ATTESTATION_REPORT parser (raw, and padded/cut to exactly
//! 1184 bytes so the field decoding is reached), and the configfs-tsm certificate table.
//! None may panic.
//!
//! Run: `cargo +nightly fuzz run snp_report` in agents/attest/fuzz.

#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_attest::Evidence;
use veil_attest::snp::attester::parse_cert_table;
use veil_attest::snp::{REPORT_LEN, SnpReport};

fn parse_report(data: &[u8]) {
    if let Ok(r) = SnpReport::parse(data) {
        let _ = (r.reported_tcb(), r.debug_allowed(), r.signature_r_s());
    }
}

fuzz_target!(|data: &[u8]| {
    parse_report(data);
    let mut exact = data.to_vec();
    exact.resize(REPORT_LEN, 0);
    parse_report(&exact);
    let _ = parse_cert_table(data);

    if let Ok(Evidence::SevSnp(ev)) = Evidence::decode(data) {
        parse_report(&ev.report);
    }
});

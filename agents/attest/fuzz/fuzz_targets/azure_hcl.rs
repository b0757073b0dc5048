//! Feeds arbitrary bytes to the Azure HCL report parser and its runtime-data reader
//! (JSON, the AK's JWK): what a verifier runs on an Azure CVM's evidence before any
//! signature is checked. None may panic.
//!
//! Run: `cargo +nightly fuzz run azure_hcl` in agents/attest/fuzz.

#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_attest::azure::HclReport;

fuzz_target!(|data: &[u8]| {
    if let Ok(hcl) = HclReport::parse(data) {
        let _ = (hcl.kind(), hcl.hw_report().len(), hcl.runtime_data_sha256());
        let _ = hcl.runtime();
    }
});

//! Feeds arbitrary bytes to the TDX decoders a verifier runs on network input: the raw
//! quote parser, and the evidence envelope with a TDX body (quote and collateral JSON).
//! None may panic.
//!
//! Run: `cargo +nightly fuzz run tdx_quote` in agents/attest/fuzz.

#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_attest::Evidence;
use veil_attest::tdx::{TdQuote, TdxPolicy, TdxVerifier, check_td_attributes};

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = TdQuote::parse(data) {
        let _ = check_td_attributes(&q.td_attributes, false);
    }

    if let Ok(Evidence::Tdx(ev)) = Evidence::decode(data) {
        if let Ok(q) = TdQuote::parse(&ev.quote) {
            let _ = q.is_debug();
        }
        // Full verification with whatever collateral came along must fail cleanly.
        let verifier = TdxVerifier::new(TdxPolicy {
            now: Some(1_751_328_000),
            ..TdxPolicy::default()
        });
        let _ = verifier.verify_tdx(&ev, &[0; 32]);
    }
});

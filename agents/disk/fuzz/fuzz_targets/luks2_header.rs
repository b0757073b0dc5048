//! The LUKS2 header JSON a host wrote: every check a node runs on it before its key
//! is tried must end in a verdict, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_disk::Integrity;
use veil_disk::header::{canonical, check_structure, verify_mac};

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = check_structure(&json, None);
    let _ = check_structure(&json, Some(Integrity::None));
    let _ = check_structure(&json, Some(Integrity::HmacSha256));
    let _ = verify_mac(&json, &[7; 32]);
    let _ = canonical(&json);
});

//! PE/UKI parsing, Authenticode and the PCR computation must not panic on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = measured_boot::authenticode_sha256("fuzz", data);
    if let Ok(uki) = measured_boot::Uki::parse(data.to_vec()) {
        let _ = measured_boot::expected_pcrs(&uki);
        let _ = (uki.os_release(), uki.roothash(), uki.uname());
    }
});

//! The TCG binary log and systemd's JSON-SEQ log parsers, and replay.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = measured_boot::EventLog::parse_tcg("fuzz", data) {
        let _ = log.replay();
    }
    if let Ok(log) = measured_boot::EventLog::parse_systemd_json("fuzz", data) {
        let _ = log.replay();
    }
});

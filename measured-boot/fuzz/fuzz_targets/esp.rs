//! The ESP reader alone (BPB checks, then fatfs), with the input as the partition.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    measured_boot_fuzz::contain_fatfs_panics();
    let _ = measured_boot::esp::read_file(
        "fuzz",
        Cursor::new(data),
        0,
        data.len() as u64,
        measured_boot::esp::DEFAULT_LOADER_PATH,
    );
});

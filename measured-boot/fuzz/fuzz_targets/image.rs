//! The disk image reader (MBR, GPT, FAT via fatfs) on an in-memory cursor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    measured_boot_fuzz::contain_fatfs_panics();
    let _ = measured_boot::Image::from_reader("fuzz", &mut Cursor::new(data), data.len() as u64);
});

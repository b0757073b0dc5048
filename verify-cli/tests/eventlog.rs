//! `veil eventlog` on damaged input: a clear error naming the file, never a panic.

use std::process::Command;

#[test]
fn damaged_firmware_log_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("binary_bios_measurements");
    std::fs::write(&log, [0xde, 0xad, 0xbe, 0xef, 1, 2, 3]).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .arg("eventlog")
        .arg("--firmware")
        .arg(&log)
        .output()
        .expect("run veil");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("binary_bios_measurements"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn missing_log_is_an_error_naming_the_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["eventlog", "--firmware", "/nonexistent/veil-log"])
        .output()
        .expect("run veil");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/veil-log"), "{stderr}");
}

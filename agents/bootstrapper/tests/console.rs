//! Runs the real binary against a fake sysfs tree and checks the console protocol.

use std::fs;
use std::path::Path;
use std::process::Command;

/// A mountinfo with `/` on 254:0 (mounted twice: the last one counts) and, if given,
/// that device's DM UUID in sysfs.
fn fake_root_mount(root: &Path, dm_uuid: Option<&str>) {
    let mi = root.join("proc/self/mountinfo");
    fs::create_dir_all(mi.parent().expect("parent")).expect("mkdir");
    fs::write(
        &mi,
        "1 0 0:2 / / rw - rootfs rootfs rw\n\
         22 1 254:0 / / ro,relatime shared:1 - erofs /dev/mapper/root ro\n\
         23 22 0:21 / /proc rw shared:2 - proc proc rw\n",
    )
    .expect("write mountinfo");
    if let Some(uuid) = dm_uuid {
        let dm = root.join("sys/dev/block/254:0/dm");
        fs::create_dir_all(&dm).expect("mkdir dm");
        fs::write(dm.join("uuid"), format!("{uuid}\n")).expect("write uuid");
    }
}

#[test]
fn prints_platform_pcrs_and_ready() {
    let root = tempfile::tempdir().expect("tempdir");
    fake_root_mount(root.path(), Some("CRYPT-VERITY-0123abcd-root"));
    let bank = root.path().join("sys/class/tpm/tpm0/pcr-sha256");
    fs::create_dir_all(&bank).expect("mkdir");
    for i in 0..=15u8 {
        fs::write(
            bank.join(i.to_string()),
            format!("{}\n", format!("{i:02X}").repeat(32)),
        )
        .expect("write pcr");
    }
    fs::create_dir_all(root.path().join("dev")).expect("mkdir dev");
    fs::write(root.path().join("dev/tpmrm0"), b"").expect("write tpm");

    let out = Command::new(env!("CARGO_BIN_EXE_veil-bootstrapper"))
        .args(["--once", "--root"])
        .arg(root.path())
        .output()
        .expect("run veil-bootstrapper");
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("veil-eventlog"))
        .collect();
    assert!(lines[0].starts_with("veil-platform tpm tpm="), "{stdout}");
    assert_eq!(lines.len(), 1 + 1 + 16 + 1, "{stdout}");
    assert_eq!(
        lines[1],
        "veil-root 254:0 verity=true dm-uuid=CRYPT-VERITY-0123abcd-root"
    );
    assert_eq!(lines[2 + 11], format!("veil-pcr 11 {}", "0b".repeat(32)));
    assert_eq!(*lines.last().expect("lines"), "veil-ready");
}

#[test]
fn malformed_pcr_fails_naming_the_file() {
    let root = tempfile::tempdir().expect("tempdir");
    fake_root_mount(root.path(), None);
    let bank = root.path().join("sys/class/tpm/tpm0/pcr-sha256");
    fs::create_dir_all(&bank).expect("mkdir");
    for i in 0..=15u8 {
        fs::write(bank.join(i.to_string()), "00".repeat(32)).expect("write pcr");
    }
    fs::write(bank.join("9"), "zz").expect("write bad pcr");
    let out = Command::new(env!("CARGO_BIN_EXE_veil-bootstrapper"))
        .args(["--once", "--root"])
        .arg(root.path())
        .output()
        .expect("run veil-bootstrapper");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pcr-sha256/9"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("veil-ready"));
}

#[test]
fn event_logs_round_trip_through_the_console() {
    use base64::Engine as _;
    use sha2::Digest as _;

    let root = tempfile::tempdir().expect("tempdir");
    fake_root_mount(root.path(), None);
    let fw = root
        .path()
        .join("sys/kernel/security/tpm0/binary_bios_measurements");
    fs::create_dir_all(fw.parent().expect("parent")).expect("mkdir");
    // Not a multiple of the chunk size, and every byte value.
    let log: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
    fs::write(&fw, &log).expect("write log");

    let out = Command::new(env!("CARGO_BIN_EXE_veil-bootstrapper"))
        .args(["--once", "--root"])
        .arg(root.path())
        .output()
        .expect("run veil-bootstrapper");
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let header = stdout
        .lines()
        .find(|l| l.starts_with("veil-eventlog firmware "))
        .expect("firmware event log header");
    let want = format!(
        "veil-eventlog firmware 1000 {}",
        hex::encode(sha2::Sha256::digest(&log))
    );
    assert_eq!(header, want);
    let mut got = Vec::new();
    for l in stdout.lines() {
        if let Some(b64) = l.strip_prefix("veil-eventlog-data firmware ") {
            got.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .expect("base64"),
            );
        }
    }
    assert_eq!(got, log);
    assert!(stdout.contains("veil-eventlog-end firmware"));
    // No systemd log under this root: nothing printed for it.
    assert!(!stdout.contains("veil-eventlog systemd"));
}

#[test]
fn root_without_device_mapper_is_not_verity() {
    let root = tempfile::tempdir().expect("tempdir");
    fake_root_mount(root.path(), None);
    let out = Command::new(env!("CARGO_BIN_EXE_veil-bootstrapper"))
        .args(["--once", "--root"])
        .arg(root.path())
        .output()
        .expect("run veil-bootstrapper");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        stdout.contains("veil-root 254:0 verity=false dm-uuid=none"),
        "{stdout}"
    );
}

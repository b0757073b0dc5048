//! LUKS2 on plain files (formatting and key checks need no device-mapper).

use std::io::{Seek, SeekFrom, Write};

use veil_disk::{Contents, DiskError, Integrity, check_key, format, inspect};

const KEY: [u8; 64] = [0x5a; 64];

fn blank(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("state.img");
    let f = std::fs::File::create(&path).expect("create");
    f.set_len(32 << 20).expect("size");
    path
}

#[test]
fn blank_device_is_formatted_and_opens_with_its_key_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = blank(&dir);
    assert_eq!(inspect(&dev).expect("inspect"), Contents::Blank);
    let uuid = format(&dev, &KEY, Integrity::None).expect("format");
    assert_eq!(
        inspect(&dev).expect("inspect"),
        Contents::Luks2 { uuid: uuid.clone() }
    );
    check_key(&dev, &KEY).expect("the key opens it");

    let before = std::fs::read(&dev).expect("bytes");
    let err = check_key(&dev, &[0xa5; 64]).expect_err("wrong key");
    assert!(matches!(err, DiskError::WrongKey { .. }), "{err}");
    // Never reformatted: a second format is refused, and nothing changed.
    let err = format(&dev, &KEY, Integrity::None).expect_err("formatted twice");
    assert!(matches!(err, DiskError::NotBlank { .. }), "{err}");
    assert!(
        std::fs::read(&dev).expect("bytes") == before,
        "device changed"
    );
}

#[test]
fn keyslot_uses_cheap_pbkdf2_and_the_volume_aes_xts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = blank(&dir);
    format(&dev, &KEY, Integrity::None).expect("format");
    // The header's JSON area starts at 4096 in the primary header.
    let bytes = std::fs::read(&dev).expect("bytes");
    let json_end = bytes[4096..16384]
        .iter()
        .position(|&b| b == 0)
        .expect("json ends");
    let json: serde_json::Value =
        serde_json::from_slice(&bytes[4096..4096 + json_end]).expect("LUKS2 JSON");
    let slot = &json["keyslots"]["0"];
    assert_eq!(slot["kdf"]["type"], "pbkdf2", "{slot}");
    assert_eq!(slot["kdf"]["iterations"], veil_disk::KEYSLOT_ITERATIONS);
    assert_eq!(json["segments"]["0"]["encryption"], "aes-xts-plain64");
    assert_eq!(slot["key_size"], 64);
}

#[test]
fn corrupt_header_and_foreign_data_are_errors_never_formatted() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Foreign data: an ext4-like superblock somewhere in the first MiB.
    let foreign = blank(&dir);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&foreign)
        .expect("open");
    f.seek(SeekFrom::Start(1024 + 56)).expect("seek");
    f.write_all(&[0x53, 0xef]).expect("write");
    drop(f);
    let err = format(&foreign, &KEY, Integrity::None).expect_err("foreign");
    assert!(matches!(err, DiskError::NotBlank { .. }), "{err}");
    assert!(err.to_string().contains("state.img"), "{err}");

    // LUKS2 with both header copies damaged: the magic is there, nothing loads.
    let dev = dir.path().join("luks.img");
    std::fs::File::create(&dev)
        .expect("create")
        .set_len(32 << 20)
        .expect("size");
    format(&dev, &KEY, Integrity::None).expect("format");
    let mut bytes = std::fs::read(&dev).expect("bytes");
    for b in &mut bytes[4096..8192] {
        *b ^= 0xff;
    }
    // The secondary header sits after the primary's JSON area (16 KiB by default).
    for b in &mut bytes[16384 + 4096..16384 + 8192] {
        *b ^= 0xff;
    }
    std::fs::write(&dev, &bytes).expect("write");
    let err = inspect(&dev).expect_err("corrupt");
    assert!(matches!(err, DiskError::CorruptHeader { .. }), "{err}");
    let err = format(&dev, &KEY, Integrity::None).expect_err("corrupt must not be formatted");
    assert!(matches!(err, DiskError::CorruptHeader { .. }), "{err}");
    assert!(
        std::fs::read(&dev).expect("bytes") == bytes,
        "device changed"
    );
    let err = check_key(&dev, &KEY).expect_err("corrupt");
    assert!(err.to_string().contains("does not load"), "{err}");
}

#[test]
fn a_just_created_partition_with_stale_bytes_is_cleared_to_blank() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = blank(&dir);
    // Like an image's old backup GPT left in space a new partition now covers.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&dev)
        .expect("open");
    f.seek(SeekFrom::Start(8 << 20)).expect("seek");
    f.write_all(b"EFI PART").expect("write");
    f.seek(SeekFrom::Start(20 << 20)).expect("seek");
    f.write_all(b"beyond the header area").expect("write");
    drop(f);
    assert!(matches!(inspect(&dev), Err(DiskError::NotBlank { .. })));
    veil_disk::clear_new_partition(&dev).expect("clear");
    assert_eq!(inspect(&dev).expect("inspect"), Contents::Blank);
    // Only the header area is cleared; the size is unchanged.
    let bytes = std::fs::read(&dev).expect("bytes");
    assert_eq!(bytes.len(), 32 << 20);
    assert_eq!(&bytes[20 << 20..(20 << 20) + 22], b"beyond the header area");
}

/// An integrity volume needs device-mapper even to be formatted (dm-integrity writes
/// its superblock through a temporary device): inside a node it is formatted (the
/// end-to-end test boots one); on a host without device-mapper the error says so and
/// the device is left blank.
#[test]
fn an_integrity_volume_is_formatted_only_where_device_mapper_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = blank(&dir);
    let formatted = format(&dev, &KEY, Integrity::HmacSha256);
    // The kernel lists device-mapper among its block devices when it has it.
    let has_dm = std::fs::read_to_string("/proc/devices")
        .is_ok_and(|d| d.lines().any(|l| l.ends_with(" device-mapper")));
    if has_dm {
        let uuid = formatted.expect("format with integrity");
        assert_eq!(inspect(&dev).expect("inspect"), Contents::Luks2 { uuid });
        assert_eq!(
            veil_disk::integrity(&dev).expect("integrity"),
            Integrity::HmacSha256
        );
        check_key(&dev, &KEY).expect("its key opens it");
    } else {
        let err = formatted.expect_err("no device-mapper here");
        let text = err.to_string();
        assert!(text.contains("LUKS2 format of"), "{text}");
        assert!(text.contains(&dev.display().to_string()), "{text}");
        assert_eq!(inspect(&dev).expect("inspect"), Contents::Blank);
    }
}

#[test]
fn a_plain_volume_reports_no_integrity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = blank(&dir);
    format(&dev, &KEY, Integrity::None).expect("format");
    assert_eq!(
        veil_disk::integrity(&dev).expect("integrity"),
        Integrity::None
    );
}

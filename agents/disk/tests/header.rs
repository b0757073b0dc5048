//! The state disk's LUKS2 header as the host might rewrite it (valid checksums, the
//! node's key still opening the keyslot): each change is refused, named, before the
//! key is used, and nothing is written to the device. On plain files: checking a
//! header and a key needs no device-mapper.

mod support;

use std::path::PathBuf;

use support::luks2_rewrite::{attack, rewrite};
use veil_disk::{DiskError, Integrity, check_key, format, header};

const KEY: [u8; 64] = [0x5a; 64];

fn formatted(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("state.img");
    let _ = std::fs::remove_file(&path);
    std::fs::File::create(&path)
        .expect("create")
        .set_len(32 << 20)
        .expect("size");
    format(&path, &KEY, Integrity::None).expect("format");
    path
}

fn refused(dev: &PathBuf, says: &str) {
    let before = std::fs::read(dev).expect("bytes");
    let err = check_key(dev, &KEY).expect_err("refused");
    assert!(matches!(err, DiskError::Header { .. }), "{err}");
    assert!(
        err.to_string().contains(says),
        "expected '{says}' in: {err}"
    );
    assert!(err.to_string().contains("state.img"), "{err}");
    assert!(
        std::fs::read(dev).expect("bytes") == before,
        "the device changed"
    );
}

#[test]
fn veils_own_header_checks_out_and_carries_one_mac() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = formatted(&dir);
    assert_eq!(check_key(&dev, &KEY).expect("checks out"), Integrity::None);
    // A wrong key is a wrong key, not a "changed header".
    let err = check_key(&dev, &[0xa5; 64]).expect_err("wrong key");
    assert!(matches!(err, DiskError::WrongKey { .. }), "{err}");
}

#[test]
fn a_null_cipher_is_refused_though_the_key_still_opens_the_keyslot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = formatted(&dir);
    rewrite(&dev, 0, attack("cipher-null").expect("attack")).expect("rewrite");
    refused(&dev, "cipher_null");
}

#[test]
fn another_cipher_a_smaller_key_and_an_open_keyslot_are_refused_by_name() {
    for (name, says) in [
        (
            "other-cipher",
            "segment 0's cipher is \"aes-cbc-essiv:sha256\"",
        ),
        ("small-key", "keyslot 0's key size is 32"),
        ("open-keyslot", "cipher_null"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = formatted(&dir);
        rewrite(&dev, 0, attack(name).expect("attack")).expect("rewrite");
        refused(&dev, says);
    }
}

#[test]
fn a_plausible_change_is_caught_by_the_mac() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = formatted(&dir);
    rewrite(&dev, 0, attack("plausible").expect("attack")).expect("rewrite");
    refused(&dev, "MAC does not match");
}

#[test]
fn a_header_without_veils_mac_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = formatted(&dir);
    rewrite(&dev, 0, |j| j["tokens"] = serde_json::json!({})).expect("rewrite");
    refused(&dev, "no veil-header-mac token");
    // A token of another kind (a systemd-cryptenroll one, say) is not Veil's either.
    let dev = formatted(&dir);
    rewrite(&dev, 0, |j| {
        j["tokens"]["1"] = serde_json::json!({"type": "systemd-tpm2", "keyslots": ["0"]})
    })
    .expect("rewrite");
    refused(&dev, "token 1 is of type \"systemd-tpm2\"");
}

#[test]
fn the_cluster_setting_is_enforced_where_the_node_knows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = formatted(&dir);
    let json = dump(&dev);
    let err = header::check_structure(&json, Some(Integrity::HmacSha256)).expect_err("setting");
    assert!(
        err.contains("its integrity is none, the cluster's is hmac-sha256"),
        "{err}"
    );
    // Integrity removed from an integrity volume's header (formatting one needs
    // device-mapper, so the segment is changed here).
    let mut with = json.clone();
    with["segments"]["0"]["integrity"] = serde_json::json!({
        "type": "hmac(sha256)", "journal_encryption": "none", "journal_integrity": "none"
    });
    with["segments"]["0"]["sector_size"] = 4096.into();
    with["keyslots"]["0"]["key_size"] = 96.into();
    assert_eq!(
        header::check_structure(&with, Some(Integrity::HmacSha256)),
        Ok(Integrity::HmacSha256)
    );
    let mut without = with.clone();
    (attack("no-integrity").expect("attack"))(&mut without);
    let err = header::check_structure(&without, Some(Integrity::HmacSha256)).expect_err("removed");
    assert!(err.contains("its integrity is none"), "{err}");
}

#[test]
fn the_mac_covers_everything_but_itself_and_needs_the_disk_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = formatted(&dir);
    let json = dump(&dev);
    let key = header::mac_key(&KEY);
    header::verify_mac(&json, &key).expect("verifies");
    let other = header::mac_key(&[0xa5; 64]);
    assert!(
        header::verify_mac(&json, &other).is_err(),
        "another key's MAC"
    );
    // Key order and whitespace do not matter; values do.
    let reordered: serde_json::Value =
        serde_json::from_str(&serde_json::to_string_pretty(&json).expect("text")).expect("json");
    header::verify_mac(&reordered, &key).expect("canonical");
    let mut changed = json.clone();
    changed["config"]["json_size"] = "12289".into();
    assert!(header::verify_mac(&changed, &key).is_err());
}

#[test]
fn the_kernels_table_must_match_the_header() {
    let plain = "aes-xts-plain64 :64:logon:cryptsetup:abc-d0 0 254:3 32768";
    header::check_table("crypt", plain, Integrity::None).expect("plain");
    for (target, params, integrity, says) in [
        (
            "crypt",
            "cipher_null-ecb - 0 254:3 32768",
            Integrity::None,
            "cipher_null-ecb",
        ),
        (
            "crypt",
            "aes-xts-plain64 :32:logon:x 0 254:3 32768",
            Integrity::None,
            "32 bytes",
        ),
        ("linear", "254:3 0", Integrity::None, "not crypt"),
        ("crypt", plain, Integrity::HmacSha256, "capi:authenc"),
    ] {
        let err = header::check_table(target, params, integrity).expect_err(params);
        assert!(err.contains(says), "{params}: {err}");
    }
}

/// The header's JSON as the node reads it.
fn dump(dev: &PathBuf) -> serde_json::Value {
    let bytes = std::fs::read(dev).expect("bytes");
    let end = bytes[4096..16384]
        .iter()
        .position(|&b| b == 0)
        .expect("json ends");
    serde_json::from_slice(&bytes[4096..4096 + end]).expect("LUKS2 JSON")
}

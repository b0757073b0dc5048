//! Derivation and the master-secret file.

use std::os::unix::fs::PermissionsExt;

use veil_keys::{InitSecret, KeyError, MasterSecret};

const UUID_A: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
const UUID_B: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";

fn fixed() -> MasterSecret {
    MasterSecret::from_parts(&[7; 32], &[9; 32]).expect("parts")
}

#[test]
fn derivation_is_hkdf_sha256_with_distinct_infos() {
    let m = fixed();
    // RFC 5869 HKDF-SHA256 computed independently (Python: hashlib/hmac) for
    // IKM = 07*32, salt = 09*32, info = "veil/v1/cluster-id", L = 32.
    assert_eq!(
        m.cluster_id().to_hex(),
        "f1d9969a1826ac741c5ac3b08d8fd5ce3bd16f0a781dd286d19b07d421d86a2a"
    );
    let a = m.disk_key(UUID_A).expect("a");
    let b = m.disk_key(UUID_B).expect("b");
    assert_ne!(a.as_ref(), b.as_ref(), "each disk its own key");
    assert_eq!(
        a.as_ref(),
        m.disk_key(&UUID_A.to_uppercase()).expect("upper").as_ref(),
        "one disk, one key, whatever the case of its UUID"
    );
    assert_ne!(&a[..32], m.measurement_secret().as_ref());
    assert_ne!(m.cluster_id().0, *m.measurement_secret());
    // Another salt: every key changes.
    let other = MasterSecret::from_parts(&[7; 32], &[10; 32]).expect("parts");
    assert_ne!(other.cluster_id(), m.cluster_id());
    assert_ne!(other.disk_key(UUID_A).expect("a").as_ref(), a.as_ref());
}

#[test]
fn wrong_lengths_and_bad_uuids_are_refused() {
    assert!(matches!(
        MasterSecret::from_parts(&[1; 31], &[2; 32]),
        Err(KeyError::Length {
            what: "master secret",
            got: 31
        })
    ));
    assert!(matches!(
        MasterSecret::from_parts(&[1; 32], &[]),
        Err(KeyError::Length {
            what: "salt",
            got: 0
        })
    ));
    assert!(matches!(
        fixed().disk_key("not-a-uuid"),
        Err(KeyError::BadUuid(_))
    ));
}

#[test]
fn debug_never_shows_the_secret() {
    let m = fixed();
    let shown = format!("{m:?}");
    assert!(!shown.contains(&hex::encode([7u8; 32])), "{shown}");
    assert!(!shown.contains("[7, 7"), "{shown}");
    assert!(shown.contains(&m.cluster_id().to_hex()), "{shown}");
}

#[test]
fn file_round_trips_with_mode_0600_and_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("master-secret.json");
    let m = MasterSecret::generate();
    m.write_file(&path).expect("write");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let back = MasterSecret::read_file(&path).expect("read");
    assert_eq!(back.cluster_id(), m.cluster_id());

    let before = std::fs::read(&path).expect("bytes");
    let err = MasterSecret::generate()
        .write_file(&path)
        .expect_err("exists");
    assert!(matches!(err, KeyError::Exists { .. }), "{err}");
    assert_eq!(
        std::fs::read(&path).expect("bytes"),
        before,
        "file untouched"
    );
}

#[test]
fn unreadable_or_loose_files_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.json");
    fixed().write_file(&path).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = MasterSecret::read_file(&path).expect_err("loose");
    assert!(
        matches!(err, KeyError::Permissions { mode: 0o644, .. }),
        "{err}"
    );

    let garbled = dir.path().join("g.json");
    std::fs::write(
        &garbled,
        b"{\"veilMasterSecret\":1,\"secret\":\"!!\",\"salt\":\"\"}",
    )
    .expect("write");
    std::fs::set_permissions(&garbled, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let err = MasterSecret::read_file(&garbled).expect_err("garbled");
    assert!(err.to_string().contains("secret"), "{err}");

    let missing = MasterSecret::read_file(&dir.path().join("nope")).expect_err("missing");
    assert!(missing.to_string().contains("nope"), "{missing}");
}

#[test]
fn the_init_secret_hash_is_domain_separated_sha256_and_checks_the_secret() {
    let s = InitSecret::from_bytes(&[7; 32]).expect("bytes");
    // Python: hashlib.sha256(b"veil/v1/init-secret\0" + bytes([7] * 32)).hexdigest()
    assert_eq!(
        hex::encode(s.hash()),
        "08497f7918b75a99f0eddc8fe65f0bec9c43535a756e6b78a8363146026f2a6b"
    );
    assert!(s.matches(&s.hash()));
    let other = InitSecret::from_bytes(&[8; 32]).expect("bytes");
    assert!(!other.matches(&s.hash()), "another secret is refused");
    let mut one_bit = s.hash();
    one_bit[31] ^= 1;
    assert!(!s.matches(&one_bit));
    assert!(matches!(
        InitSecret::from_bytes(&[7; 16]),
        Err(KeyError::Length {
            what: "init secret",
            got: 16
        })
    ));
    let shown = format!("{s:?}");
    assert!(!shown.contains("[7, 7"), "{shown}");
    assert!(shown.contains(&hex::encode(s.hash())), "{shown}");
}

#[test]
fn the_init_secret_file_is_private_and_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("init-secret.json");
    let s = InitSecret::generate();
    s.write_file(&path).expect("write");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(InitSecret::read_file(&path).expect("read").hash(), s.hash());
    let err = InitSecret::generate()
        .write_file(&path)
        .expect_err("exists");
    assert!(err.to_string().contains("init-secret file"), "{err}");

    // A master-secret file is not an init-secret file, and says so.
    let master = dir.path().join("master.json");
    fixed().write_file(&master).expect("write");
    let err = InitSecret::read_file(&master).expect_err("wrong kind");
    assert!(
        err.to_string().contains("not a Veil init-secret file"),
        "{err}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    assert!(matches!(
        InitSecret::read_file(&path),
        Err(KeyError::Permissions { mode: 0o640, .. })
    ));
}

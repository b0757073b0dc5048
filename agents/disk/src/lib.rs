//! The node's encrypted state disk: a LUKS2 volume (aes-xts-plain64, 512-bit volume
//! key) on the `veil-state` partition, whose only keyslot is opened with the disk key
//! the cluster derives for that partition (`veil-keys`).
//!
//! Data safety comes first: a device is formatted only if it is [`Contents::Blank`]
//! (all zeros where a header would be). A LUKS header that does not load, a key that
//! does not open it, or a device holding anything else is an error that names the
//! device and changes nothing on it.
//!
//! Optionally ([`Integrity::HmacSha256`]) the volume is authenticated as well: LUKS2
//! with dm-integrity, each 4 KiB sector carrying an HMAC-SHA256 tag under a key of its
//! own, so that a storage provider that changes or swaps sectors makes reads fail
//! instead of returning what it chose (XTS alone hides data but does not detect such
//! changes). It costs the tag space, a journal, and a wipe of the whole volume when it
//! is created (every tag must be valid before the first read).
//!
//! The header is the host's to write, so it is checked and authenticated before use
//! ([`header`]): exactly Veil's parameters, and an HMAC under a key derived from the
//! disk key; a volume is formatted and unlocked from the header in memory, never
//! re-read in between; and what the kernel runs once it is unlocked is checked too.
//!
//! The keyslot uses PBKDF2-SHA256 with 1,000 iterations and no benchmark. A KDF slows
//! down guessing a low-entropy passphrase; our "passphrase" is a uniformly random
//! 512-bit key, which no number of iterations makes more or less guessable. The
//! default (Argon2id, 1 GiB, ~2 s) would cost every boot memory and seconds under
//! emulation for nothing.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use libcryptsetup_rs::consts::flags::{CryptActivate, CryptPbkdf, CryptVolumeKey, CryptWipe};
use libcryptsetup_rs::consts::vals::{CryptKdf, CryptWipePattern, EncryptionFormat};
use libcryptsetup_rs::{
    CryptDevice, CryptInit, CryptParamsLuks2, CryptParamsLuks2Ref, CryptPbkdfType, Either,
    LibcryptErr,
};
use thiserror::Error;

pub mod header;

/// Cipher and mode of the state volume.
pub const CIPHER: (&str, &str) = ("aes", "xts-plain64");
/// Volume key bytes: AES-256 in XTS mode takes two 256-bit keys.
pub const VOLUME_KEY_LEN: usize = 64;
/// Integrity-protected volumes add an HMAC-SHA256 key to the volume key.
pub const INTEGRITY_KEY_LEN: usize = 32;
/// Sector size of an integrity-protected volume: one tag per 4 KiB, not per 512 B.
const INTEGRITY_SECTOR: u32 = 4096;

/// Whether the state volume is authenticated as well as encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Integrity {
    /// aes-xts-plain64 only (confidentiality).
    #[default]
    None,
    /// aes-xts-plain64 with a dm-integrity HMAC-SHA256 tag per sector.
    HmacSha256,
}

impl Integrity {
    /// The name in libcryptsetup's terms, if any.
    fn spec(self) -> Option<&'static str> {
        match self {
            Integrity::None => None,
            Integrity::HmacSha256 => Some("hmac(sha256)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Integrity::None => "none",
            Integrity::HmacSha256 => "hmac-sha256",
        }
    }
}

/// PBKDF2 iterations of the keyslot (see the crate docs for why so few).
pub const KEYSLOT_ITERATIONS: u32 = 1000;
/// How much of the device must be zero for it to count as blank: the LUKS2 header
/// area (both copies of the binary header and JSON, 16 MiB) or the whole device.
const BLANK_CHECK_BYTES: u64 = 16 << 20;
const LUKS_MAGIC: &[u8] = b"LUKS\xba\xbe";

#[derive(Debug, Error)]
pub enum DiskError {
    #[error("cannot read or write {}: {source}", device.display())]
    Read {
        device: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} has a LUKS header that does not load ({reason}); it may hold data, so it is left as it is",
        device.display()
    )]
    CorruptHeader { device: PathBuf, reason: String },
    #[error(
        "{} is neither blank nor LUKS2: it holds other data, so it is not formatted",
        device.display()
    )]
    NotBlank { device: PathBuf },
    #[error("the key does not open the LUKS2 volume on {} (nothing was changed)", device.display())]
    WrongKey { device: PathBuf },
    #[error(
        "the LUKS2 header on {} is not the one Veil wrote: {reason}; it was not used and nothing was written",
        device.display()
    )]
    Header { device: PathBuf, reason: String },
    #[error(
        "the unlocked volume {name} is not what its header says ({reason}): it was closed again"
    )]
    Active { name: String, reason: String },
    #[error("{what} {} failed: {reason}", device.display())]
    Cryptsetup {
        what: &'static str,
        device: PathBuf,
        reason: String,
    },
}

/// What a device holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// Zeros where a header would be: safe to format.
    Blank,
    /// A LUKS2 volume with this UUID.
    Luks2 { uuid: String },
}

fn cs_err(what: &'static str, device: &Path) -> impl FnOnce(LibcryptErr) -> DiskError {
    let device = device.to_owned();
    move |e| DiskError::Cryptsetup {
        what,
        device,
        reason: e.to_string(),
    }
}

fn load(device: &Path) -> Result<CryptDevice, DiskError> {
    let mut cd = CryptInit::init(device).map_err(cs_err("opening", device))?;
    cd.context_handle()
        .load::<()>(Some(EncryptionFormat::Luks2), None)
        .map_err(|e| DiskError::CorruptHeader {
            device: device.into(),
            reason: e.to_string(),
        })?;
    Ok(cd)
}

/// Looks at `device` without changing it.
pub fn inspect(device: &Path) -> Result<Contents, DiskError> {
    let read_err = |source| DiskError::Read {
        device: device.into(),
        source,
    };
    let mut head = Vec::new();
    File::open(device)
        .map_err(read_err)?
        .take(BLANK_CHECK_BYTES)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    if head.iter().all(|&b| b == 0) {
        return Ok(Contents::Blank);
    }
    // A damaged primary header may still load from its secondary copy; anything that
    // does not load is somebody's data.
    match load(device) {
        Ok(mut cd) => {
            let uuid = cd
                .status_handle()
                .get_uuid()
                .map_err(cs_err("reading the LUKS UUID of", device))?;
            Ok(Contents::Luks2 {
                uuid: uuid.to_string(),
            })
        }
        Err(e) if head.starts_with(LUKS_MAGIC) => Err(e),
        Err(_) => Err(DiskError::NotBlank {
            device: device.into(),
        }),
    }
}

/// Zeroes where a header would be, on a partition the caller has *just created*
/// (so it cannot hold data): disk space freed by growing an image still carries
/// stale bytes, such as the image's old backup GPT, which would make it look used.
pub fn clear_new_partition(device: &Path) -> Result<(), DiskError> {
    use std::io::Write;
    let write_err = |source| DiskError::Read {
        device: device.into(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(write_err)?;
    let len = f.seek(std::io::SeekFrom::End(0)).map_err(write_err)?;
    f.seek(std::io::SeekFrom::Start(0)).map_err(write_err)?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = len.min(BLANK_CHECK_BYTES);
    while left > 0 {
        let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
        f.write_all(&zeros[..n]).map_err(write_err)?;
        left -= n as u64;
    }
    f.sync_all().map_err(write_err)
}

/// Formats a blank `device` as LUKS2 with one keyslot opened by `key`, its header
/// authenticated under `key` ([`header`]); returns the volume's UUID. Refuses anything
/// but [`Contents::Blank`].
pub fn format(device: &Path, key: &[u8], integrity: Integrity) -> Result<String, DiskError> {
    format_device(device, key, integrity).map(|(uuid, _)| uuid)
}

/// [`format`], then unlocks the new volume as `/dev/mapper/<name>` from the header
/// still in memory (never read back from the disk, where the host could have changed
/// it in between). A volume with [`Integrity::HmacSha256`] must then be wiped
/// ([`wipe_new_volume`]).
pub fn format_and_unlock(
    device: &Path,
    name: &str,
    key: &[u8],
    integrity: Integrity,
) -> Result<(String, PathBuf), DiskError> {
    let (uuid, mut cd) = format_device(device, key, integrity)?;
    activate(&mut cd, device, name, key)?;
    check_active(name, integrity)?;
    Ok((uuid, Path::new("/dev/mapper").join(name)))
}

fn format_device(
    device: &Path,
    key: &[u8],
    integrity: Integrity,
) -> Result<(String, CryptDevice), DiskError> {
    match inspect(device)? {
        Contents::Blank => {}
        Contents::Luks2 { .. } => {
            return Err(DiskError::NotBlank {
                device: device.into(),
            });
        }
    }
    // The device held nothing; a format that fails halfway must not leave it looking
    // like somebody's data (which Init would then refuse forever).
    format_blank(device, key, integrity).inspect_err(|_| {
        if let Err(e) = clear_new_partition(device) {
            tracing::error!("clearing {} after a failed format: {e}", device.display());
        }
    })
}

fn format_blank(
    device: &Path,
    key: &[u8],
    integrity: Integrity,
) -> Result<(String, CryptDevice), DiskError> {
    let mut cd = CryptInit::init(device).map_err(cs_err("opening", device))?;
    cd.settings_handle()
        .set_pbkdf_type(&CryptPbkdfType {
            type_: CryptKdf::Pbkdf2,
            hash: Some("sha256".into()),
            time_ms: 0,
            iterations: KEYSLOT_ITERATIONS,
            max_memory_kb: 0,
            parallel_threads: 0,
            flags: CryptPbkdf::NO_BENCHMARK,
        })
        .map_err(cs_err("setting the keyslot KDF for", device))?;
    match integrity.spec() {
        None => cd.context_handle().format::<()>(
            EncryptionFormat::Luks2,
            CIPHER,
            None,
            Either::Right(VOLUME_KEY_LEN),
            None,
        ),
        Some(spec) => {
            let params = CryptParamsLuks2 {
                pbkdf: None,
                integrity: Some(spec.into()),
                integrity_params: None,
                data_alignment: 0,
                data_device: None,
                sector_size: INTEGRITY_SECTOR,
                label: None,
                subsystem: None,
            };
            let mut params: CryptParamsLuks2Ref<'_> = (&params)
                .try_into()
                .map_err(cs_err("preparing the integrity parameters for", device))?;
            cd.context_handle().format(
                EncryptionFormat::Luks2,
                CIPHER,
                None,
                Either::Right(VOLUME_KEY_LEN + INTEGRITY_KEY_LEN),
                Some(&mut params),
            )
        }
    }
    .map_err(cs_err("LUKS2 format of", device))?;
    cd.keyslot_handle()
        .add_by_key(None, None, key, CryptVolumeKey::empty())
        .map_err(cs_err("adding the keyslot to", device))?;
    // Authenticate what was just written (the header in memory, as libcryptsetup
    // wrote it), and check it is what Veil means to write.
    let json = cd
        .status_handle()
        .dump_json()
        .map_err(cs_err("reading the new LUKS2 metadata of", device))?;
    header::check_structure(&json, Some(integrity)).map_err(|reason| DiskError::Header {
        device: device.into(),
        reason: format!("libcryptsetup wrote an unexpected header: {reason}"),
    })?;
    let token = header::mac_token(&json, &header::mac_key(key));
    cd.token_handle()
        .json_set(libcryptsetup_rs::TokenInput::AddToken(&token))
        .map_err(cs_err("writing the header's MAC to", device))?;
    let uuid = cd
        .status_handle()
        .get_uuid()
        .map_err(cs_err("reading the LUKS UUID of", device))?;
    tracing::info!(device = %device.display(), %uuid, integrity = integrity.name(), "formatted the state disk");
    Ok((uuid.to_string(), cd))
}

/// The integrity protection of the LUKS2 volume on `device`, from its metadata.
/// (libcryptsetup-rs's `get_integrity_info` turns the C struct's null strings of a
/// volume without integrity into undefined behaviour; the LUKS2 JSON says the same.)
pub fn integrity(device: &Path) -> Result<Integrity, DiskError> {
    let mut cd = load(device)?;
    let json = cd
        .status_handle()
        .dump_json()
        .map_err(cs_err("reading the LUKS2 metadata of", device))?;
    let kinds: Vec<&str> = json["segments"]
        .as_object()
        .map(|segments| {
            segments
                .values()
                .filter_map(|seg| seg["integrity"]["type"].as_str())
                .collect()
        })
        .unwrap_or_default();
    match kinds.as_slice() {
        [] => Ok(Integrity::None),
        kinds if kinds.iter().all(|k| *k == "hmac(sha256)") => Ok(Integrity::HmacSha256),
        kinds => Err(DiskError::Cryptsetup {
            what: "reading the integrity of",
            device: device.into(),
            reason: format!("unexpected integrity {kinds:?}"),
        }),
    }
}

/// Writes zeros over the whole of a just-formatted, unlocked integrity volume
/// (`mapped`, on `device`), so that every sector has a valid tag before anything reads
/// it; otherwise reads of never-written sectors fail.
pub fn wipe_new_volume(device: &Path, mapped: &Path) -> Result<(), DiskError> {
    let size = File::open(mapped)
        .and_then(|mut f| f.seek(std::io::SeekFrom::End(0)))
        .map_err(|source| DiskError::Read {
            device: mapped.into(),
            source,
        })?;
    let mut cd = load(device)?;
    cd.wipe_handle()
        .wipe::<()>(
            mapped,
            CryptWipePattern::Zero,
            0,
            size,
            1 << 20,
            CryptWipe::NO_DIRECT_IO,
            None,
            None,
        )
        .map_err(cs_err("initializing the integrity tags of", device))
}

/// Opens the volume with `key` from the loaded header `cd`: as `/dev/mapper/<name>`,
/// or with no name only checks the key.
fn activate(cd: &mut CryptDevice, device: &Path, name: &str, key: &[u8]) -> Result<(), DiskError> {
    passphrase(cd, device, Some(name), key)
}

fn passphrase(
    cd: &mut CryptDevice,
    device: &Path,
    name: Option<&str>,
    key: &[u8],
) -> Result<(), DiskError> {
    match cd
        .activate_handle()
        .activate_by_passphrase(name, None, key, CryptActivate::empty())
    {
        Ok(_) => Ok(()),
        // EPERM: no keyslot opens with this passphrase.
        Err(LibcryptErr::IOError(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(DiskError::WrongKey {
                device: device.into(),
            })
        }
        Err(e) => Err(cs_err("unlocking", device)(e)),
    }
}

/// Loads the header on `device` once and checks it (structure, then MAC under
/// `key`); returns the loaded copy, to be used for anything that follows, and its
/// integrity setting (which must be `expected`, where the node knows it).
fn load_verified(
    device: &Path,
    key: &[u8],
    expected: Option<Integrity>,
) -> Result<(CryptDevice, Integrity), DiskError> {
    let mut cd = load(device)?;
    let json = cd
        .status_handle()
        .dump_json()
        .map_err(cs_err("reading the LUKS2 metadata of", device))?;
    let refused = |reason| DiskError::Header {
        device: device.into(),
        reason,
    };
    let integrity = header::check_structure(&json, expected).map_err(refused)?;
    if let Err(reason) = header::verify_mac(&json, &header::mac_key(key)) {
        // A header exactly like Veil's whose MAC fails: tell a wrong key (the usual
        // mistake: another cluster's secret) from a changed header. Trying the key
        // activates nothing, and this header's keyslot parameters are Veil's.
        passphrase(&mut cd, device, None, key)?;
        return Err(refused(reason));
    }
    Ok((cd, integrity))
}

/// Checks the header on `device` and that `key` opens it, without activating it;
/// returns its integrity setting.
pub fn check_key(device: &Path, key: &[u8]) -> Result<Integrity, DiskError> {
    let (mut cd, integrity) = load_verified(device, key, None)?;
    passphrase(&mut cd, device, None, key)?;
    Ok(integrity)
}

/// Unlocks the volume on `device` as `/dev/mapper/<name>` once its header checked out
/// ([`header`]) and, where the node knows it, has the `expected` integrity setting;
/// then checks what the kernel runs. Returns the mapped device and the volume's
/// integrity. (Needs device-mapper and dm-crypt: inside the node, not on a build
/// host.)
pub fn unlock(
    device: &Path,
    name: &str,
    key: &[u8],
    expected: Option<Integrity>,
) -> Result<(PathBuf, Integrity), DiskError> {
    let (mut cd, integrity) = load_verified(device, key, expected)?;
    activate(&mut cd, device, name, key)?;
    check_active(name, integrity)?;
    Ok((Path::new("/dev/mapper").join(name), integrity))
}

/// Checks the kernel's table for the active volume `name` against `integrity`;
/// closes the volume if it differs.
fn check_active(name: &str, integrity: Integrity) -> Result<(), DiskError> {
    use devicemapper::{DM, DevId, DmFlags, DmName, DmOptions};
    let active = |reason: String| DiskError::Active {
        name: name.into(),
        reason,
    };
    let dm = DM::new().map_err(|e| active(format!("device-mapper: {e}")))?;
    let dm_name = DmName::new(name).map_err(|e| active(e.to_string()))?;
    let (_, table) = dm
        .table_status(
            &DevId::Name(dm_name),
            DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE),
        )
        .map_err(|e| active(format!("reading its table: {e}")))?;
    let checked = match table.as_slice() {
        [(_, _, target, params)] => header::check_table(target, params, integrity),
        t => Err(format!("it has {} targets, not one", t.len())),
    };
    if let Err(reason) = checked {
        if let Ok(mut cd) = CryptInit::init_by_name_and_header(name, None) {
            let _ = cd.activate_handle().deactivate(
                name,
                libcryptsetup_rs::consts::flags::CryptDeactivate::empty(),
            );
        }
        return Err(active(reason));
    }
    Ok(())
}

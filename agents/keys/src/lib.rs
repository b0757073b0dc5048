//! Veil's key hierarchy. `veil init` makes one master secret and a salt per cluster;
//! every key the cluster uses is derived from them with HKDF-SHA256 (RFC 5869), each
//! with its own `info` string, so knowing one derived key reveals nothing about the
//! master secret or any other key:
//!
//! | key                    | `info`                       | length |
//! |------------------------|------------------------------|--------|
//! | cluster id (public)    | `veil/v1/cluster-id`         | 32     |
//! | a node's state disk    | `veil/v1/disk:<uuid>`        | 64 (AES-256-XTS) |
//! | measurement secret     | `veil/v1/measurement-secret` | 32     |
//!
//! The init secret ([`InitSecret`]) stands apart: the operator makes it before the
//! first node boots, gives the node only its hash (in the node's launch
//! configuration), and proves with it that a `veil init` is theirs.
//!
//! Secrets live in [`zeroize`] types, are wiped when dropped, and never appear in
//! `Debug` output. The master-secret and init-secret files are the operator's only
//! copies; each is written once, mode 0600, and never overwritten.

mod file;
mod init;

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// Bytes of master secret and of salt.
pub const SECRET_LEN: usize = 32;
/// Bytes of a disk key: aes-xts-plain64 with AES-256 takes two 256-bit keys.
pub const DISK_KEY_LEN: usize = 64;

const INFO_CLUSTER_ID: &str = "veil/v1/cluster-id";
const INFO_DISK: &str = "veil/v1/disk:";
const INFO_MEASUREMENT: &str = "veil/v1/measurement-secret";
const INFO_MESH: &str = "veil/v1/mesh-secret";
const INFO_ADMIN: &str = "veil/v1/admin-credential";
const MASTER_SECRET_FILE: &str = "master-secret file";

pub use init::{INIT_SECRET_FILE, InitSecret};

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("{what} is {got} bytes, expected {SECRET_LEN}")]
    Length { what: &'static str, got: usize },
    #[error("'{0}' is not a partition UUID (8-4-4-4-12 hex digits)")]
    BadUuid(String),
    #[error("{} already exists: refusing to overwrite it (it may be the only copy of another {what})", path.display())]
    Exists { path: PathBuf, what: &'static str },
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a Veil {what}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{} can be read by others (mode {mode:o}): chmod 600 it first", path.display())]
    Permissions { path: PathBuf, mode: u32 },
}

/// A cluster's master secret and salt.
pub struct MasterSecret {
    secret: Zeroizing<[u8; SECRET_LEN]>,
    salt: [u8; SECRET_LEN],
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterSecret")
            .field("cluster_id", &self.cluster_id())
            .finish_non_exhaustive()
    }
}

/// The cluster id: public, derived, and what a node extends into PCR 15.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(pub [u8; 32]);

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({})", self.to_hex())
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl ClusterId {
    /// PCR 15 (SHA-256 bank) after extending a zero PCR with this id once: what a
    /// node admitted to this cluster in this boot holds.
    pub fn member_pcr(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update([0u8; 32]);
        h.update(self.0);
        h.finalize().into()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<ClusterId> {
        let bytes = hex::decode(s.trim()).ok()?;
        Some(ClusterId(bytes.try_into().ok()?))
    }
}

/// A state-disk key (LUKS2 volume key material).
pub type DiskKey = Zeroizing<[u8; DISK_KEY_LEN]>;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    /// Format marker.
    veil_master_secret: u32,
    secret: String,
    salt: String,
}

impl Drop for File {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

fn fixed(what: &'static str, bytes: &[u8]) -> Result<[u8; SECRET_LEN], KeyError> {
    bytes.try_into().map_err(|_| KeyError::Length {
        what,
        got: bytes.len(),
    })
}

impl MasterSecret {
    /// A fresh master secret and salt from the OS's CSPRNG.
    pub fn generate() -> MasterSecret {
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        let mut salt = [0u8; SECRET_LEN];
        OsRng.fill_bytes(secret.as_mut());
        OsRng.fill_bytes(&mut salt);
        MasterSecret { secret, salt }
    }

    /// From received bytes (e.g. an Init request); both must be [`SECRET_LEN`] bytes.
    pub fn from_parts(secret: &[u8], salt: &[u8]) -> Result<MasterSecret, KeyError> {
        Ok(MasterSecret {
            secret: Zeroizing::new(fixed("master secret", secret)?),
            salt: fixed("salt", salt)?,
        })
    }

    /// The master secret's bytes, to hand to an attested node only.
    pub fn secret(&self) -> &[u8; SECRET_LEN] {
        &self.secret
    }

    pub fn salt(&self) -> &[u8; SECRET_LEN] {
        &self.salt
    }

    fn derive<const N: usize>(&self, info: &[u8]) -> Zeroizing<[u8; N]> {
        let mut out = Zeroizing::new([0u8; N]);
        // Expand fails only for outputs over 255 * 32 bytes; ours are at most 64.
        #[allow(clippy::expect_used)]
        Hkdf::<Sha256>::new(Some(&self.salt), self.secret.as_ref())
            .expand(info, out.as_mut())
            .expect("HKDF output length is fixed and small");
        out
    }

    pub fn cluster_id(&self) -> ClusterId {
        ClusterId(*self.derive::<32>(INFO_CLUSTER_ID.as_bytes()))
    }

    /// The key of the state disk whose partition UUID is `uuid` (any case).
    pub fn disk_key(&self, uuid: &str) -> Result<DiskKey, KeyError> {
        let uuid = normalize_uuid(uuid)?;
        Ok(self.derive::<DISK_KEY_LEN>(format!("{INFO_DISK}{uuid}").as_bytes()))
    }

    /// The secret the cluster's nodes share for measurement-bound values.
    pub fn measurement_secret(&self) -> Zeroizing<[u8; 32]> {
        self.derive::<32>(INFO_MEASUREMENT.as_bytes())
    }

    /// What the operator shows the join service to change the cluster's membership
    /// (`veil remove`): derived, so the master secret itself never travels for it.
    pub fn admin_credential(&self) -> Zeroizing<[u8; 32]> {
        self.derive::<32>(INFO_ADMIN.as_bytes())
    }

    /// Whether `given` is this cluster's admin credential (in constant time: it is a
    /// secret, and the caller may be anyone).
    pub fn admin_credential_matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        given.len() == 32 && bool::from(self.admin_credential().as_slice().ct_eq(given))
    }

    /// The secret the WireGuard mesh derives each pair's preshared key from.
    pub fn mesh_secret(&self) -> Zeroizing<[u8; 32]> {
        self.derive::<32>(INFO_MESH.as_bytes())
    }

    /// Writes the master-secret file, mode 0600. Refuses if `path` exists: it may be
    /// the only copy of another cluster's secret.
    pub fn write_file(&self, path: &Path) -> Result<(), KeyError> {
        let file = File {
            veil_master_secret: 1,
            secret: B64.encode(self.secret.as_ref()),
            salt: B64.encode(self.salt),
        };
        file::write_new_private(path, MASTER_SECRET_FILE, &file)
    }

    /// Reads a master-secret file; refuses one that others can read.
    pub fn read_file(path: &Path) -> Result<MasterSecret, KeyError> {
        let file: File = file::read_private(path, MASTER_SECRET_FILE)?;
        let fields = file::Fields {
            path,
            what: MASTER_SECRET_FILE,
        };
        fields.version(file.veil_master_secret)?;
        let secret = fields.base64("secret", &file.secret)?;
        let salt = fields.base64("salt", &file.salt)?;
        MasterSecret::from_parts(&secret, &salt).map_err(|e| fields.malformed(e.to_string()))
    }
}

/// Lower-case 8-4-4-4-12 form, so one disk never has two keys.
fn normalize_uuid(uuid: &str) -> Result<String, KeyError> {
    let lower = uuid.trim().to_ascii_lowercase();
    let groups: Vec<&str> = lower.split('-').collect();
    let shape = [8, 4, 4, 4, 12];
    let ok = groups.len() == shape.len()
        && groups
            .iter()
            .zip(shape)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(lower)
    } else {
        Err(KeyError::BadUuid(uuid.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_derived_secret_is_its_own_and_the_same_from_the_same_master() {
        let m = MasterSecret::generate();
        let again = MasterSecret::from_parts(m.secret(), m.salt()).expect("copy");
        assert_eq!(*m.mesh_secret(), *again.mesh_secret());
        assert_ne!(*m.mesh_secret(), *m.measurement_secret());
        assert_ne!(*m.mesh_secret(), m.cluster_id().0);
        assert_ne!(*m.mesh_secret(), *MasterSecret::generate().mesh_secret());
        assert_eq!(*m.admin_credential(), *again.admin_credential());
        assert_ne!(*m.admin_credential(), *m.mesh_secret());
        assert_ne!(
            *m.admin_credential(),
            *MasterSecret::generate().admin_credential()
        );
        assert!(m.admin_credential_matches(&*again.admin_credential()));
        assert!(!m.admin_credential_matches(&*MasterSecret::generate().admin_credential()));
        assert!(!m.admin_credential_matches(&m.admin_credential()[..31]));
    }

    #[test]
    fn uuids_normalize_and_garbage_is_refused() {
        assert_eq!(
            normalize_uuid("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
                .ok()
                .as_deref(),
            Some("0fc63daf-8483-4772-8e79-3d69d8477de4")
        );
        for bad in [
            "",
            "0fc63daf84834772",
            "0fc63daf-8483-4772-8e79-3d69d8477dzz",
            "../x",
        ] {
            assert!(normalize_uuid(bad).is_err(), "{bad}");
        }
    }
}

//! A node's launch configuration: what the operator tells a node before it has any
//! key, through the cloud's launch settings (QEMU's fw_cfg here):
//!
//! - `opt/veil/init-secret-hash`: the hash of the operator's init secret
//!   (veil-keys' `InitSecret`). Only a node launched with it serves Init, and only to
//!   a caller who sends that secret;
//! - `opt/veil/cluster-id`: the cluster a joiner must find its join service in (PCR
//!   15 of the service equal to that id extended once).
//!
//! The host writes these, so a node believes them only after measuring them: at
//! start the bootstrapper extends [`LAUNCH_PCR`] once with [`LaunchConfig::event`], a
//! digest of their canonical text. Every verifier then sees what the node was told:
//! `veil init` requires the value its own init secret gives, so a node launched with
//! anyone else's hash never receives the master secret, and an operator can audit
//! which cluster a joiner was told to look for. A host that changes them only stops
//! the node from being initialized or joining (which it can always do).
//!
//! PCR 14 is free on a Veil node: it is shim's (MOK) in the PC client registry, and
//! Veil boots its UKI without shim.

use std::path::Path;

use sha2::{Digest, Sha256};
use thiserror::Error;

/// The PCR a node extends with its launch configuration, once per boot.
pub const LAUNCH_PCR: u32 = 14;
/// fw_cfg file with the init secret's hash (64 hex digits).
pub const FW_CFG_INIT_SECRET_HASH: &str =
    "sys/firmware/qemu_fw_cfg/by_name/opt/veil/init-secret-hash/raw";
/// fw_cfg file with the cluster id a joiner must find (64 hex digits).
pub const FW_CFG_CLUSTER_ID: &str = "sys/firmware/qemu_fw_cfg/by_name/opt/veil/cluster-id/raw";

/// First line of the measured text: the format, so no other text can collide.
const FORMAT: &str = "veil-launch-config/v1";

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("the launch configuration's {what} ({path}) is not 64 hex digits: '{value}'")]
    Malformed {
        what: &'static str,
        path: String,
        value: String,
    },
    #[error("cannot read the launch configuration's {what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the node was launched with; every field may be absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaunchConfig {
    pub init_secret_hash: Option<[u8; 32]>,
    pub cluster_id: Option<[u8; 32]>,
}

impl LaunchConfig {
    /// The launch configuration under `root` (`/`, but in tests). A missing file is
    /// an absent field; a malformed one is an error, not silently absent.
    pub fn read(root: &Path) -> Result<LaunchConfig, LaunchError> {
        Ok(LaunchConfig {
            init_secret_hash: read_hex(root, FW_CFG_INIT_SECRET_HASH, "init secret hash")?,
            cluster_id: read_hex(root, FW_CFG_CLUSTER_ID, "cluster id")?,
        })
    }

    /// The measured text: fixed order, one `key=value` per line, `none` when absent.
    pub fn canonical(&self) -> String {
        let field = |v: &Option<[u8; 32]>| v.map_or_else(|| "none".to_owned(), hex::encode);
        format!(
            "{FORMAT}\ninit-secret-hash={}\ncluster-id={}\n",
            field(&self.init_secret_hash),
            field(&self.cluster_id)
        )
    }

    /// The digest extended into [`LAUNCH_PCR`]: SHA-256 of [`Self::canonical`].
    pub fn event(&self) -> [u8; 32] {
        Sha256::digest(self.canonical().as_bytes()).into()
    }

    /// [`LAUNCH_PCR`] after the node extended it once with [`Self::event`].
    pub fn expected_pcr(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(self.event());
        h.finalize().into()
    }
}

fn read_hex(
    root: &Path,
    file: &'static str,
    what: &'static str,
) -> Result<Option<[u8; 32]>, LaunchError> {
    let path = root.join(file);
    let raw = match std::fs::read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LaunchError::Io {
                what,
                path: path.display().to_string(),
                source,
            });
        }
    };
    let text = String::from_utf8_lossy(&raw);
    let malformed = || LaunchError::Malformed {
        what,
        path: file
            .rsplit_once("/by_name/")
            .map_or(file, |(_, p)| p)
            .into(),
        value: text.chars().take(80).collect(),
    };
    let bytes = hex::decode(text.trim()).map_err(|_| malformed())?;
    bytes.try_into().map(Some).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_text_names_every_field_and_absence() {
        let none = LaunchConfig::default();
        assert_eq!(
            none.canonical(),
            "veil-launch-config/v1\ninit-secret-hash=none\ncluster-id=none\n"
        );
        let both = LaunchConfig {
            init_secret_hash: Some([0xab; 32]),
            cluster_id: Some([0x01; 32]),
        };
        assert!(
            both.canonical()
                .contains(&format!("cluster-id={}\n", "01".repeat(32)))
        );
        // Moving a value to the other field changes the measurement.
        let swapped = LaunchConfig {
            init_secret_hash: Some([0x01; 32]),
            cluster_id: Some([0xab; 32]),
        };
        assert_ne!(both.event(), swapped.event());
        assert_ne!(both.expected_pcr(), none.expected_pcr());
        // Python: sha256(bytes(32) + sha256(b"veil-launch-config/v1\ninit-secret-hash=none\ncluster-id=none\n").digest())
        assert_eq!(
            hex::encode(none.expected_pcr()),
            "4f8db1a0df0aed3f35182bdb725094fd0a1b62bb38b70b277dc6102dcfe86803"
        );
    }

    #[test]
    fn files_are_read_and_a_malformed_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            LaunchConfig::read(dir.path()).expect("nothing"),
            LaunchConfig::default()
        );
        let hash = dir.path().join(FW_CFG_INIT_SECRET_HASH);
        std::fs::create_dir_all(hash.parent().expect("parent")).expect("mkdir");
        std::fs::write(&hash, format!("{}\n", "cd".repeat(32))).expect("write");
        let read = LaunchConfig::read(dir.path()).expect("hash");
        assert_eq!(read.init_secret_hash, Some([0xcd; 32]));
        assert_eq!(read.cluster_id, None);

        std::fs::write(&hash, "cdcd").expect("write");
        let e = LaunchConfig::read(dir.path()).expect_err("short");
        let text = e.to_string();
        assert!(text.contains("init secret hash"), "{text}");
        assert!(text.contains("opt/veil/init-secret-hash"), "{text}");
        assert!(text.contains("'cdcd'"), "{text}");
    }
}

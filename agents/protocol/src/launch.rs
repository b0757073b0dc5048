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
//! On a cloud there is no fw_cfg: the same settings come in the instance's user data
//! ([`CloudLaunch`], fetched by `veil-cloud`), with the join service's address and the
//! node's role beside them. They are measured the same way; the address and role, as
//! with fw_cfg, are hints that steer nothing a verifier relies on.
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
    #[error("the launch settings in the instance's user data, line {line}: {reason}")]
    UserData { line: usize, reason: String },
    #[error("cannot read the launch configuration's {what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// First line of Veil's launch settings in a cloud's user data.
pub const USER_DATA_FORMAT: &str = "veil-launch/v1";

/// The most user data Veil reads (clouds allow up to 64 KiB; Veil's is a few lines).
pub const MAX_USER_DATA: usize = 4096;

/// A cloud instance's launch settings, from its user data:
///
/// ```text
/// veil-launch/v1
/// init-secret-hash=<64 hex digits>   (the first control-plane node only)
/// cluster-id=<64 hex digits>         (joiners)
/// join-endpoint=<host>:<port>        (joiners)
/// role=worker|control-plane          (joiners; worker if absent)
/// ```
///
/// Every key is optional, none may repeat, and nothing else is allowed (a typo is an
/// error, not an absent setting). User data that does not begin with
/// [`USER_DATA_FORMAT`] is someone else's (cloud-init's, say): no settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudLaunch {
    pub launch: LaunchConfig,
    pub join_endpoint: Option<String>,
    pub role: Option<String>,
}

impl CloudLaunch {
    /// Veil's settings in `user_data`, None if it is not Veil's.
    pub fn parse(user_data: &[u8]) -> Result<Option<CloudLaunch>, LaunchError> {
        let bad = |line: usize, reason: String| LaunchError::UserData { line, reason };
        if user_data.len() > MAX_USER_DATA {
            return Err(bad(
                0,
                format!("{} bytes, more than {MAX_USER_DATA}", user_data.len()),
            ));
        }
        let text = std::str::from_utf8(user_data).map_err(|e| bad(0, format!("not UTF-8: {e}")))?;
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, first)) if first.trim() == USER_DATA_FORMAT => {}
            _ => return Ok(None),
        }
        let mut out = CloudLaunch::default();
        let mut seen = std::collections::BTreeSet::new();
        for (i, line) in lines {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| bad(n, format!("'{}' is not key=value", excerpt(line))))?;
            let (key, value) = (key.trim(), value.trim());
            if !seen.insert(key.to_owned()) {
                return Err(bad(n, format!("'{}' is given twice", excerpt(key))));
            }
            let digest = |what: &str| {
                hex::decode(value)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| {
                        bad(
                            n,
                            format!("{what} '{}' is not 64 hex digits", excerpt(value)),
                        )
                    })
            };
            match key {
                "init-secret-hash" => out.launch.init_secret_hash = Some(digest(key)?),
                "cluster-id" => out.launch.cluster_id = Some(digest(key)?),
                "join-endpoint" => {
                    let ok = value.len() < 256
                        && !value.contains(char::is_whitespace)
                        && value.rsplit_once(':').is_some_and(|(host, port)| {
                            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
                        });
                    if !ok {
                        return Err(bad(
                            n,
                            format!("join-endpoint '{}' is not HOST:PORT", excerpt(value)),
                        ));
                    }
                    out.join_endpoint = Some(value.to_owned());
                }
                "role" => match value {
                    "worker" | "control-plane" => out.role = Some(value.to_owned()),
                    _ => {
                        return Err(bad(
                            n,
                            format!(
                                "role '{}' is neither worker nor control-plane",
                                excerpt(value)
                            ),
                        ));
                    }
                },
                _ => {
                    return Err(bad(
                        n,
                        format!(
                            "unknown key '{}' (known: init-secret-hash, cluster-id, join-endpoint, role)",
                            excerpt(key)
                        ),
                    ));
                }
            }
        }
        Ok(Some(out))
    }
}

/// At most 80 characters of what the host wrote, for an error message.
fn excerpt(s: &str) -> String {
    s.chars().take(80).collect()
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

    #[test]
    fn cloud_user_data_gives_the_same_settings_and_names_what_is_wrong() {
        let text = format!(
            "veil-launch/v1\n# a joiner\ncluster-id={}\njoin-endpoint=10.0.0.4:7001\nrole=worker\n",
            "01".repeat(32)
        );
        let got = CloudLaunch::parse(text.as_bytes())
            .expect("parses")
            .expect("Veil's");
        assert_eq!(got.launch.cluster_id, Some([1; 32]));
        assert_eq!(got.launch.init_secret_hash, None);
        assert_eq!(got.join_endpoint.as_deref(), Some("10.0.0.4:7001"));
        assert_eq!(got.role.as_deref(), Some("worker"));
        // Measured exactly as the same values from fw_cfg would be.
        let fw_cfg = LaunchConfig {
            init_secret_hash: None,
            cluster_id: Some([1; 32]),
        };
        assert_eq!(got.launch.event(), fw_cfg.event());

        // Someone else's user data (cloud-init's) is no settings at all.
        assert_eq!(
            CloudLaunch::parse(b"#cloud-config\nusers: []\n").expect("not ours"),
            None
        );
        assert_eq!(CloudLaunch::parse(b"").expect("empty"), None);

        for (text, says) in [
            (
                "veil-launch/v1\ncluster-id=abcd\n",
                "line 2: cluster-id 'abcd' is not 64 hex digits",
            ),
            ("veil-launch/v1\nrole=boss\n", "role 'boss' is neither"),
            (
                "veil-launch/v1\njoin-endpoint=10.0.0.4\n",
                "is not HOST:PORT",
            ),
            (
                "veil-launch/v1\njoin-endpoint=10.0.0.4:0\n",
                "is not HOST:PORT",
            ),
            (
                "veil-launch/v1\nrole=worker\nrole=worker\n",
                "line 3: 'role' is given twice",
            ),
            ("veil-launch/v1\nclusterid=00\n", "unknown key 'clusterid'"),
            ("veil-launch/v1\njust words\n", "is not key=value"),
        ] {
            let e = CloudLaunch::parse(text.as_bytes()).expect_err(text);
            assert!(e.to_string().contains(says), "{text:?}: {e}");
        }
        let huge = format!("veil-launch/v1\n{}", "#".repeat(MAX_USER_DATA));
        let e = CloudLaunch::parse(huge.as_bytes()).expect_err("too large");
        assert!(e.to_string().contains("more than 4096"), "{e}");
    }
}

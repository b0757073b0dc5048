//! The operator's secret files: JSON, written once with mode 0600 and never over an
//! existing file, read only when nobody else can read them.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::KeyError;

/// Writes `value` as JSON to a new file at `path` (mode 0600); `what` names the file
/// in errors.
pub(crate) fn write_new_private<T: Serialize>(
    path: &Path,
    what: &'static str,
    value: &T,
) -> Result<(), KeyError> {
    let text =
        Zeroizing::new(
            serde_json::to_string_pretty(value).map_err(|e| KeyError::Malformed {
                path: path.into(),
                what,
                reason: e.to_string(),
            })?,
        );
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.into(),
                what,
            },
            _ => KeyError::Io {
                what: "create",
                path: path.into(),
                source,
            },
        })?;
    let io = |source| KeyError::Io {
        what: "write",
        path: path.into(),
        source,
    };
    out.write_all(text.as_bytes()).map_err(io)?;
    out.write_all(b"\n").map_err(io)?;
    out.sync_all().map_err(io)
}

/// Reads the JSON file at `path`; refuses one that others can read.
pub(crate) fn read_private<T: DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, KeyError> {
    let io = |source| KeyError::Io {
        what: "read",
        path: path.into(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.into(),
            mode: mode & 0o777,
        });
    }
    let text = Zeroizing::new(std::fs::read(path).map_err(io)?);
    serde_json::from_slice(&text).map_err(|e| KeyError::Malformed {
        path: path.into(),
        what,
        reason: e.to_string(),
    })
}

/// Reads the fields of a secret file once it parsed: its format version and base64
/// values, each error naming the file and the field.
pub(crate) struct Fields<'a> {
    pub path: &'a Path,
    pub what: &'static str,
}

impl Fields<'_> {
    pub fn malformed(&self, reason: String) -> KeyError {
        KeyError::Malformed {
            path: self.path.into(),
            what: self.what,
            reason,
        }
    }

    /// Only format version 1 exists.
    pub fn version(&self, got: u32) -> Result<(), KeyError> {
        match got {
            1 => Ok(()),
            v => Err(self.malformed(format!("format version {v} (this veil reads 1)"))),
        }
    }

    pub fn base64(&self, field: &str, text: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Zeroizing::new)
            .map_err(|e| self.malformed(format!("{field}: {e}")))
    }
}

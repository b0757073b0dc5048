//! configfs-tsm report requests (Linux ≥ 6.7, `Documentation/ABI/testing/configfs-tsm`),
//! shared by the SEV-SNP and TDX attesters and by platform detection. Our own code: the
//! configfs-tsm crates on crates.io are AGPL-3.0.
//!
//! 1. `mkdir <root>/<entry>`
//! 2. check `<entry>/provider` (`sev_guest`, `tdx_guest`, …)
//! 3. write the 64-byte `<entry>/inblob`
//! 4. read `generation`, then `outblob` (and `auxblob` when asked), then `generation`
//!    again: a change means another writer used the entry and the report may not be ours
//! 5. `rmdir <entry>`
//!
//! The root is configurable so the sequence can be tested on a plain directory. An entry
//! that already exists is used and left in place (that is how tests pre-populate one).

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

/// Where the kernel exposes configfs-tsm reports.
pub const TSM_REPORT_DIR: &str = "/sys/kernel/config/tsm/report";

#[derive(Debug, Error)]
pub enum TsmError {
    #[error("configfs-tsm: cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("configfs-tsm provider at {path} is {got:?}, not {want:?} (not a {want} guest?)")]
    WrongProvider {
        path: PathBuf,
        got: String,
        want: &'static str,
    },
    #[error(
        "configfs-tsm entry {path} was changed by another writer (generation {before} → {after}); the report may not be ours"
    )]
    Raced {
        path: PathBuf,
        before: String,
        after: String,
    },
}

/// What one request returned.
#[derive(Debug)]
pub struct TsmReport {
    /// The entry used (for error messages about its contents).
    pub entry: PathBuf,
    /// The report or quote.
    pub outblob: Vec<u8>,
    /// Provider-specific extra data (SEV-SNP: the host's certificate table); empty when
    /// not asked for or not supplied.
    pub auxblob: Vec<u8>,
}

/// Runs a whole request under `root`, in entry `name` or a fresh one, and removes an
/// entry it created.
pub fn request(
    root: &Path,
    name: Option<&str>,
    provider: &'static str,
    inblob: &[u8; 64],
    want_aux: bool,
) -> Result<TsmReport, TsmError> {
    static NEXT_ENTRY: AtomicU64 = AtomicU64::new(0);
    let entry = root.join(name.map_or_else(
        || {
            format!(
                "veil-{}-{}",
                std::process::id(),
                NEXT_ENTRY.fetch_add(1, Ordering::Relaxed)
            )
        },
        str::to_owned,
    ));
    let created = match fs::create_dir(&entry) {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
        Err(source) => {
            return Err(TsmError::Io {
                op: "create report entry",
                path: entry,
                source,
            });
        }
    };
    let result = request_in_entry(&entry, provider, inblob, want_aux);
    if created {
        // configfs entries go with rmdir (the kernel drops the files); on a plain
        // directory (tests) the files stay and this fails harmlessly.
        let _ = fs::remove_dir(&entry);
    }
    result
}

/// Steps 2–4 on an existing entry directory.
pub fn request_in_entry(
    entry: &Path,
    provider: &'static str,
    inblob: &[u8; 64],
    want_aux: bool,
) -> Result<TsmReport, TsmError> {
    let provider_path = entry.join("provider");
    let got = read_text(&provider_path, "read")?;
    if got != provider {
        return Err(TsmError::WrongProvider {
            path: provider_path,
            got,
            want: provider,
        });
    }
    let inblob_path = entry.join("inblob");
    fs::write(&inblob_path, inblob).map_err(|source| TsmError::Io {
        op: "write",
        path: inblob_path,
        source,
    })?;
    let generation = entry.join("generation");
    let before = read_text(&generation, "read")?;
    let outblob_path = entry.join("outblob");
    let outblob = fs::read(&outblob_path).map_err(|source| TsmError::Io {
        op: "read",
        path: outblob_path,
        source,
    })?;
    let auxblob = if want_aux {
        let aux_path = entry.join("auxblob");
        match fs::read(&aux_path) {
            Ok(a) => a,
            // The host supplied nothing extra.
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(TsmError::Io {
                    op: "read",
                    path: aux_path,
                    source,
                });
            }
        }
    } else {
        Vec::new()
    };
    let after = read_text(&generation, "re-read")?;
    if before != after {
        return Err(TsmError::Raced {
            path: entry.to_owned(),
            before,
            after,
        });
    }
    Ok(TsmReport {
        entry: entry.to_owned(),
        outblob,
        auxblob,
    })
}

/// The provider behind the report interface under `root`, if there is one. configfs-tsm
/// names it only inside an entry, so this creates one and removes it again.
pub fn provider(root: &Path) -> Option<String> {
    if !root.is_dir() {
        return None;
    }
    let entry = root.join(format!("veil-detect-{}", std::process::id()));
    fs::create_dir(&entry).ok()?;
    let provider = read_text(&entry.join("provider"), "read").ok();
    let _ = fs::remove_dir(&entry);
    provider
}

fn read_text(path: &Path, op: &'static str) -> Result<String, TsmError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| TsmError::Io {
            op,
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_entry(root: &Path, provider: &str) -> PathBuf {
        let entry = root.join("e");
        fs::create_dir_all(&entry).expect("mkdir");
        fs::write(entry.join("provider"), format!("{provider}\n")).expect("provider");
        fs::write(entry.join("generation"), "3\n").expect("generation");
        fs::write(entry.join("outblob"), b"report").expect("outblob");
        entry
    }

    #[test]
    fn request_writes_inblob_and_reads_outblob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = fake_entry(dir.path(), "tdx_guest");
        let r = request(dir.path(), Some("e"), "tdx_guest", &[7; 64], true).expect("request");
        assert_eq!(r.outblob, b"report");
        assert!(r.auxblob.is_empty());
        assert_eq!(fs::read(entry.join("inblob")).expect("inblob"), [7; 64]);
        // An entry that existed before is left in place.
        assert!(entry.is_dir());
    }

    #[test]
    fn wrong_provider_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake_entry(dir.path(), "sev_guest");
        let err = request(dir.path(), Some("e"), "tdx_guest", &[0; 64], false)
            .expect_err("wrong provider");
        assert!(matches!(err, TsmError::WrongProvider { .. }), "{err}");
        assert!(err.to_string().contains("sev_guest"), "{err}");
    }

    #[test]
    fn plain_directory_fails_naming_the_file_and_removes_its_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = request(dir.path(), None, "sev_guest", &[0; 64], true).expect_err("no configfs");
        assert!(
            matches!(&err, TsmError::Io { path, .. } if path.ends_with("provider")),
            "{err}"
        );
        assert_eq!(fs::read_dir(dir.path()).expect("read").count(), 0);
        assert_eq!(provider(dir.path()), None);
        assert_eq!(provider(&dir.path().join("absent")), None);
    }
}

//! TD quote generation through the kernel's configfs-tsm interface (Linux ≥ 6.7,
//! `TSM_REPORTS` + `TDX_GUEST_DRIVER`):
//!
//! 1. `mkdir /sys/kernel/config/tsm/report/<entry>`
//! 2. write the 64-byte report data to `<entry>/inblob` (Veil: user data ‖ 32 zero bytes)
//! 3. read `<entry>/generation`, then `<entry>/outblob` (the quote; the kernel asks the
//!    quoting enclave through the host), then `generation` again: a change means
//!    another writer raced us and the quote may not be ours
//! 4. `rmdir <entry>`
//!
//! The root directory is configurable so the sequence can be tested on a plain
//! directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

use super::evidence::TdxEvidence;
use super::quote::TdQuote;
use crate::evidence::{Attester, Evidence};

/// Where the kernel exposes configfs-tsm reports.
pub const DEFAULT_TSM_REPORT_ROOT: &str = "/sys/kernel/config/tsm/report";

/// The `provider` a TDX guest's configfs-tsm entries report.
pub const TDX_PROVIDER: &str = "tdx_guest";

static NEXT_ENTRY: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Error)]
pub enum TdxAttestError {
    #[error("configfs-tsm: cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("configfs-tsm provider at {path} is {got:?}, not {TDX_PROVIDER:?} (not a TDX guest?)")]
    WrongProvider { path: PathBuf, got: String },
    #[error(
        "configfs-tsm entry {path} was changed by another writer (generation {before} → {after}); the quote may not be ours"
    )]
    Conflict {
        path: PathBuf,
        before: String,
        after: String,
    },
    #[error("quote from {path} is not a usable TD quote: {reason}")]
    BadQuote { path: PathBuf, reason: String },
    #[error("quote from {path} carries report data {got}, not the {expected} written to inblob")]
    ReportDataMismatch {
        path: PathBuf,
        expected: String,
        got: String,
    },
}

/// Produces [`TdxEvidence`] in a TDX guest.
#[derive(Debug, Clone)]
pub struct TdxAttester {
    root: PathBuf,
    collateral: Option<String>,
}

impl Default for TdxAttester {
    fn default() -> Self {
        Self::new()
    }
}

impl TdxAttester {
    /// An attester using `/sys/kernel/config/tsm/report`.
    pub fn new() -> Self {
        Self::with_root(DEFAULT_TSM_REPORT_ROOT)
    }

    /// An attester using another configfs-tsm report directory (tests).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            collateral: None,
        }
    }

    /// Collateral JSON (`dcap_qvl::QuoteCollateralV3`) to ship with each quote, e.g.
    /// provisioned from a PCCS: verifiers then need no collateral of their own.
    pub fn with_collateral_json(mut self, json: String) -> Self {
        self.collateral = Some(json);
        self
    }

    /// A raw TD quote whose report data is `user_data ‖ 0³²`.
    pub fn quote(&self, user_data: &[u8; 32]) -> Result<Vec<u8>, TdxAttestError> {
        let name = format!(
            "veil-{}-{}",
            std::process::id(),
            NEXT_ENTRY.fetch_add(1, Ordering::Relaxed)
        );
        let entry = self.root.join(name);
        fs::create_dir(&entry).map_err(|source| TdxAttestError::Io {
            op: "create report entry",
            path: entry.clone(),
            source,
        })?;
        let result = generate_in_entry(&entry, &report_data(user_data));
        // configfs entries must be removed with rmdir; the kernel drops the files. On a
        // plain directory (tests) the files stay and removal fails harmlessly.
        let _ = fs::remove_dir(&entry);
        result
    }
}

impl Attester for TdxAttester {
    type Error = TdxAttestError;

    fn evidence(&mut self, user_data: &[u8; 32]) -> Result<Evidence, TdxAttestError> {
        Ok(Evidence::Tdx(TdxEvidence {
            quote: self.quote(user_data)?,
            collateral: self.collateral.clone(),
        }))
    }
}

/// The 64 bytes of TD report data Veil binds: `user_data ‖ 0³²`.
pub fn report_data(user_data: &[u8; 32]) -> [u8; 64] {
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(user_data);
    rd
}

/// Steps 2–3 on an existing entry directory: checks the provider, writes `inblob`,
/// reads `outblob` between two reads of `generation`, and checks that the quote carries
/// `inblob` as its report data.
pub fn generate_in_entry(entry: &Path, inblob: &[u8; 64]) -> Result<Vec<u8>, TdxAttestError> {
    let provider_path = entry.join("provider");
    let provider = read_text(&provider_path, "read")?;
    if provider != TDX_PROVIDER {
        return Err(TdxAttestError::WrongProvider {
            path: provider_path,
            got: provider,
        });
    }
    let inblob_path = entry.join("inblob");
    fs::write(&inblob_path, inblob).map_err(|source| TdxAttestError::Io {
        op: "write",
        path: inblob_path,
        source,
    })?;
    let generation_path = entry.join("generation");
    let before = read_text(&generation_path, "read")?;
    let outblob_path = entry.join("outblob");
    let quote = fs::read(&outblob_path).map_err(|source| TdxAttestError::Io {
        op: "read",
        path: outblob_path.clone(),
        source,
    })?;
    let after = read_text(&generation_path, "re-read")?;
    if before != after {
        return Err(TdxAttestError::Conflict {
            path: entry.to_owned(),
            before,
            after,
        });
    }
    let td = TdQuote::parse(&quote).map_err(|e| TdxAttestError::BadQuote {
        path: outblob_path.clone(),
        reason: e.to_string(),
    })?;
    if &td.report_data != inblob {
        return Err(TdxAttestError::ReportDataMismatch {
            path: outblob_path,
            expected: hex::encode(inblob),
            got: hex::encode(td.report_data),
        });
    }
    Ok(quote)
}

fn read_text(path: &Path, op: &'static str) -> Result<String, TdxAttestError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| TdxAttestError::Io {
            op,
            path: path.to_owned(),
            source,
        })
}

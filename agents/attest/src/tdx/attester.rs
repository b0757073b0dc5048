//! TD quote generation through configfs-tsm ([`crate::tsm`]; kernel `TSM_REPORTS` +
//! `TDX_GUEST_DRIVER`): `inblob` is user data ‖ 32 zero bytes, `outblob` the quote (the
//! kernel asks the quoting enclave through the host); `provider` must be `tdx_guest`.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::evidence::TdxEvidence;
use super::quote::TdQuote;
use crate::evidence::{Attester, Evidence};

pub use crate::tsm::TSM_REPORT_DIR as DEFAULT_TSM_REPORT_ROOT;
use crate::tsm::{self, TsmError};

/// The `provider` a TDX guest's configfs-tsm entries report.
pub const TDX_PROVIDER: &str = "tdx_guest";

#[derive(Debug, Error)]
pub enum TdxAttestError {
    #[error(transparent)]
    Tsm(#[from] TsmError),
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
        let report = tsm::request(
            &self.root,
            None,
            TDX_PROVIDER,
            &report_data(user_data),
            false,
        )?;
        check_quote(&report.entry, report.outblob, &report_data(user_data))
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

/// The request on an existing entry directory (see [`crate::tsm`]), then the check
/// that the quote carries `inblob` as its report data.
pub fn generate_in_entry(entry: &Path, inblob: &[u8; 64]) -> Result<Vec<u8>, TdxAttestError> {
    let report = tsm::request_in_entry(entry, TDX_PROVIDER, inblob, false)?;
    check_quote(entry, report.outblob, inblob)
}

/// A quote is only ours if it parses and carries exactly the report data we wrote.
fn check_quote(entry: &Path, quote: Vec<u8>, inblob: &[u8; 64]) -> Result<Vec<u8>, TdxAttestError> {
    let outblob_path = entry.join("outblob");
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

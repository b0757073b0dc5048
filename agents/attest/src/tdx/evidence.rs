//! The TDX evidence record.

use serde::{Deserialize, Serialize};

use crate::encoding::b64;

/// A TD quote with the collateral to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxEvidence {
    /// The raw quote exactly as configfs-tsm returned it (`outblob`).
    #[serde(with = "b64")]
    pub quote: Vec<u8>,
    /// Intel PCS collateral for this quote: `dcap_qvl::QuoteCollateralV3` as JSON (the
    /// format PCCS clients and dcap-qvl write). `None` when the verifier is configured
    /// with collateral of its own.
    #[serde(default)]
    pub collateral: Option<String>,
}

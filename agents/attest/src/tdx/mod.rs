//! Intel TDX evidence: a TD quote (v4/v5, ECDSA P-256) from the TD quoting enclave,
//! generated through configfs-tsm, with the Intel PCS collateral (TCB info, QE
//! identity, CRLs) needed to check it offline.
//!
//! Verification uses `dcap-qvl` (pure Rust) against the Intel SGX Root CA pinned in this
//! crate ([`INTEL_SGX_ROOT_CA_DER`]); the verifier fetches nothing. Where a node needs
//! collateral it has not got, [`pcs`] assembles it from Intel PCS answers that its
//! caller fetched (`veil-cloud`). Azure's
//! paravisor TD, which dcap-qvl refuses for its attributes, goes through Veil's own walk
//! of the same chain (`dcap`), held to dcap-qvl's verdicts by differential tests.

pub mod attester;
mod dcap;
mod error;
pub mod evidence;
pub mod pcs;
pub mod quote;
pub mod verifier;

pub use attester::{TdxAttestError, TdxAttester};
pub use error::TdxVerifyError;
pub use evidence::TdxEvidence;
pub use quote::{TdQuote, check_td_attributes};
pub use verifier::{CollateralRefresh, NO_COLLATERAL, TdxPolicy, TdxVerifier};

/// DER of the Intel SGX Root CA (CN=Intel SGX Root CA, valid 2018-05-21 to 2049-12-31),
/// SHA-256 fingerprint
/// `44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3`: the trust anchor
/// of every DCAP quote. Same bytes as dcap-qvl 0.7's built-in anchor, pinned here so an
/// upgrade of that crate cannot silently change what is trusted.
pub const INTEL_SGX_ROOT_CA_DER: &[u8] = include_bytes!("intel_sgx_root_ca.der");

//! Why TDX evidence was refused: each variant names what failed and with which value.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TdxVerifyError {
    #[error("{what} truncated at offset {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{what} is not supported: {reason}")]
    Unsupported { what: &'static str, reason: String },
    #[error(
        "TDX quote signature chain does not verify to the trusted root (Intel SGX Root CA unless configured otherwise): {reason}"
    )]
    BadSignature { reason: String },
    #[error(
        "the TD runs without SEPT_VE_DISABLE (td_attributes {td_attributes}, bit 28 clear): the host could inject #VE on its private memory"
    )]
    SeptVeEnabled { td_attributes: String },
    #[error("TDX collateral not valid: {reason}")]
    CollateralInvalid { reason: String },
    #[error(
        "TD quote is bound to report data {got}, expected {expected} (stale or replayed evidence, or bound to another key)"
    )]
    ReportDataMismatch { expected: String, got: String },
    #[error(
        "TD runs with debug attributes (td_attributes {td_attributes}, DEBUG bit {debug_bit}) and the policy forbids debug TDs"
    )]
    DebugAllowed {
        td_attributes: String,
        debug_bit: bool,
    },
    #[error("TCB status {got} is not allowed (allowed: {allowed:?})")]
    TcbStatus { got: String, allowed: Vec<String> },
    #[error("MRTD {got} is not among the {allowed} allowed value(s)")]
    MrtdMismatch { got: String, allowed: usize },
    #[error("RTMR{index} is {got}, expected {expected}")]
    RtmrMismatch {
        index: u8,
        expected: String,
        got: String,
    },
    #[error("{platform} evidence cannot be checked by the TDX verifier")]
    WrongPlatform { platform: &'static str },
}

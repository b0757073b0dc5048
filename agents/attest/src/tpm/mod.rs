//! TPM 2.0 evidence: quotes signed by an attestation key (AK) that a verifier trusts only
//! after credential activation against an endorsement key (EK) whose certificate chains
//! to a configured CA.
//!
//! Verification (everything but [`attester`]) is pure Rust and needs no TPM library.

#[cfg(feature = "tpm-attester")]
pub mod attester;
pub mod credential;
pub mod ekcert;
pub mod evidence;
pub mod public;
pub mod quote;
pub mod signature;
pub mod verifier;
mod wire;

#[cfg(feature = "tpm-attester")]
pub use attester::{
    DEFAULT_EVENT_LOG, DEFAULT_SYSTEMD_LOG, MAX_ATTACHED_LOG_BYTES, TpmAttestError, TpmAttester,
    TpmAttesterConfig,
};
pub use credential::{CREDENTIAL_LEN, CredentialChallenge, CredentialError};
pub use ekcert::{EkCertError, EkTrust};
pub use evidence::{AkIdentity, TpmEvidence};
pub use quote::{ClockInfo, Quote};
pub use verifier::{PendingActivation, TpmVerifier, TpmVerifyError, TrustedAk};
pub use wire::ParseError;

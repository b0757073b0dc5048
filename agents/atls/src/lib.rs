//! Attested TLS (aTLS) for Veil: a mutual TLS 1.3 channel in which each side proves
//! what it runs, and the proof is bound both to the peer's fresh nonce and to the TLS
//! key of the connection.
//!
//! Each side presents a fresh self-signed certificate with a fresh P-256 key. An
//! extension of that certificate ([`cert::EVIDENCE_OID`]) carries attestation evidence
//! whose user data is `SHA-256(peer nonce || SubjectPublicKeyInfo)` ([`binding`]).
//! The nonces travel inside the handshake ([`nonce`]): the client's in its ALPN list,
//! the server's in the CertificateRequest's certificate-authority hints. A replayed
//! certificate therefore fails the nonce, and evidence lifted into another certificate
//! fails the key binding; the TLS handshake itself proves possession of that key.
//!
//! There is no certificate chain and no host name: a peer is trusted for what its
//! evidence proves, checked by an [`EvidenceValidator`] (e.g. a
//! [`veil_attest::Verifier`] with reference measurements). The handshake fails unless
//! the evidence presented verifies, so no application byte moves before that. The
//! server may admit anonymous clients ([`ClientAuth::Optional`]) and then tells its
//! services which peers were attested; the client always verifies the server.
//!
//! Both sides run on tokio (`tokio-rustls`), so gRPC (tonic) can run on top.
//!
//! A TPM's attestation key must be activated against its certified EK before its
//! quotes are trusted (an interactive exchange that cannot happen inside a handshake):
//! the TPM verifier is given the activated key before the aTLS connection is made.

pub mod binding;
pub mod cert;
mod client;
pub mod nonce;
mod server;
mod verify;

pub use client::connect;
pub use server::{ClientAuth, accept};

use std::collections::BTreeMap;
use std::sync::Mutex;

use thiserror::Error;
use veil_attest::{Attester, Evidence, Verified, Verifier, compare_pcrs};

/// The ALPN protocol an aTLS connection speaks.
pub const ALPN: &[u8] = b"veil-atls/1";

#[derive(Debug, Error)]
pub enum AtlsError {
    #[error("TLS failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("I/O on the aTLS connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot make the aTLS certificate: {0}")]
    Certificate(String),
    #[error("the peer's certificate is not an aTLS certificate: {0}")]
    NotAtls(String),
    #[error("the peer sent no aTLS nonce ({0})")]
    NoNonce(&'static str),
    #[error("producing our evidence failed: {0}")]
    Issue(String),
    #[error("the peer's evidence was refused: {0}")]
    Refused(String),
    #[error("the handshake ended without verifying the peer's evidence")]
    NotVerified,
}

/// Produces evidence bound to 32 bytes of user data (our side of the handshake).
pub trait EvidenceIssuer: Send + Sync {
    fn issue(&self, user_data: &[u8; 32]) -> Result<Vec<u8>, AtlsError>;
}

/// Checks the peer's evidence and that it is bound to `user_data`.
pub trait EvidenceValidator: Send + Sync {
    fn validate(&self, evidence: &[u8], user_data: &[u8; 32]) -> Result<Verified, AtlsError>;
}

/// An [`EvidenceIssuer`] from any [`Attester`] (e.g. a TPM): serialised access, since
/// one attester (one TPM) serves every connection.
pub struct AttesterIssuer<A>(pub Mutex<A>);

impl<A: Attester + Send> EvidenceIssuer for AttesterIssuer<A> {
    fn issue(&self, user_data: &[u8; 32]) -> Result<Vec<u8>, AtlsError> {
        let mut attester = self
            .0
            .lock()
            .map_err(|_| AtlsError::Issue("attester lock poisoned".into()))?;
        let evidence = attester
            .evidence(user_data)
            .map_err(|e| AtlsError::Issue(e.to_string()))?;
        Ok(evidence.encode())
    }
}

/// An [`EvidenceValidator`] from any [`Verifier`] (plus its reference policy).
pub struct VerifierValidator<V>(pub V);

impl<V: Verifier + Send + Sync> EvidenceValidator for VerifierValidator<V> {
    fn validate(&self, evidence: &[u8], user_data: &[u8; 32]) -> Result<Verified, AtlsError> {
        let evidence = Evidence::decode(evidence).map_err(|e| AtlsError::Refused(e.to_string()))?;
        self.0
            .verify(&evidence, user_data)
            .map_err(|e| AtlsError::Refused(e.to_string()))
    }
}

/// A validator that also holds the peer to reference PCR values, inside the
/// handshake: a peer whose enforced PCRs differ is refused before any call can reach
/// it, on the first connection and on every reconnect. The evidence of the last
/// refusal is kept ([`Self::last_refused`]) so that a caller can explain it.
pub struct PcrValidator<V> {
    inner: V,
    expected: BTreeMap<u32, ([u8; 32], bool)>,
    refused: Mutex<Option<Verified>>,
}

impl<V: EvidenceValidator> PcrValidator<V> {
    /// `expected`: PCR → (value, warn-only).
    pub fn new(inner: V, expected: BTreeMap<u32, ([u8; 32], bool)>) -> Self {
        PcrValidator {
            inner,
            expected,
            refused: Mutex::new(None),
        }
    }

    /// What the last peer refused for its PCRs proved (its evidence did verify).
    pub fn last_refused(&self) -> Option<Verified> {
        self.refused.lock().ok().and_then(|mut r| r.take())
    }
}

impl<V: EvidenceValidator> EvidenceValidator for PcrValidator<V> {
    fn validate(&self, evidence: &[u8], user_data: &[u8; 32]) -> Result<Verified, AtlsError> {
        let verified = self.inner.validate(evidence, user_data)?;
        match compare_pcrs(&verified.pcrs, &self.expected) {
            Ok(_) => Ok(verified),
            Err(e) => {
                if let Ok(mut r) = self.refused.lock() {
                    *r = Some(verified);
                }
                Err(AtlsError::Refused(e.to_string()))
            }
        }
    }
}

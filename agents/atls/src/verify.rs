//! The rustls verifier plumbing shared by both sides: the peer's certificate is
//! accepted only if its evidence verifies and is bound to our nonce and its key; the
//! handshake signature is then checked with that same key, as for any TLS 1.3 peer.

use std::sync::{Arc, Mutex};

use rustls::pki_types::CertificateDer;
use rustls::{DigitallySignedStruct, SignatureScheme};
use veil_attest::Verified;

use crate::binding::{NONCE_LEN, user_data};
use crate::{AtlsError, EvidenceValidator, cert};

/// Verifies a peer's certificate against `nonce` and keeps the result (or the reason
/// for refusing, which rustls itself can only report as a generic error).
pub(crate) struct PeerCheck {
    pub nonce: [u8; NONCE_LEN],
    pub validator: Arc<dyn EvidenceValidator>,
    pub outcome: Mutex<Option<Result<Verified, String>>>,
}

impl std::fmt::Debug for PeerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCheck").finish_non_exhaustive()
    }
}

impl PeerCheck {
    pub fn new(nonce: [u8; NONCE_LEN], validator: Arc<dyn EvidenceValidator>) -> Self {
        PeerCheck {
            nonce,
            validator,
            outcome: Mutex::new(None),
        }
    }

    pub fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let result = cert::parse(end_entity).and_then(|peer| {
            self.validator
                .validate(&peer.evidence, &user_data(&self.nonce, &peer.spki_der))
        });
        let ok = result.is_ok();
        if let Ok(mut slot) = self.outcome.lock() {
            // Keep the reason itself; take() says it was a refusal.
            *slot = Some(result.map_err(|e| match e {
                AtlsError::Refused(reason) => reason,
                other => other.to_string(),
            }));
        }
        if ok {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    /// The verified peer after the handshake, or why it was refused.
    pub fn take(&self) -> Result<Verified, AtlsError> {
        match self.outcome.lock().ok().and_then(|mut s| s.take()) {
            Some(Ok(v)) => Ok(v),
            Some(Err(reason)) => Err(AtlsError::Refused(reason)),
            None => Err(AtlsError::NotVerified),
        }
    }

    pub fn refusal(&self) -> Option<String> {
        match self.outcome.lock().ok()?.as_ref()? {
            Err(reason) => Some(reason.clone()),
            Ok(_) => None,
        }
    }
}

fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

pub(crate) fn tls13_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
}

pub(crate) fn schemes() -> Vec<SignatureScheme> {
    algorithms().supported_schemes()
}

/// aTLS is TLS 1.3 only.
pub(crate) fn no_tls12() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered)
}

/// The rustls provider and protocol versions both sides use.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

//! EK certificate chain verification: the EK certificate read from the TPM's NV must
//! chain to a CA the verifier was configured to trust (a TPM vendor CA, or for the QEMU
//! platform the local CA that `swtpm_setup` used), and certify exactly the EK public key
//! the attester presented.
//!
//! Supported signature algorithms: RSA PKCS#1 v1.5 with SHA-256/384/512 (what swtpm's
//! local CA and most TPM vendors use) and ECDSA P-256 with SHA-256.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rsa::pkcs8::DecodePublicKey;
use rsa::{BigUint, RsaPublicKey};
use thiserror::Error;
use x509_cert::Certificate;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::BasicConstraints;

use crate::signature::{RsaHash, p256_der, rsa_pkcs1};

const OID_RSA_SHA256: &str = "1.2.840.113549.1.1.11";
const OID_RSA_SHA384: &str = "1.2.840.113549.1.1.12";
const OID_RSA_SHA512: &str = "1.2.840.113549.1.1.13";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";

/// Longest chain from EK certificate to anchor that is searched (EK, intermediates, root).
const MAX_DEPTH: usize = 5;

#[derive(Debug, Error)]
pub enum EkCertError {
    #[error("CA certificate file is not usable: {reason}")]
    BadCaFile { reason: String },
    #[error("EK certificate is not trusted: {reason}")]
    NotTrusted { reason: String },
}

fn not_trusted(reason: impl Into<String>) -> EkCertError {
    EkCertError::NotTrusted {
        reason: reason.into(),
    }
}

/// The CAs an EK certificate must chain to.
#[derive(Debug, Clone, Default)]
pub struct EkTrust {
    anchors: Vec<Certificate>,
    intermediates: Vec<Certificate>,
}

impl EkTrust {
    /// Trusts the CA certificates in `pem` (one or more PEM blocks) as anchors.
    pub fn from_pem(pem: &[u8]) -> Result<Self, EkCertError> {
        Ok(EkTrust {
            anchors: load(pem)?,
            intermediates: Vec::new(),
        })
    }

    /// Trusts the CA certificates in the PEM file `anchors`, with the intermediates in
    /// the PEM file `intermediates` if given. Errors name the file.
    pub fn from_pem_files(
        anchors: &Path,
        intermediates: Option<&Path>,
    ) -> Result<Self, EkCertError> {
        let read = |path: &Path| {
            let in_file = |reason: String| EkCertError::BadCaFile {
                reason: format!("{}: {reason}", path.display()),
            };
            let pem = std::fs::read(path).map_err(|e| in_file(e.to_string()))?;
            load(&pem).map_err(|e| match e {
                EkCertError::BadCaFile { reason } | EkCertError::NotTrusted { reason } => {
                    in_file(reason)
                }
            })
        };
        Ok(EkTrust {
            anchors: read(anchors)?,
            intermediates: intermediates.map(read).transpose()?.unwrap_or_default(),
        })
    }

    /// Adds a trust anchor given as DER.
    pub fn add_anchor_der(&mut self, der: &[u8]) -> Result<(), EkCertError> {
        let cert = Certificate::from_der(der).map_err(|e| EkCertError::BadCaFile {
            reason: format!("DER certificate: {e}"),
        })?;
        self.anchors.push(cert);
        Ok(())
    }

    /// Adds intermediate CA certificates (PEM). They are not trusted by themselves; they
    /// only help to build a path to an anchor (swtpm's local CA signs EK certificates with
    /// an intermediate, `issuercert.pem`, under its root).
    pub fn with_intermediates_pem(mut self, pem: &[u8]) -> Result<Self, EkCertError> {
        self.intermediates.extend(load(pem)?);
        Ok(self)
    }

    /// Verifies `ek_cert_der` at time `now` and returns the RSA key it certifies.
    pub fn verify_rsa_ek(
        &self,
        ek_cert_der: &[u8],
        now: SystemTime,
    ) -> Result<RsaPublicKey, EkCertError> {
        let ek = Certificate::from_der(ek_cert_der)
            .map_err(|e| not_trusted(format!("EK certificate does not parse as DER X.509: {e}")))?;
        self.verify_chain(&ek, now)?;
        let spki = ek
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| not_trusted(format!("EK certificate key: {e}")))?;
        RsaPublicKey::from_public_key_der(&spki)
            .map_err(|e| not_trusted(format!("EK certificate does not hold an RSA key: {e}")))
    }

    /// Verifies any leaf certificate `der` (named `what` in errors) against these
    /// anchors at `now`, and returns it parsed.
    pub fn verify_certificate(
        &self,
        der: &[u8],
        what: &str,
        now: SystemTime,
    ) -> Result<Certificate, EkCertError> {
        let cert = Certificate::from_der(der)
            .map_err(|e| not_trusted(format!("{what} does not parse as DER X.509: {e}")))?;
        self.verify_chain_of(&cert, what, now)?;
        Ok(cert)
    }

    /// Adds one intermediate CA certificate (DER).
    pub fn add_intermediate_der(&mut self, der: &[u8]) -> Result<(), EkCertError> {
        let cert = Certificate::from_der(der).map_err(|e| EkCertError::BadCaFile {
            reason: format!("an intermediate does not parse as DER X.509: {e}"),
        })?;
        self.intermediates.push(cert);
        Ok(())
    }

    fn verify_chain(&self, leaf: &Certificate, now: SystemTime) -> Result<(), EkCertError> {
        self.verify_chain_of(leaf, "EK certificate", now)
    }

    fn verify_chain_of(
        &self,
        leaf: &Certificate,
        what: &str,
        now: SystemTime,
    ) -> Result<(), EkCertError> {
        if self.anchors.is_empty() {
            return Err(not_trusted("no trusted EK CA is configured"));
        }
        check_validity(leaf, now, what)?;
        let mut current = leaf.clone();
        for _ in 0..MAX_DEPTH {
            // An anchor that signed the current certificate ends the path. Several CAs
            // may share a subject (a re-keyed CA): any one whose signature verifies will do.
            let mut last_err = None;
            for anchor in issuers(&self.anchors, &current) {
                match verify_signed_by(&current, anchor)
                    .and_then(|()| check_validity(anchor, now, "trust anchor"))
                {
                    Ok(()) => return Ok(()),
                    Err(e) => last_err = Some(e),
                }
            }
            let mut next = None;
            for candidate in issuers(&self.intermediates, &current) {
                match verify_signed_by(&current, candidate)
                    .and_then(|()| check_validity(candidate, now, "intermediate CA"))
                    .and_then(|()| check_is_ca(candidate))
                {
                    Ok(()) => {
                        next = Some(candidate);
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            let Some(next) = next else {
                return Err(last_err.unwrap_or_else(|| {
                    not_trusted(format!(
                        "issuer '{}' of '{}' is neither a trusted CA nor a known intermediate",
                        current.tbs_certificate.issuer, current.tbs_certificate.subject
                    ))
                }));
            };
            current = next.clone();
        }
        Err(not_trusted(format!(
            "no path to a trusted CA within {MAX_DEPTH} certificates"
        )))
    }
}

/// Certificates in `pool` whose subject is `cert`'s issuer.
fn issuers<'a>(
    pool: &'a [Certificate],
    cert: &'a Certificate,
) -> impl Iterator<Item = &'a Certificate> + 'a {
    pool.iter()
        .filter(|c| c.tbs_certificate.subject == cert.tbs_certificate.issuer)
}

fn load(pem: &[u8]) -> Result<Vec<Certificate>, EkCertError> {
    let certs = Certificate::load_pem_chain(pem).map_err(|e| EkCertError::BadCaFile {
        reason: format!("PEM certificates: {e}"),
    })?;
    if certs.is_empty() {
        return Err(EkCertError::BadCaFile {
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

fn check_validity(cert: &Certificate, now: SystemTime, what: &str) -> Result<(), EkCertError> {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let v = &cert.tbs_certificate.validity;
    let (from, until) = (
        v.not_before.to_unix_duration(),
        v.not_after.to_unix_duration(),
    );
    if now < from || now > until {
        return Err(not_trusted(format!(
            "{what} '{}' is valid from {} to {}, not now",
            cert.tbs_certificate.subject, v.not_before, v.not_after
        )));
    }
    Ok(())
}

fn check_is_ca(cert: &Certificate) -> Result<(), EkCertError> {
    match cert.tbs_certificate.get::<BasicConstraints>() {
        Ok(Some((_, bc))) if bc.ca => Ok(()),
        _ => Err(not_trusted(format!(
            "'{}' signs certificates but is not a CA (basicConstraints cA is not set)",
            cert.tbs_certificate.subject
        ))),
    }
}

/// Verifies the signature on `cert` with `issuer`'s public key.
fn verify_signed_by(cert: &Certificate, issuer: &Certificate) -> Result<(), EkCertError> {
    let subject = &cert.tbs_certificate.subject;
    let tbs = cert
        .tbs_certificate
        .to_der()
        .map_err(|e| not_trusted(format!("re-encoding '{subject}': {e}")))?;
    let sig = cert.signature.raw_bytes();
    let spki = issuer
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| not_trusted(format!("issuer key: {e}")))?;
    let bad = |detail: String| {
        not_trusted(format!(
            "signature on '{subject}' does not verify with the key of '{}': {detail}",
            issuer.tbs_certificate.subject
        ))
    };
    let oid = cert.signature_algorithm.oid.to_string();
    match oid.as_str() {
        OID_RSA_SHA256 | OID_RSA_SHA384 | OID_RSA_SHA512 => {
            let key = RsaPublicKey::from_public_key_der(&spki)
                .map_err(|e| bad(format!("issuer key is not RSA: {e}")))?;
            let hash = match oid.as_str() {
                OID_RSA_SHA256 => RsaHash::Sha256,
                OID_RSA_SHA384 => RsaHash::Sha384,
                _ => RsaHash::Sha512,
            };
            rsa_pkcs1(&key, hash, &tbs, sig).map_err(|e| bad(e.to_string()))
        }
        OID_ECDSA_SHA256 => {
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(&spki)
                .map_err(|e| bad(format!("issuer key is not P-256: {e}")))?;
            p256::ecdsa::DerSignature::try_from(sig).map_err(|e| bad(e.to_string()))?;
            p256_der(&key, &tbs, sig).map_err(|e| bad(e.to_string()))
        }
        other => Err(not_trusted(format!(
            "'{subject}' is signed with unsupported algorithm {other}"
        ))),
    }
}

/// True if the two RSA keys are the same (modulus and exponent).
pub fn same_rsa_key(a: &RsaPublicKey, b: &RsaPublicKey) -> bool {
    use rsa::traits::PublicKeyParts;
    let (an, bn): (&BigUint, &BigUint) = (a.n(), b.n());
    an == bn && a.e() == b.e()
}

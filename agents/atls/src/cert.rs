//! The aTLS certificate: self-signed, a fresh P-256 key per handshake, and the
//! evidence in an extension.

use std::sync::Arc;

use der::{Decode as _, Encode as _, asn1::OctetString};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use x509_cert::Certificate;

use crate::AtlsError;

/// The evidence extension's OID. An unregistered private arc (rcgen and const-oid take
/// arcs of at most 64/32 bits, so a UUID-based 2.25 OID does not fit): to be replaced by
/// an OID under a registered enterprise number before any stable release.
pub const EVIDENCE_OID: &[u64] = &[1, 3, 9901, 86, 1];

fn oid_string() -> String {
    EVIDENCE_OID
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// A key pair whose public key the evidence will be bound to.
pub struct FreshKey {
    key: rcgen::KeyPair,
}

impl FreshKey {
    pub fn generate() -> Result<Self, AtlsError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| AtlsError::Certificate(format!("generating a P-256 key: {e}")))?;
        Ok(FreshKey { key })
    }

    /// The DER SubjectPublicKeyInfo, exactly as it will appear in the certificate.
    pub fn spki_der(&self) -> Vec<u8> {
        self.key.public_key_der()
    }

    /// A self-signed certificate for this key carrying `evidence`, ready for rustls.
    pub fn certify(self, evidence: &[u8]) -> Result<Arc<CertifiedKey>, AtlsError> {
        let err =
            |what: &str, e: &dyn std::fmt::Display| AtlsError::Certificate(format!("{what}: {e}"));
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| err("certificate parameters", &e))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "veil aTLS");
        // Freshness comes from the nonce, not from validity dates: keep them wide so a
        // peer with a skewed clock is not refused for the wrong reason.
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let content = OctetString::new(evidence)
            .and_then(|o| o.to_der())
            .map_err(|e| err("encoding the evidence extension", &e))?;
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                EVIDENCE_OID,
                content,
            ));
        let cert = params
            .self_signed(&self.key)
            .map_err(|e| err("self-signing", &e))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()));
        let signing_key = rustls::crypto::ring::sign::any_ecdsa_type(&key_der)
            .map_err(|e| err("loading the key into rustls", &e))?;
        Ok(Arc::new(CertifiedKey::new(
            vec![cert.der().clone()],
            signing_key,
        )))
    }
}

/// What an aTLS peer certificate holds.
#[derive(Debug)]
pub struct PeerCertificate {
    pub spki_der: Vec<u8>,
    pub evidence: Vec<u8>,
}

/// Parses a peer's aTLS certificate.
pub fn parse(cert: &CertificateDer<'_>) -> Result<PeerCertificate, AtlsError> {
    let c = Certificate::from_der(cert.as_ref())
        .map_err(|e| AtlsError::NotAtls(format!("not an X.509 certificate: {e}")))?;
    let spki_der = c
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| AtlsError::NotAtls(format!("bad SubjectPublicKeyInfo: {e}")))?;
    let oid = oid_string();
    let ext = c
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id.to_string() == oid)
        .ok_or_else(|| AtlsError::NotAtls(format!("no evidence extension ({oid})")))?;
    let evidence = OctetString::from_der(ext.extn_value.as_bytes())
        .map_err(|e| AtlsError::NotAtls(format!("evidence extension is not an OCTET STRING: {e}")))?
        .into_bytes();
    Ok(PeerCertificate { spki_der, evidence })
}

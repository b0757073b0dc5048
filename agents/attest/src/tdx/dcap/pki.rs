//! Intel's DCAP PKI: certificate paths to the pinned root, checked with both of Intel's
//! CRLs, and the collateral (TCB info, QE identity) signed by Intel's TCB signing key.

use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use webpki::{
    BorrowedCertRevocationList, CertRevocationList, EndEntityCert, ExpirationPolicy,
    KeyPurposeIdIter, RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_cert::Certificate;
use x509_cert::der::Encode as _;

use super::super::error::TdxVerifyError;

const ECDSA_P256: &dyn SignatureVerificationAlgorithm = webpki::ring::ECDSA_P256_SHA256;

fn bad_signature(reason: String) -> TdxVerifyError {
    TdxVerifyError::BadSignature { reason }
}

/// The pinned root and the two CRLs that every path is checked against: the root CA's
/// (revoking PCK CAs and signing certificates) and the PCK CA's (revoking PCK
/// certificates).
pub(super) struct IntelPki<'a> {
    anchor: TrustAnchor<'a>,
    crls: Vec<CertRevocationList<'a>>,
    now: UnixTime,
}

/// Intel's DCAP certificates carry no extended key usage. One that does was issued for
/// something else and is refused.
struct NoExtendedKeyUsage;

/// The certificates of the PEM chain `pem`, end entity first. The quote's chain ends in
/// a NUL, as the QE writes it for C.
pub(crate) fn pem_chain(pem: &[u8]) -> Result<Vec<Certificate>, x509_cert::der::Error> {
    let end = pem.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    Certificate::load_pem_chain(&pem[..end])
}

impl webpki::ExtendedKeyUsageValidator for NoExtendedKeyUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        // Every usage it names, for the error.
        let present = iter
            .map(|purpose| purpose.map(|p| p.to_decoded_oid()))
            .collect::<Result<Vec<_>, _>>()?;
        if present.is_empty() {
            return Ok(());
        }
        Err(webpki::Error::RequiredEkuNotFoundContext(
            webpki::RequiredEkuNotFoundContext {
                required: webpki::KeyUsage::required_if_present(&[]),
                present,
            },
        ))
    }
}

/// A verified path: the end-entity certificate's DER and how many certificates stand
/// between it and the root.
pub(super) struct VerifiedLeaf {
    pub der: Vec<u8>,
    pub intermediates: usize,
}

impl<'a> IntelPki<'a> {
    pub fn new(
        root_ca_der: &'a [u8],
        root_ca_crl: &'a [u8],
        pck_crl: &'a [u8],
        now: u64,
    ) -> Result<Self, TdxVerifyError> {
        let anchor = webpki::anchor_from_trusted_cert(&CertificateDer::from(root_ca_der))
            .map_err(|e| TdxVerifyError::Malformed {
                what: "trusted root CA",
                reason: e.to_string(),
            })?
            .to_owned();
        let crl = |what: &'static str, der: &'a [u8]| {
            BorrowedCertRevocationList::from_der(der)
                .map(CertRevocationList::from)
                .map_err(|e| TdxVerifyError::CollateralInvalid {
                    reason: format!("{what} is not a CRL webpki can read: {e}"),
                })
        };
        Ok(Self {
            anchor,
            crls: vec![crl("root CA CRL", root_ca_crl)?, crl("PCK CRL", pck_crl)?],
            now: UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
        })
    }

    /// Verifies the PEM chain `pem` (end entity first) up to the root, each certificate
    /// checked against the CRL of its issuer: a certificate no CRL speaks for is refused.
    pub fn verify_path(&self, what: &str, pem: &[u8]) -> Result<VerifiedLeaf, TdxVerifyError> {
        let certs = pem_chain(pem).map_err(|e| TdxVerifyError::Malformed {
            what: "certificate chain",
            reason: format!("{what}: {e}"),
        })?;
        let ders = certs
            .iter()
            .map(|c| c.to_der().map(CertificateDer::from))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TdxVerifyError::Malformed {
                what: "certificate chain",
                reason: format!("{what}: {e}"),
            })?;
        let [leaf, rest @ ..] = ders.as_slice() else {
            return Err(TdxVerifyError::Malformed {
                what: "certificate chain",
                reason: format!("{what}: no certificate"),
            });
        };
        let ee = EndEntityCert::try_from(leaf)
            .map_err(|e| bad_signature(format!("{what} certificate unreadable: {e}")))?;
        let crls: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&crls)
            .map_err(|e| bad_signature(format!("{what}: no CRL to check against: {e:?}")))?
            .with_depth(RevocationCheckDepth::Chain)
            .with_status_policy(UnknownStatusPolicy::Deny)
            .with_expiration_policy(ExpirationPolicy::Enforce)
            .build();
        let anchors = [self.anchor.clone()];
        let path = ee
            .verify_for_usage(
                &[ECDSA_P256],
                &anchors,
                rest,
                self.now,
                NoExtendedKeyUsage,
                Some(revocation),
                None,
            )
            .map_err(|e| bad_signature(format!("{what} certificate path: {e}")))?;
        Ok(VerifiedLeaf {
            der: leaf.to_vec(),
            intermediates: path.intermediate_certificates().count(),
        })
    }

    /// Verifies that `body` (the JSON exactly as Intel signed it) carries `signature`
    /// (r and s, 32 bytes each) by a signing certificate the root issued directly.
    pub fn verify_signed(
        &self,
        what: &str,
        issuer_chain_pem: &str,
        body: &str,
        signature: &[u8],
    ) -> Result<(), TdxVerifyError> {
        let signer = self.verify_path(&format!("{what} signing"), issuer_chain_pem.as_bytes())?;
        if signer.intermediates != 0 {
            return Err(bad_signature(format!(
                "the {what} signing certificate is not issued by the root itself ({} certificates between)",
                signer.intermediates
            )));
        }
        verify_p256_by_cert(&signer.der, body.as_bytes(), signature)
            .map_err(|e| bad_signature(format!("{what} signature: {e}")))
    }
}

/// ECDSA P-256/SHA-256 over `message` by the key of the certificate `cert_der`, the
/// signature as r and s (Intel's form in quotes and collateral).
pub(super) fn verify_p256_by_cert(
    cert_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let cert = CertificateDer::from(cert_der);
    let ee = EndEntityCert::try_from(&cert).map_err(|e| format!("certificate unreadable: {e}"))?;
    let der = fixed_to_der(signature)?;
    ee.verify_signature(ECDSA_P256, message, &der)
        .map_err(|e| format!("does not verify: {e}"))
}

/// r and s (32 bytes each) as the DER `ECDSA-Sig-Value` webpki takes.
pub(super) fn fixed_to_der(signature: &[u8]) -> Result<Vec<u8>, String> {
    let sig = p256::ecdsa::Signature::from_slice(signature).map_err(|e| {
        format!(
            "not an ECDSA P-256 signature of 64 bytes ({} bytes): {e}",
            signature.len()
        )
    })?;
    Ok(sig.to_der().as_bytes().to_vec())
}

//! TPMT_SIGNATURE parsing (TPM 2.0 Library Part 2 §11.3.4) and verification of a quote's
//! ECDSA P-256 / SHA-256 signature with the AK's public key.

use p256::ecdsa::{Signature as EcdsaSignature, VerifyingKey};
use p256::{EncodedPoint, FieldBytes};

use super::public::{ECC_NIST_P256, PublicKey, TpmPublic};
use super::wire::{ParseError, Reader, alg};

/// A parsed ECDSA TPMT_SIGNATURE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcdsaTpmSignature {
    pub hash: u16,
    pub r: Vec<u8>,
    pub s: Vec<u8>,
}

impl EcdsaTpmSignature {
    /// Parses marshalled TPMT_SIGNATURE bytes. Only ECDSA is accepted: the AK is P-256.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        let sig_alg = r.u16("TPMT_SIGNATURE.sigAlg")?;
        if sig_alg != alg::ECDSA {
            let kind = match sig_alg {
                alg::RSASSA => "RSASSA",
                alg::RSAPSS => "RSAPSS",
                _ => "unknown",
            };
            return Err(ParseError::malformed(
                "TPMT_SIGNATURE.sigAlg",
                format!("{sig_alg:#06x} ({kind}) is not ECDSA"),
            ));
        }
        let hash = r.u16("TPMS_SIGNATURE_ECDSA.hash")?;
        let sig_r = r.tpm2b("TPMS_SIGNATURE_ECDSA.signatureR")?.to_vec();
        let sig_s = r.tpm2b("TPMS_SIGNATURE_ECDSA.signatureS")?.to_vec();
        r.finish("TPMT_SIGNATURE")?;
        Ok(EcdsaTpmSignature {
            hash,
            r: sig_r,
            s: sig_s,
        })
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("AK public key is not usable for ECDSA P-256: {0}")]
    BadKey(String),
    #[error("signature uses hash {0:#06x}, expected SHA-256")]
    WrongHash(u16),
    #[error("ECDSA signature does not verify over the {len} quoted bytes")]
    Invalid { len: usize },
}

/// The AK as a P-256 verifying key.
pub fn ak_verifying_key(ak: &TpmPublic) -> Result<VerifyingKey, SignatureError> {
    let PublicKey::Ecc { curve, x, y, .. } = &ak.key else {
        return Err(SignatureError::BadKey("not an ECC key".into()));
    };
    if *curve != ECC_NIST_P256 {
        return Err(SignatureError::BadKey(format!(
            "curve {curve:#06x} is not NIST P-256"
        )));
    }
    let (Some(x), Some(y)) = (pad32(x), pad32(y)) else {
        return Err(SignatureError::BadKey(
            "coordinate longer than 32 bytes".into(),
        ));
    };
    let point = EncodedPoint::from_affine_coordinates(&x, &y, false);
    VerifyingKey::from_encoded_point(&point)
        .map_err(|e| SignatureError::BadKey(format!("point not on curve: {e}")))
}

/// Verifies `sig` over `message` (SHA-256 is applied by the ECDSA verifier, matching the
/// TPM's signing of H(TPMS_ATTEST)).
pub fn verify_ecdsa(
    key: &VerifyingKey,
    sig: &EcdsaTpmSignature,
    message: &[u8],
) -> Result<(), SignatureError> {
    if sig.hash != alg::SHA256 {
        return Err(SignatureError::WrongHash(sig.hash));
    }
    let invalid = SignatureError::Invalid { len: message.len() };
    let (Some(r), Some(s)) = (pad32(&sig.r), pad32(&sig.s)) else {
        return Err(invalid);
    };
    // In range (1..n) for both, or it is no signature at all.
    EcdsaSignature::from_scalars(r, s).map_err(|_| invalid.clone())?;
    crate::signature::p256_fixed(key, message, &r, &s).map_err(|_| invalid)
}

/// Left-pads a big-endian integer to 32 bytes; TPMs may drop leading zero bytes.
fn pad32(v: &[u8]) -> Option<FieldBytes> {
    let v = match v.iter().position(|&b| b != 0) {
        Some(i) => &v[i..],
        None => &[],
    };
    if v.len() > 32 {
        return None;
    }
    let mut out = FieldBytes::default();
    out[32 - v.len()..].copy_from_slice(v);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_and_rejects_long_integers() {
        let p = pad32(&[0, 0, 1]).expect("pad");
        assert_eq!(p[31], 1);
        assert!(pad32(&[1; 33]).is_none());
        assert!(pad32(&[0; 40]).is_some());
    }

    #[test]
    fn rejects_rsa_signatures_and_truncation() {
        let mut rsa = alg::RSASSA.to_be_bytes().to_vec();
        rsa.extend_from_slice(&[0, 0x0b, 0, 1, 0]);
        assert!(matches!(
            EcdsaTpmSignature::parse(&rsa),
            Err(ParseError::Malformed { .. })
        ));
        let mut ok = alg::ECDSA.to_be_bytes().to_vec();
        ok.extend_from_slice(&[0, 0x0b, 0, 1, 7, 0, 1, 8]);
        assert!(EcdsaTpmSignature::parse(&ok).is_ok());
        for cut in 0..ok.len() {
            assert!(EcdsaTpmSignature::parse(&ok[..cut]).is_err());
        }
    }
}

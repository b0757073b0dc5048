//! The public-key signature checks every verifier runs (TPM quotes, certificate
//! chains, SEV-SNP reports), done by `ring`.
//!
//! Keys, scalars and certificates are parsed by the RustCrypto crates (`p256`, `p384`,
//! `rsa`, `x509-cert`), which name what is wrong with a malformed one; the signature
//! arithmetic is then ring's. ring is already in the tree (dcap-qvl verifies TDX quotes
//! with it), and its P-256, P-384 and RSA are several times as fast on this machine as
//! the pure-Rust ones, which were most of a verification's time (`ci/bench-verify`).
//! ring takes RSA keys of 2048 to 8192 bits only; a smaller key is refused, and said to
//! be.

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use rsa::RsaPublicKey;
use rsa::traits::PublicKeyParts;

/// The digest an RSASSA-PKCS1-v1_5 signature was made over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RsaHash {
    Sha256,
    Sha384,
    Sha512,
}

/// Why a signature check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SigError {
    #[error("the RSA key has {0} bits; keys of 2048 to 8192 bits are taken")]
    RsaKeySize(usize),
    #[error("the signature does not verify")]
    Invalid,
}

/// RSASSA-PKCS1-v1_5 by `key` over `message`.
pub(crate) fn rsa_pkcs1(
    key: &RsaPublicKey,
    hash: RsaHash,
    message: &[u8],
    sig: &[u8],
) -> Result<(), SigError> {
    let bits = key.n().bits();
    if !(2048..=8192).contains(&bits) {
        return Err(SigError::RsaKeySize(bits));
    }
    let alg = match hash {
        RsaHash::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        RsaHash::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        RsaHash::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
    };
    RsaPublicKeyComponents {
        n: key.n().to_bytes_be(),
        e: key.e().to_bytes_be(),
    }
    .verify(alg, message, sig)
    .map_err(|_| SigError::Invalid)
}

/// ECDSA P-256/SHA-256 by `key`, the signature as r and s (32 bytes each, big-endian).
pub(crate) fn p256_fixed(
    key: &p256::ecdsa::VerifyingKey,
    message: &[u8],
    r: &p256::FieldBytes,
    s: &p256::FieldBytes,
) -> Result<(), SigError> {
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(r);
    sig[32..].copy_from_slice(s);
    let point = key.to_encoded_point(false);
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point.as_bytes())
        .verify(message, &sig)
        .map_err(|_| SigError::Invalid)
}

/// ECDSA P-256/SHA-256 by `key`, the signature DER-encoded (X.509's form).
pub(crate) fn p256_der(
    key: &p256::ecdsa::VerifyingKey,
    message: &[u8],
    der: &[u8],
) -> Result<(), SigError> {
    let point = key.to_encoded_point(false);
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point.as_bytes())
        .verify(message, der)
        .map_err(|_| SigError::Invalid)
}

/// ECDSA P-384/SHA-384 by `key`, the signature as r and s (48 bytes each, big-endian).
pub(crate) fn p384_fixed(
    key: &p384::ecdsa::VerifyingKey,
    message: &[u8],
    r: &p384::FieldBytes,
    s: &p384::FieldBytes,
) -> Result<(), SigError> {
    let mut sig = [0u8; 96];
    sig[..48].copy_from_slice(r);
    sig[48..].copy_from_slice(s);
    let point = key.to_encoded_point(false);
    UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point.as_bytes())
        .verify(message, &sig)
        .map_err(|_| SigError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use rsa::pkcs1v15;
    use rsa::signature::SignatureEncoding as _;

    /// Signatures made by the RustCrypto signers hold under ring, and one flipped
    /// message byte does not.
    #[test]
    fn ring_checks_what_rustcrypto_signs() {
        let msg = b"veil: a quote".to_vec();
        let mut other = msg.clone();
        other[0] ^= 1;

        let sk = p256::ecdsa::SigningKey::from_slice(&[7; 32]).expect("p256 key");
        let sig: p256::ecdsa::Signature = sk.sign(&msg);
        let (r, s) = (sig.r().to_bytes(), sig.s().to_bytes());
        let vk = sk.verifying_key();
        assert_eq!(p256_fixed(vk, &msg, &r, &s), Ok(()));
        assert_eq!(p256_fixed(vk, &other, &r, &s), Err(SigError::Invalid));
        let der = sig.to_der();
        assert_eq!(p256_der(vk, &msg, der.as_bytes()), Ok(()));
        assert_eq!(p256_der(vk, &other, der.as_bytes()), Err(SigError::Invalid));

        let sk = p384::ecdsa::SigningKey::from_slice(&[9; 48]).expect("p384 key");
        let sig: p384::ecdsa::Signature = sk.sign(&msg);
        let (r, s) = (sig.r().to_bytes(), sig.s().to_bytes());
        assert_eq!(p384_fixed(sk.verifying_key(), &msg, &r, &s), Ok(()));
        assert_eq!(
            p384_fixed(sk.verifying_key(), &other, &r, &s),
            Err(SigError::Invalid)
        );

        // One 2048-bit key (generating keys is slow in a debug build), both digests.
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("rsa key");
        let public = key.to_public_key();
        for hash in [RsaHash::Sha256, RsaHash::Sha384] {
            let sig = match hash {
                RsaHash::Sha256 => pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone())
                    .sign(&msg)
                    .to_vec(),
                _ => pkcs1v15::SigningKey::<sha2::Sha384>::new(key.clone())
                    .sign(&msg)
                    .to_vec(),
            };
            assert_eq!(rsa_pkcs1(&public, hash, &msg, &sig), Ok(()));
            assert_eq!(
                rsa_pkcs1(&public, hash, &other, &sig),
                Err(SigError::Invalid)
            );
            assert_eq!(
                rsa_pkcs1(&public, RsaHash::Sha512, &msg, &sig),
                Err(SigError::Invalid),
                "another digest"
            );
        }
    }

    #[test]
    fn a_small_rsa_key_is_refused_by_its_size() {
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).expect("rsa key");
        let msg = b"m";
        let sig = pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone())
            .sign(msg)
            .to_vec();
        assert_eq!(
            rsa_pkcs1(&key.to_public_key(), RsaHash::Sha256, msg, &sig),
            Err(SigError::RsaKeySize(1024))
        );
    }
}

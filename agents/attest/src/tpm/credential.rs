//! TPM2_MakeCredential computed in software, so a verifier without a TPM can challenge an
//! attester to prove that its attestation key (AK) lives in the same TPM as a certified
//! endorsement key (EK).
//!
//! The TPM will only release the credential through TPM2_ActivateCredential if it holds
//! the EK's private key (to recover the seed) *and* has an object loaded whose name is
//! the one bound into the blob (the AK). Follows TPM 2.0 Library Part 1:
//! §24 (Credential Protection), §24.4 (symmetric encryption of the credential),
//! §24.5 (HMAC), §11.4.10.2 (KDFa), and Annex B.10.3 (RSA-OAEP secret sharing with the
//! label "IDENTITY"). Only RSA-2048 EKs with the TCG default template (nameAlg SHA-256,
//! AES-128-CFB) are supported: that is what `swtpm_setup` certifies by default and what
//! every discrete TPM ships.

use aes::Aes128;
use cfb_mode::Encryptor;
use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use rsa::{BigUint, Oaep, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;
use zeroize::Zeroizing;

use super::public::{PublicKey, SymDef, TpmPublic, attr};
use super::wire::{ParseError, alg, put_tpm2b};

/// Size of the secret the verifier asks the attester to recover.
pub const CREDENTIAL_LEN: usize = 32;

/// Label for the seed's OAEP encryption, including the terminating NUL (Part 1 §24.1,
/// B.10.3: "IDENTITY" as a NUL-terminated string).
const IDENTITY_LABEL: &str = "IDENTITY\0";

#[derive(Debug, Error)]
pub enum CredentialError {
    /// The EK public area is not an RSA-2048 EK with the default template parameters.
    #[error("unsupported EK: {reason}")]
    UnsupportedEk { reason: String },
    #[error("EK public area: {0}")]
    Parse(#[from] ParseError),
    #[error("RSA-OAEP encryption of the seed under the EK failed: {0}")]
    Encrypt(String),
}

/// What the verifier sends: TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET contents (without
/// their size fields), ready for TPM2_ActivateCredential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialChallenge {
    /// TPM2B(outerHMAC) || encIdentity.
    #[serde(with = "crate::encoding::b64")]
    pub credential_blob: Vec<u8>,
    /// The seed, RSA-OAEP encrypted to the EK.
    #[serde(with = "crate::encoding::b64")]
    pub encrypted_secret: Vec<u8>,
}

impl CredentialChallenge {
    /// Makes a challenge for the AK named `ak_name` (nameAlg || digest) under the EK
    /// `ek_public`; returns it with the secret the attester must give back.
    ///
    /// This does not check that the EK is certified: callers go through
    /// [`super::TpmVerifier::challenge`], which does.
    pub fn new(
        ek_public: &TpmPublic,
        ak_name: &[u8],
    ) -> Result<(Self, Zeroizing<[u8; CREDENTIAL_LEN]>), CredentialError> {
        let mut secret = Zeroizing::new([0u8; CREDENTIAL_LEN]);
        OsRng.fill_bytes(secret.as_mut());
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(seed.as_mut());
        let challenge = make_credential(ek_public, ak_name, secret.as_ref(), &seed)?;
        Ok((challenge, secret))
    }
}

/// The EK's RSA public key, after checking the EK has the parameters MakeCredential
/// relies on (Part 1 §24: seed encrypted with the EK, symmetric protection with the EK's
/// symmetric algorithm, KDF with its nameAlg).
pub fn ek_rsa_key(ek: &TpmPublic) -> Result<RsaPublicKey, CredentialError> {
    let unsupported = |reason: String| CredentialError::UnsupportedEk { reason };
    let PublicKey::Rsa {
        symmetric,
        key_bits,
        exponent,
        modulus,
        ..
    } = &ek.key
    else {
        return Err(unsupported("not an RSA key".into()));
    };
    if ek.name_alg != alg::SHA256 {
        return Err(unsupported(format!(
            "nameAlg {:#06x} is not SHA-256",
            ek.name_alg
        )));
    }
    let want = SymDef {
        algorithm: alg::AES,
        key_bits: 128,
        mode: alg::CFB,
    };
    if *symmetric != Some(want) {
        return Err(unsupported(format!(
            "symmetric {symmetric:?} is not AES-128-CFB"
        )));
    }
    if *key_bits != 2048 || modulus.len() != 256 {
        return Err(unsupported(format!(
            "key is {key_bits} bits with a {}-byte modulus, expected RSA-2048",
            modulus.len()
        )));
    }
    // A restricted decryption key: the TPM refuses to RSA-decrypt arbitrary data with it,
    // so the seed can only be recovered inside ActivateCredential.
    if !ek.has(attr::RESTRICTED | attr::DECRYPT | attr::FIXED_TPM) || ek.has(attr::SIGN_ENCRYPT) {
        return Err(unsupported(format!(
            "attributes {:#010x} are not those of a fixedTPM restricted decryption key",
            ek.attributes
        )));
    }
    let e = if *exponent == 0 { 65537 } else { *exponent };
    RsaPublicKey::new(BigUint::from_bytes_be(modulus), BigUint::from(e))
        .map_err(|e| unsupported(format!("RSA key rejected: {e}")))
}

/// MakeCredential with a given seed (Part 1 §24.4–24.5); deterministic apart from OAEP's
/// own randomness, so the construction can be checked step by step.
fn make_credential(
    ek: &TpmPublic,
    ak_name: &[u8],
    credential: &[u8],
    seed: &[u8; 32],
) -> Result<CredentialChallenge, CredentialError> {
    let ek_key = ek_rsa_key(ek)?;
    let encrypted_secret = ek_key
        .encrypt(
            &mut OsRng,
            Oaep::new_with_label::<Sha256, _>(IDENTITY_LABEL),
            seed,
        )
        .map_err(|e| CredentialError::Encrypt(e.to_string()))?;

    // §24.4: symKey = KDFa(ekNameAlg, seed, "STORAGE", name, NULL, symmetric key bits),
    // encIdentity = CFB(symKey, IV = 0, TPM2B_DIGEST(credential)).
    let sym_key = Zeroizing::new(kdfa(seed, b"STORAGE", ak_name, &[], 128));
    let mut enc_identity = Zeroizing::new(Vec::with_capacity(2 + credential.len()));
    put_tpm2b(&mut enc_identity, credential)?;
    let iv = [0u8; 16];
    Encryptor::<Aes128>::new_from_slices(&sym_key, &iv)
        .map_err(|e| CredentialError::Encrypt(format!("AES-128 key: {e}")))?
        .encrypt(&mut enc_identity);

    // §24.5: HMACkey = KDFa(ekNameAlg, seed, "INTEGRITY", NULL, NULL, digest bits),
    // outerHMAC = HMAC(HMACkey, encIdentity || name).
    let hmac_key = Zeroizing::new(kdfa(seed, b"INTEGRITY", &[], &[], 256));
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&hmac_key)
        .map_err(|e| CredentialError::Encrypt(format!("HMAC key: {e}")))?;
    mac.update(&enc_identity);
    mac.update(ak_name);
    let outer_hmac = mac.finalize().into_bytes();

    // TPM2B_ID_OBJECT contents: TPM2B_DIGEST(outerHMAC) || encIdentity (Part 2 §11.4.11).
    let mut credential_blob = Vec::with_capacity(2 + outer_hmac.len() + enc_identity.len());
    put_tpm2b(&mut credential_blob, &outer_hmac)?;
    credential_blob.extend_from_slice(&enc_identity);
    Ok(CredentialChallenge {
        credential_blob,
        encrypted_secret,
    })
}

/// KDFa with SHA-256 (Part 1 §11.4.10.2): the counter-mode KDF of SP 800-108,
/// `K(i) = HMAC(key, [i]₃₂ || label || 0x00 || contextU || contextV || [bits]₃₂)`,
/// concatenated and truncated to `bits`. `label` is given without its NUL, which is
/// always appended (the spec adds it when the label lacks one).
pub fn kdfa(key: &[u8], label: &[u8], context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let len = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(len + 32);
    let mut counter: u32 = 0;
    while out.len() < len {
        counter += 1;
        // HMAC accepts keys of any length, so this cannot fail.
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
            break;
        };
        mac.update(&counter.to_be_bytes());
        mac.update(label);
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
    }
    out.truncate(len);
    // Bits beyond a whole byte are masked off from the first octet (§11.4.10.2); Veil
    // only asks for multiples of 8, but keep the function right in general.
    if bits % 8 != 0 {
        if let Some(first) = out.first_mut() {
            *first &= 0xff >> (8 - bits % 8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_lengths_and_determinism() {
        let a = kdfa(b"seed", b"STORAGE", b"name", &[], 128);
        assert_eq!(a.len(), 16);
        assert_eq!(a, kdfa(b"seed", b"STORAGE", b"name", &[], 128));
        let long = kdfa(b"seed", b"INTEGRITY", &[], &[], 512);
        assert_eq!(long.len(), 64);
        // The bit count is part of every block's input, so a 256-bit output is not the
        // prefix of a 512-bit one.
        assert_ne!(
            &long[..32],
            kdfa(b"seed", b"INTEGRITY", &[], &[], 256).as_slice()
        );
        assert_ne!(a, kdfa(b"seed", b"STORAGE", b"other", &[], 128));
    }

    #[test]
    fn kdfa_first_block_matches_hmac_definition() {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"k").expect("hmac");
        mac.update(&[0, 0, 0, 1]);
        mac.update(b"INTEGRITY\0");
        mac.update(&[0, 0, 1, 0]);
        let want = mac.finalize().into_bytes();
        assert_eq!(kdfa(b"k", b"INTEGRITY", &[], &[], 256), want.as_slice());
    }
}

//! What evidence is bound to: `SHA-256(peer nonce || SubjectPublicKeyInfo DER)`.

use sha2::{Digest, Sha256};

/// Length of an aTLS nonce.
pub const NONCE_LEN: usize = 32;

/// The user data a certificate's evidence must carry for a peer that chose `nonce`.
pub fn user_data(nonce: &[u8; NONCE_LEN], spki_der: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(nonce);
    h.update(spki_der);
    h.finalize().into()
}

/// A fresh random nonce.
pub fn fresh_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_depends_on_nonce_and_key() {
        let a = user_data(&[1; 32], b"key-a");
        assert_ne!(a, user_data(&[2; 32], b"key-a"));
        assert_ne!(a, user_data(&[1; 32], b"key-b"));
        assert_eq!(a, user_data(&[1; 32], b"key-a"));
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(fresh_nonce(), fresh_nonce());
    }
}

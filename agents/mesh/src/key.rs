//! A node's own WireGuard private key: made on the node, kept on its encrypted state
//! disk (mode 0600, base64 as `wg` writes it), never sent anywhere. Only its public
//! half goes into the attested Join.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::MeshError;
use crate::peers::WgKey;

pub struct PrivateKey(x25519_dalek::StaticSecret);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey(public {})", self.public())
    }
}

impl PrivateKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> PrivateKey {
        PrivateKey(x25519_dalek::StaticSecret::random_from_rng(
            rand_core::OsRng,
        ))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> PrivateKey {
        PrivateKey(x25519_dalek::StaticSecret::from(bytes))
    }

    /// The key as the state disk keeps it (`what` names the file in errors).
    pub fn parse(what: &str, text: &str) -> Result<PrivateKey, MeshError> {
        let bad = |reason: String| MeshError::BadPrivateKey {
            what: what.to_owned(),
            reason,
        };
        let bytes = Zeroizing::new(B64.decode(text.trim()).map_err(|e| bad(e.to_string()))?);
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad(format!("{} bytes, not 32", bytes.len())))?;
        Ok(PrivateKey::from_bytes(key))
    }

    /// Base64, for the state disk.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.0.as_bytes()))
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public(&self) -> WgKey {
        WgKey::from_bytes(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_key_reads_back_as_the_same_key() {
        let key = PrivateKey::generate();
        let again = PrivateKey::parse("wireguard.key", &key.to_base64()).expect("parse");
        assert_eq!(again.public(), key.public());
        assert_ne!(PrivateKey::generate().public(), key.public());
    }

    #[test]
    fn a_garbled_key_file_is_named() {
        for text in ["not base64!", "AAAA"] {
            let e = PrivateKey::parse("/state/wireguard.key", text).expect_err(text);
            assert!(e.to_string().contains("/state/wireguard.key"), "{e}");
        }
    }
}

//! A WireGuard preshared key for each pair of nodes.
//!
//! WireGuard mixes a preshared key into its handshake next to X25519. Each pair's key
//! is HKDF-SHA256 over the cluster's mesh secret (derived from the master secret, handed
//! to joiners only inside their attested ticket) and the pair's two public keys in a
//! fixed order, so both ends compute the same key without ever sending it.
//!
//! What it protects against: traffic recorded today and decrypted later by breaking
//! X25519 (a quantum computer); an attacker then still needs the mesh secret. What it
//! does not: a node that holds the mesh secret (every member does) can compute every
//! pair's key, so it separates the cluster from outsiders, not members from each other;
//! X25519 still does that. Nor does it hide who talks to whom, or when.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::MeshError;
use crate::peers::WgKey;

/// Separates this derivation from every other use of the mesh secret.
const PSK_INFO: &[u8] = b"veil mesh: pair preshared key, v1\0";

/// The cluster's mesh secret (32 bytes), the root of every pair's preshared key.
pub struct MeshSecret(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MeshSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeshSecret(..)")
    }
}

impl MeshSecret {
    pub fn new(bytes: Zeroizing<[u8; 32]>) -> MeshSecret {
        MeshSecret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The preshared key of the pair `a`, `b`: the same whichever end asks.
    pub fn pair_psk(&self, a: &WgKey, b: &WgKey) -> Result<Zeroizing<[u8; 32]>, MeshError> {
        let (low, high) = match a.as_bytes().cmp(b.as_bytes()) {
            std::cmp::Ordering::Less => (a, b),
            std::cmp::Ordering::Greater => (b, a),
            std::cmp::Ordering::Equal => {
                return Err(MeshError::SamePeer { key: a.to_string() });
            }
        };
        let mut info = Vec::with_capacity(PSK_INFO.len() + 64);
        info.extend_from_slice(PSK_INFO);
        info.extend_from_slice(low.as_bytes());
        info.extend_from_slice(high.as_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        // Expand fails only for outputs over 255 * 32 bytes.
        #[allow(clippy::expect_used)]
        Hkdf::<Sha256>::new(None, self.0.as_ref())
            .expand(&info, out.as_mut())
            .expect("a 32-byte HKDF output");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> WgKey {
        WgKey::from_bytes([b; 32])
    }

    fn secret(b: u8) -> MeshSecret {
        MeshSecret::new(Zeroizing::new([b; 32]))
    }

    #[test]
    fn both_ends_of_a_pair_derive_the_same_key() {
        let s = secret(1);
        let ab = s.pair_psk(&key(2), &key(3)).expect("psk");
        let ba = s.pair_psk(&key(3), &key(2)).expect("psk");
        assert_eq!(*ab, *ba);
        assert_ne!(*ab, [0u8; 32]);
    }

    #[test]
    fn any_other_pair_or_cluster_gets_another_key() {
        let s = secret(1);
        let ab = s.pair_psk(&key(2), &key(3)).expect("psk");
        let ac = s.pair_psk(&key(2), &key(4)).expect("psk");
        let bc = s.pair_psk(&key(3), &key(4)).expect("psk");
        assert!(*ab != *ac && *ab != *bc && *ac != *bc);
        let other_cluster = secret(9).pair_psk(&key(2), &key(3)).expect("psk");
        assert_ne!(*ab, *other_cluster);
    }

    #[test]
    fn a_node_has_no_key_with_itself() {
        let e = secret(1).pair_psk(&key(2), &key(2)).expect_err("same key");
        assert!(matches!(e, MeshError::SamePeer { .. }), "{e}");
    }

    #[test]
    fn the_secret_is_not_printed() {
        assert_eq!(format!("{:?}", secret(7)), "MeshSecret(..)");
    }
}

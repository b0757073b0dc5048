//! A SHA-256 digest / PCR value, printed and (de)serialised as lowercase hex.

use sha2::{Digest as _, Sha256};
use std::fmt;

/// A SHA-256 digest, also used for sha256-bank PCR values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The value every PCR of the sha256 bank holds after TPM2_Startup (locality 0).
    pub const ZERO: Digest = Digest([0; 32]);

    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    /// TPM2_PCR_Extend: `SHA-256(self || digest)`.
    pub fn extend(&self, digest: &Digest) -> Digest {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(digest.0);
        Digest(h.finalize().into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Option<Digest> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).ok()?;
        Some(Digest(out))
    }

    /// The first 8 hex digits, for messages.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(8);
        s
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not a SHA-256 hex digest: {s:?}")))
    }
}

/// Replays `digests` onto an all-zero PCR.
pub fn replay<'a>(digests: impl IntoIterator<Item = &'a Digest>) -> Digest {
    digests
        .into_iter()
        .fold(Digest::ZERO, |pcr, d| pcr.extend(d))
}

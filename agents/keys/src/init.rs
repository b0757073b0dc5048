//! The init secret: what makes a `veil init` the operator's.
//!
//! A node that serves Init is reachable by anyone before it has a cluster, so Init
//! must be bound to the operator: the operator makes this secret before the first node
//! boots and launches that node with the secret's hash ([`InitSecret::hash`]); the
//! node measures the hash (veil-protocol's launch configuration) and takes Init only
//! from a caller who sends the secret itself. Whoever reaches the port first gains
//! nothing without it, and since the hash is in a PCR, `veil init` sees in the node's
//! quote that the node expects *this* operator's secret before it sends the master
//! secret.
//!
//! The hash is public; the secret is 32 random bytes, so a plain (domain-separated)
//! SHA-256 cannot be searched.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::{KeyError, SECRET_LEN, file, fixed};

pub const INIT_SECRET_FILE: &str = "init-secret file";
/// Prefix of the hashed message: this hash means nothing else.
const HASH_DOMAIN: &[u8] = b"veil/v1/init-secret\0";

/// The operator's init secret.
pub struct InitSecret(Zeroizing<[u8; SECRET_LEN]>);

impl fmt::Debug for InitSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitSecret")
            .field("hash", &hex::encode(self.hash()))
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    /// Format marker.
    veil_init_secret: u32,
    secret: String,
}

impl Drop for File {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl InitSecret {
    /// A fresh secret from the OS's CSPRNG.
    pub fn generate() -> InitSecret {
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        OsRng.fill_bytes(secret.as_mut());
        InitSecret(secret)
    }

    /// From received bytes (an Init request); must be [`SECRET_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<InitSecret, KeyError> {
        Ok(InitSecret(Zeroizing::new(fixed("init secret", bytes)?)))
    }

    /// The secret's bytes, to send to an attested node only.
    pub fn secret(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// What the node is launched with: `SHA-256("veil/v1/init-secret\0" || secret)`.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(HASH_DOMAIN);
        h.update(self.0.as_ref());
        h.finalize().into()
    }

    /// Whether this secret's hash is `expected`, without an early exit that would
    /// tell a caller how many leading bytes it got right.
    pub fn matches(&self, expected: &[u8; 32]) -> bool {
        use subtle::ConstantTimeEq;
        self.hash().ct_eq(expected).into()
    }

    /// Writes the init-secret file, mode 0600; never over an existing file.
    pub fn write_file(&self, path: &Path) -> Result<(), KeyError> {
        let file = File {
            veil_init_secret: 1,
            secret: B64.encode(self.0.as_ref()),
        };
        file::write_new_private(path, INIT_SECRET_FILE, &file)
    }

    /// Reads an init-secret file; refuses one that others can read.
    pub fn read_file(path: &Path) -> Result<InitSecret, KeyError> {
        let file: File = file::read_private(path, INIT_SECRET_FILE)?;
        let fields = file::Fields {
            path,
            what: INIT_SECRET_FILE,
        };
        fields.version(file.veil_init_secret)?;
        let secret = fields.base64("secret", &file.secret)?;
        InitSecret::from_bytes(&secret).map_err(|e| fields.malformed(e.to_string()))
    }
}

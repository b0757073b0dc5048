//! Bootstrap tokens and the CA pin: what a joiner needs to run `kubeadm join`.
//!
//! The join service makes one token per admitted node, short-lived, and deletes it
//! once that node is registered, so a token is good for one join only. It travels
//! only inside the attested join ticket, with the hash of the cluster CA's public key
//! that `kubeadm join` pins the API server to.

use std::fmt;

use rand_core::{OsRng, RngCore};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use x509_cert::der::{DecodePem, Encode};
use zeroize::Zeroizing;

use crate::KubeError;

/// The group kubeadm's RBAC lets bootstrap a kubelet (CSR creation and auto-approval).
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A bootstrap token, `<id>.<secret>` (6 and 16 of `[a-z0-9]`). The id is public
/// (it names the token's Secret); the secret is not, and is never printed.
pub struct BootstrapToken {
    id: String,
    secret: Zeroizing<String>,
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn random_chars(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut byte = [0u8; 1];
        OsRng.fill_bytes(&mut byte);
        // 252 = 7 * 36: rejecting the rest keeps every character equally likely.
        if byte[0] < 252 {
            out.push(char::from(ALPHABET[usize::from(byte[0] % 36)]));
        }
    }
    out
}

impl BootstrapToken {
    pub fn generate() -> BootstrapToken {
        BootstrapToken {
            id: random_chars(6),
            secret: Zeroizing::new(random_chars(16)),
        }
    }

    pub fn parse(text: &str) -> Result<BootstrapToken, KubeError> {
        check_token(text)?;
        let (id, secret) = text.split_at(6);
        Ok(BootstrapToken {
            id: id.to_owned(),
            secret: Zeroizing::new(secret[1..].to_owned()),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `<id>.<secret>`, for the join ticket and kubeadm's configuration only.
    pub fn expose(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{}.{}", self.id, self.secret.as_str()))
    }

    /// The name of the Secret that holds it in `kube-system`.
    pub fn secret_name(&self) -> String {
        format!("bootstrap-token-{}", self.id)
    }

    /// The Secret the API server authenticates the token by: usable for kubelet TLS
    /// bootstrap and cluster-info signing, expiring at `expiration` (RFC 3339).
    pub fn to_secret(&self, description: &str, expiration: &str) -> Zeroizing<String> {
        let secret: Value = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.secret_name(), "namespace": "kube-system"},
            "type": "bootstrap.kubernetes.io/token",
            "stringData": {
                "description": description,
                "token-id": self.id,
                "token-secret": self.secret.as_str(),
                "expiration": expiration,
                "usage-bootstrap-authentication": "true",
                "usage-bootstrap-signing": "true",
                "auth-extra-groups": BOOTSTRAP_GROUP,
            },
        });
        Zeroizing::new(secret.to_string())
    }
}

/// A token's shape; the error names its id at most, never its secret.
pub fn check_token(text: &str) -> Result<(), KubeError> {
    let ok = |s: &str| s.bytes().all(|b| ALPHABET.contains(&b));
    match text.split_once('.') {
        Some((id, secret)) if id.len() == 6 && secret.len() == 16 && ok(id) && ok(secret) => Ok(()),
        Some((id, _)) if id.len() == 6 && ok(id) => Err(KubeError::Token(format!(
            "bootstrap token {id}: the secret is not 16 of [a-z0-9]"
        ))),
        _ => Err(KubeError::Token(
            "a bootstrap token is <6 of [a-z0-9]>.<16 of [a-z0-9]>".into(),
        )),
    }
}

/// `sha256:<64 hex digits>`.
pub fn check_ca_hash(text: &str) -> Result<(), KubeError> {
    match text.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(()),
        _ => Err(KubeError::Token(format!(
            "'{text}' is not a CA public key hash (sha256:<64 hex digits>)"
        ))),
    }
}

/// What `kubeadm join` pins the API server's CA by: SHA-256 of the CA certificate's
/// SubjectPublicKeyInfo (DER), as `sha256:<hex>`.
pub fn ca_cert_hash(pem: &str) -> Result<String, KubeError> {
    let cert = x509_cert::Certificate::from_pem(pem.as_bytes())
        .map_err(|e| KubeError::Token(format!("the cluster CA certificate does not parse: {e}")))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| KubeError::Token(format!("encoding the CA's public key: {e}")))?;
    let digest = Sha256::digest(&spki);
    Ok(format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_well_formed_and_distinct() {
        let a = BootstrapToken::generate();
        let b = BootstrapToken::generate();
        check_token(&a.expose()).expect("generated token is well formed");
        assert_ne!(a.expose().as_str(), b.expose().as_str());
        assert_eq!(a.secret_name(), format!("bootstrap-token-{}", a.id()));
        let parsed = BootstrapToken::parse(&a.expose()).expect("parse");
        assert_eq!(parsed.expose().as_str(), a.expose().as_str());
        // Debug shows the id only.
        let shown = format!("{a:?}");
        assert!(
            shown.contains(a.id()) && !shown.contains(&a.expose()[7..]),
            "{shown}"
        );
    }

    #[test]
    fn malformed_tokens_are_named_without_their_secret() {
        for bad in [
            "abcdef.0123456789ABCDEF",
            "abcdef.0123",
            "abc.0123456789abcdef",
            "nodot",
        ] {
            let err = check_token(bad).expect_err(bad);
            assert!(err.to_string().contains("bootstrap token"), "{bad}: {err}");
            assert!(!err.to_string().contains("0123"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_secret_authenticates_and_signs_for_the_kubeadm_group() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").expect("token");
        let s: Value =
            serde_json::from_str(&t.to_secret("for node1", "2026-12-06T10:00:00Z")).expect("JSON");
        assert_eq!(s["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(s["type"], "bootstrap.kubernetes.io/token");
        assert_eq!(s["stringData"]["token-secret"], "0123456789abcdef");
        assert_eq!(s["stringData"]["auth-extra-groups"], BOOTSTRAP_GROUP);
        assert_eq!(s["stringData"]["expiration"], "2026-12-06T10:00:00Z");
    }

    #[test]
    fn ca_hash_is_over_the_public_key_info() {
        // A real CA certificate from the attestation tests' vectors (AMD's Milan ARK):
        // its SPKI hash as `openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum`
        // computes it.
        let pem = include_str!("../../attest/src/snp/roots/milan/ark.pem");
        let hash = ca_cert_hash(pem).expect("hash");
        check_ca_hash(&hash).expect("shape");
        assert_eq!(
            hash,
            "sha256:9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9"
        );
        let err = ca_cert_hash("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .expect_err("garbage");
        assert!(err.to_string().contains("does not parse"), "{err}");
        assert!(check_ca_hash("sha256:xyz").is_err());
    }
}

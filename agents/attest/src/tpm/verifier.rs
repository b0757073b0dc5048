//! Verification of TPM quotes, and the credential-activation handshake that decides
//! which attestation keys are trusted at all.
//!
//! Trust flows in one direction only: EK certificate → (chain to a configured CA) → EK
//! public key → (TPM2_ActivateCredential proves the AK is in that TPM) → [`TrustedAk`] →
//! quotes signed by it. A [`TrustedAk`] can only be obtained from
//! [`PendingActivation::finish`], so a quote can never be checked against an AK that
//! merely came along with the evidence.

use std::collections::BTreeMap;
use std::time::SystemTime;

use p256::ecdsa::VerifyingKey;
use thiserror::Error;
use zeroize::Zeroizing;

use super::credential::{CREDENTIAL_LEN, CredentialChallenge, CredentialError, ek_rsa_key};
use super::ekcert::{EkCertError, EkTrust, same_rsa_key};
use super::evidence::{AkIdentity, TpmEvidence};
use super::public::{ECC_NIST_P256, PublicKey, TpmPublic, attr};
use super::quote::{PcrValuesError, Quote};
use super::signature::{EcdsaTpmSignature, ak_verifying_key, verify_ecdsa};
use super::wire::{ParseError, alg};
use crate::evidence::{Evidence, EvidencePlatform, TpmVerifiedInfo, Verified, Verifier};

#[derive(Debug, Error)]
pub enum TpmVerifyError {
    #[error(
        "quote is bound to user data {got}, expected {expected} (stale or replayed evidence, or bound to another key)"
    )]
    NonceMismatch { expected: String, got: String },
    #[error("quote signature does not verify with AK {ak_name}: {reason}")]
    BadSignature { ak_name: String, reason: String },
    #[error(
        "PCR values in the evidence hash to {computed}, but the signed quote commits to {quoted}"
    )]
    PcrDigestMismatch { quoted: String, computed: String },
    #[error("AK {ak_name} has not passed credential activation with this verifier")]
    AkNotActivated { ak_name: String },
    #[error(
        "credential activation of AK {ak_name} failed: the attester did not recover the secret, so the AK is not in the TPM of the certified EK"
    )]
    ActivationFailed { ak_name: String },
    #[error("EK certificate not trusted: {reason}")]
    EkCertNotTrusted { reason: String },
    #[error("{what} is not supported: {reason}")]
    Unsupported { what: &'static str, reason: String },
    #[error("{what} truncated at offset {offset}")]
    Truncated { what: String, offset: usize },
    #[error("malformed {what}: {reason}")]
    Malformed { what: String, reason: String },
}

impl TpmVerifyError {
    /// Attaches which input (`ctx`) a parse error came from.
    fn parse(ctx: &str, e: ParseError) -> Self {
        match e {
            ParseError::Truncated { what, offset, .. } => TpmVerifyError::Truncated {
                what: format!("{ctx} ({what})"),
                offset,
            },
            ParseError::Malformed { what, reason } => TpmVerifyError::Malformed {
                what: format!("{ctx} ({what})"),
                reason,
            },
        }
    }

    fn malformed(what: &str, reason: impl Into<String>) -> Self {
        TpmVerifyError::Malformed {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

impl From<EkCertError> for TpmVerifyError {
    fn from(e: EkCertError) -> Self {
        TpmVerifyError::EkCertNotTrusted {
            reason: match e {
                EkCertError::NotTrusted { reason } | EkCertError::BadCaFile { reason } => reason,
            },
        }
    }
}

/// An AK that passed credential activation against a certified EK.
#[derive(Debug, Clone)]
pub struct TrustedAk {
    name: Vec<u8>,
    key: VerifyingKey,
    ek_public: Vec<u8>,
    ek_cert: Vec<u8>,
}

impl TrustedAk {
    /// The AK's name (nameAlg || SHA-256 of its public area).
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The EK certificate the AK was activated against.
    pub fn ek_cert(&self) -> &[u8] {
        &self.ek_cert
    }
}

/// A credential challenge in flight. Consumed by [`PendingActivation::finish`], so each
/// challenge can be answered once.
pub struct PendingActivation {
    expected: Zeroizing<[u8; CREDENTIAL_LEN]>,
    ak: TrustedAk,
}

impl std::fmt::Debug for PendingActivation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingActivation")
            .field("ak_name", &hex::encode(&self.ak.name))
            .finish_non_exhaustive()
    }
}

impl PendingActivation {
    /// Checks the attester's answer; only a TPM holding both the EK's private key and the
    /// AK can produce it.
    pub fn finish(self, secret: &[u8]) -> Result<TrustedAk, TpmVerifyError> {
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            secret,
            self.expected.as_ref(),
        )) {
            Ok(self.ak)
        } else {
            Err(TpmVerifyError::ActivationFailed {
                ak_name: hex::encode(&self.ak.name),
            })
        }
    }
}

/// Verifies TPM evidence against activated AKs and a configured EK CA.
#[derive(Debug, Clone)]
pub struct TpmVerifier {
    trust: EkTrust,
    aks: BTreeMap<Vec<u8>, TrustedAk>,
}

impl TpmVerifier {
    pub fn new(trust: EkTrust) -> Self {
        TpmVerifier {
            trust,
            aks: BTreeMap::new(),
        }
    }

    /// Checks the EK certificate chain, that it certifies the presented EK, and that the
    /// AK is a TPM-resident restricted signing key; then makes a credential challenge for
    /// the AK. Send the challenge to the attester and give its answer to
    /// [`PendingActivation::finish`].
    pub fn challenge(
        &self,
        id: &AkIdentity,
    ) -> Result<(CredentialChallenge, PendingActivation), TpmVerifyError> {
        self.challenge_at(id, SystemTime::now())
    }

    /// [`TpmVerifier::challenge`] with the certificate validity checked at `now`.
    pub fn challenge_at(
        &self,
        id: &AkIdentity,
        now: SystemTime,
    ) -> Result<(CredentialChallenge, PendingActivation), TpmVerifyError> {
        let ek = TpmPublic::from_tpm2b(&id.ek_public)
            .map_err(|e| TpmVerifyError::parse("EK public area", e))?;
        let ek_key = ek_rsa_key(&ek).map_err(|e| match e {
            CredentialError::UnsupportedEk { reason } => {
                TpmVerifyError::Unsupported { what: "EK", reason }
            }
            other => TpmVerifyError::malformed("EK public area", other.to_string()),
        })?;
        let certified = self.trust.verify_rsa_ek(&id.ek_cert, now)?;
        if !same_rsa_key(&certified, &ek_key) {
            return Err(TpmVerifyError::EkCertNotTrusted {
                reason: "the certificate certifies a different key than the presented EK".into(),
            });
        }

        let ak = TpmPublic::from_tpm2b(&id.ak_public)
            .map_err(|e| TpmVerifyError::parse("AK public area", e))?;
        check_ak_shape(&ak)?;
        let name = ak
            .name()
            .map_err(|e| TpmVerifyError::parse("AK public area", e))?;
        let key = ak_verifying_key(&ak).map_err(|e| TpmVerifyError::Unsupported {
            what: "AK",
            reason: e.to_string(),
        })?;
        let (challenge, expected) = CredentialChallenge::new(&ek, &name)
            .map_err(|e| TpmVerifyError::malformed("EK public area", e.to_string()))?;
        Ok((
            challenge,
            PendingActivation {
                expected,
                ak: TrustedAk {
                    name,
                    key,
                    ek_public: id.ek_public.clone(),
                    ek_cert: id.ek_cert.clone(),
                },
            },
        ))
    }

    /// Accepts quotes signed by `ak` from now on.
    pub fn add_trusted_ak(&mut self, ak: TrustedAk) {
        self.aks.insert(ak.name.clone(), ak);
    }

    /// Stops accepting quotes signed by the AK with this name.
    pub fn remove_trusted_ak(&mut self, name: &[u8]) {
        self.aks.remove(name);
    }

    /// The AK with this name, if it was activated.
    pub fn trusted_ak(&self, name: &[u8]) -> Option<&TrustedAk> {
        self.aks.get(name)
    }

    /// Verifies a TPM quote: the AK is trusted, the signature holds, the quote is bound to
    /// `expected_user_data`, and the PCR values match the signed digest.
    pub fn verify_tpm(
        &self,
        ev: &TpmEvidence,
        expected_user_data: &[u8; 32],
    ) -> Result<Verified, TpmVerifyError> {
        let ak_public = TpmPublic::from_tpm2b(&ev.ak_public)
            .map_err(|e| TpmVerifyError::parse("AK public area", e))?;
        let ak_name = ak_public
            .name()
            .map_err(|e| TpmVerifyError::parse("AK public area", e))?;
        let ak = self
            .aks
            .get(&ak_name)
            .ok_or_else(|| TpmVerifyError::AkNotActivated {
                ak_name: hex::encode(&ak_name),
            })?;
        if ev.ek_cert != ak.ek_cert || ev.ek_public != ak.ek_public {
            return Err(TpmVerifyError::malformed(
                "evidence EK",
                "differs from the EK the AK was activated against",
            ));
        }

        check_quote(ev, expected_user_data, ak_name, &ak.key, &ak.ek_public)
    }

    /// Verifies a TPM quote by the AK the evidence names, **without** activation: only
    /// for a verifier that has already checked a hardware report binding that AK and
    /// `expected_user_data` (the `aws-sev-snp` profile, where the TPM has no EK
    /// certificate). The AK must still be a restricted ECDSA P-256 signing key.
    pub fn verify_quote_of_hardware_bound_ak(
        ev: &TpmEvidence,
        expected_user_data: &[u8; 32],
    ) -> Result<Verified, TpmVerifyError> {
        let ak_public = TpmPublic::from_tpm2b(&ev.ak_public)
            .map_err(|e| TpmVerifyError::parse("AK public area", e))?;
        check_ak_shape(&ak_public)?;
        let ak_name = ak_public
            .name()
            .map_err(|e| TpmVerifyError::parse("AK public area", e))?;
        let key = ak_verifying_key(&ak_public).map_err(|e| TpmVerifyError::Unsupported {
            what: "AK",
            reason: e.to_string(),
        })?;
        check_quote(ev, expected_user_data, ak_name, &key, &ev.ek_public)
    }
}

/// The quote's signature by `key`, its nonce, and the PCR values against its digest.
fn check_quote(
    ev: &TpmEvidence,
    expected_user_data: &[u8; 32],
    ak_name: Vec<u8>,
    key: &p256::ecdsa::VerifyingKey,
    ek_public: &[u8],
) -> Result<Verified, TpmVerifyError> {
    // Signature first: nothing in an unsigned quote is worth reporting on.
    let sig = EcdsaTpmSignature::parse(&ev.signature)
        .map_err(|e| TpmVerifyError::parse("quote signature", e))?;
    verify_ecdsa(key, &sig, &ev.quote).map_err(|e| TpmVerifyError::BadSignature {
        ak_name: hex::encode(&ak_name),
        reason: e.to_string(),
    })?;
    let quote = Quote::parse(&ev.quote).map_err(|e| TpmVerifyError::parse("quote", e))?;

    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        quote.extra_data.as_slice(),
        expected_user_data,
    )) {
        return Err(TpmVerifyError::NonceMismatch {
            expected: hex::encode(expected_user_data),
            got: hex::encode(&quote.extra_data),
        });
    }

    let given = ev.pcrs.iter().map(|(i, v)| (*i, v.0)).collect();
    quote.check_pcr_values(&given).map_err(|e| match e {
        PcrValuesError::Selection(e) => TpmVerifyError::parse("quote", e),
        PcrValuesError::Digest { quoted, computed } => {
            TpmVerifyError::PcrDigestMismatch { quoted, computed }
        }
        e => TpmVerifyError::malformed("evidence PCR values", e.to_string()),
    })?;

    Ok(Verified {
        platform: EvidencePlatform::Tpm,
        user_data: *expected_user_data,
        pcrs: ev.pcrs.iter().map(|(i, v)| (*i, v.0)).collect(),
        event_log: ev.event_log.clone(),
        systemd_log: ev.systemd_log.clone(),
        tpm: Some(TpmVerifiedInfo {
            ek_public_sha256: {
                use sha2::Digest;
                sha2::Sha256::digest(ek_public).into()
            },
            ak_name,
            clock_info: quote.clock_info,
            firmware_version: quote.firmware_version,
        }),
        tdx: None,
        snp: None,
        gcp: None,
        azure: None,
    })
}

impl Verifier for TpmVerifier {
    type Error = TpmVerifyError;

    fn verify(
        &self,
        evidence: &Evidence,
        expected_user_data: &[u8; 32],
    ) -> Result<Verified, TpmVerifyError> {
        match evidence {
            Evidence::Tpm(ev) => self.verify_tpm(ev, expected_user_data),
            #[allow(unreachable_patterns)]
            other => Err(TpmVerifyError::Unsupported {
                what: "evidence",
                reason: format!(
                    "it is {} evidence, and only TPM quotes of activated AKs are taken here",
                    other.platform()
                ),
            }),
        }
    }
}

/// The AK must be a key the TPM generated and will never export, that signs only
/// TPM-generated structures (restricted): otherwise its owner could sign a forged
/// TPMS_ATTEST. Veil's AKs are ECDSA P-256 with SHA-256.
fn check_ak_shape(ak: &TpmPublic) -> Result<(), TpmVerifyError> {
    let required = attr::FIXED_TPM
        | attr::FIXED_PARENT
        | attr::SENSITIVE_DATA_ORIGIN
        | attr::RESTRICTED
        | attr::SIGN_ENCRYPT;
    if !ak.has(required) || ak.has(attr::DECRYPT) {
        return Err(TpmVerifyError::Unsupported {
            what: "AK",
            reason: format!(
                "attributes {:#010x} are not those of a fixedTPM restricted signing key",
                ak.attributes
            ),
        });
    }
    match &ak.key {
        PublicKey::Ecc {
            curve: ECC_NIST_P256,
            scheme: Some((alg::ECDSA, alg::SHA256)),
            ..
        } => Ok(()),
        other => Err(TpmVerifyError::Unsupported {
            what: "AK",
            reason: format!("key {other:?} is not ECDSA-SHA256 on P-256"),
        }),
    }
}

//! Which joiners' evidence the join service believes: AKs that passed credential
//! activation a short while ago, quoting PCRs that match the cluster's reference and a
//! PCR 15 that is still zero.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use measured_boot::reference::ReferenceMeasurements;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use thiserror::Error;
use veil_atls::{AtlsError, EvidenceValidator};
use veil_attest::tpm::{AkIdentity, CredentialChallenge, PendingActivation};
use veil_attest::{Evidence, PcrOutcome, PlatformVerifier, Verified, Verifier, check_pcrs};

use crate::limit::Limits;

/// The PCR a node extends with its cluster id once it has joined.
pub const CLUSTER_PCR: u32 = 15;

/// Identifies a challenge between Challenge and Prove.
pub type ChallengeId = [u8; 16];

#[derive(Debug, Error)]
pub enum AdmissionError {
    #[error("the joiner's TPM identity is not trusted: {0}")]
    NotTrusted(#[source] veil_attest::tpm::TpmVerifyError),
    #[error("too many joins in flight ({0}): try again shortly")]
    Busy(usize),
    #[error("unknown or expired challenge {0}: start again with Challenge")]
    UnknownChallenge(String),
    #[error("the joiner's AK is not in the TPM its EK certificate names: {0}")]
    WrongAnswer(#[source] veil_attest::tpm::TpmVerifyError),
    #[error(
        "this cluster's profile ({0}) names each joiner's AK through its cloud's own proof: there is nothing to activate; present that evidence in the handshake"
    )]
    NoActivation(String),
}

struct Pending {
    activation: PendingActivation,
    since: Instant,
    /// SHA-256 of the EK public area the challenge was made for.
    ek: [u8; 32],
}

/// AK activation state shared by the plain services and the aTLS validator.
pub struct Admission {
    verifier: RwLock<PlatformVerifier>,
    pending: Mutex<HashMap<ChallengeId, Pending>>,
    /// Activated AK names, oldest first, for expiry.
    trusted: Mutex<VecDeque<(Vec<u8>, Instant)>>,
    limits: Limits,
}

impl Admission {
    /// `verifier` holds the TPM CA and the cluster's platform policy.
    pub fn new(verifier: PlatformVerifier, limits: Limits) -> Admission {
        Admission {
            verifier: RwLock::new(verifier),
            pending: Mutex::default(),
            trusted: Mutex::default(),
            limits,
        }
    }

    /// Checks the joiner's EK certificate and AK and makes a credential for it.
    ///
    /// Slots are bounded per EK as well as in all: anyone can replay a node's public
    /// EK certificate and never answer, so one EK's pending challenges are capped and
    /// the newest replaces the oldest. A replayer then holds only the slots of the EKs
    /// it replays (and the host could block those nodes' traffic anyway); the real
    /// node's next attempt still gets a slot.
    pub fn challenge(
        &self,
        identity: &AkIdentity,
    ) -> Result<(ChallengeId, CredentialChallenge), AdmissionError> {
        let (challenge, activation) = {
            let verifier = self.verifier.read().unwrap_or_else(|p| p.into_inner());
            // Under a cloud profile no activated AK would ever count: the certificate
            // chain and RSA work are not done for anyone who asks.
            if !verifier.activates_ak() {
                let profile = verifier.profile().map_or("none", |p| p.name());
                return Err(AdmissionError::NoActivation(profile.to_owned()));
            }
            verifier
                .tpm()
                .challenge(identity)
                .map_err(AdmissionError::NotTrusted)?
        };
        let ek: [u8; 32] = Sha256::digest(&identity.ek_public).into();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = self.limits.activation_ttl;
        pending.retain(|_, p| p.since.elapsed() < ttl);
        let mut same_ek: Vec<(Instant, ChallengeId)> = pending
            .iter()
            .filter(|(_, p)| p.ek == ek)
            .map(|(id, p)| (p.since, *id))
            .collect();
        same_ek.sort();
        let excess = (same_ek.len() + 1).saturating_sub(self.limits.per_ek_in_flight.max(1));
        for (_, id) in same_ek.into_iter().take(excess) {
            tracing::debug!(ek = %hex::encode(ek), "a newer challenge for this EK replaces one");
            pending.remove(&id);
        }
        if pending.len() >= self.limits.max_in_flight {
            return Err(AdmissionError::Busy(pending.len()));
        }
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        pending.insert(
            id,
            Pending {
                activation,
                since: Instant::now(),
                ek,
            },
        );
        Ok((id, challenge))
    }

    /// Takes the joiner's answer: a right one makes its AK trusted for a while.
    pub fn prove(&self, id: &[u8], secret: &[u8]) -> Result<(), AdmissionError> {
        let unknown = || AdmissionError::UnknownChallenge(hex::encode(id));
        let key: ChallengeId = id.try_into().map_err(|_| unknown())?;
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
            .filter(|p| p.since.elapsed() < self.limits.activation_ttl)
            .ok_or_else(unknown)?;
        let ak = pending
            .activation
            .finish(secret)
            .map_err(AdmissionError::WrongAnswer)?;
        let name = ak.name().to_vec();
        let mut verifier = self.verifier.write().unwrap_or_else(|p| p.into_inner());
        let mut trusted = self.trusted.lock().unwrap_or_else(|p| p.into_inner());
        verifier.tpm_mut().add_trusted_ak(ak);
        trusted.push_back((name, Instant::now()));
        self.forget_expired(&mut verifier, &mut trusted);
        Ok(())
    }

    /// Forgets AKs that had their time, and the oldest beyond the bound.
    fn forget_expired(
        &self,
        verifier: &mut PlatformVerifier,
        trusted: &mut VecDeque<(Vec<u8>, Instant)>,
    ) {
        while let Some((name, since)) = trusted.front() {
            if since.elapsed() < self.limits.trusted_ak_ttl
                && trusted.len() <= self.limits.max_in_flight
            {
                break;
            }
            verifier.tpm_mut().remove_trusted_ak(name);
            trusted.pop_front();
        }
    }

    /// Offers Intel's collateral fetched for this node's own platform (`own` is its
    /// evidence) to the cluster policy's TD quote checks; see
    /// `PlatformVerifier::refresh_tdx_collateral`.
    pub fn refresh_tdx_collateral(
        &self,
        own: &Evidence,
        json: &str,
    ) -> Result<Option<veil_attest::tdx::CollateralRefresh>, veil_attest::tdx::TdxVerifyError> {
        self.verifier
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .refresh_tdx_collateral(own, json)
    }

    /// Verifies a joiner's evidence under the AKs still within their time: expiry
    /// is enforced here, when a quote is checked, not only when a new AK arrives.
    fn verify(&self, evidence: &Evidence, user_data: &[u8; 32]) -> Result<Verified, String> {
        {
            let mut verifier = self.verifier.write().unwrap_or_else(|p| p.into_inner());
            let mut trusted = self.trusted.lock().unwrap_or_else(|p| p.into_inner());
            self.forget_expired(&mut verifier, &mut trusted);
        }
        self.verifier
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .verify(evidence, user_data)
            .map_err(|e| e.to_string())
    }
}

/// The join port's aTLS client check: a joiner's evidence must verify under an
/// activated AK, match every enforced reference PCR, and show PCR 15 zero.
pub struct JoinerValidator {
    admission: Arc<Admission>,
    expected: BTreeMap<u32, ([u8; 32], bool)>,
    /// PCR 15 of a member admitted in this boot (it may watch the roster).
    member_pcr: [u8; 32],
}

/// What PCR 15 says a verified peer is; each call requires its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// PCR 15 zero: in no cluster yet (Join, Rejoin).
    Joiner,
    /// PCR 15 holds this cluster's id extended once (Watch).
    Member,
}

impl Standing {
    /// The standing `verified`'s PCR 15 shows, if it is either.
    pub fn of(verified: &Verified, member_pcr: &[u8; 32]) -> Option<Standing> {
        match verified.pcrs.get(&CLUSTER_PCR) {
            Some(v) if *v == [0; 32] => Some(Standing::Joiner),
            Some(v) if v == member_pcr => Some(Standing::Member),
            _ => None,
        }
    }
}

impl JoinerValidator {
    pub fn new(
        admission: Arc<Admission>,
        reference: &ReferenceMeasurements,
        cluster: &veil_keys::ClusterId,
    ) -> JoinerValidator {
        JoinerValidator {
            member_pcr: cluster.member_pcr(),
            admission,
            expected: reference
                .pcrs
                .iter()
                .map(|(&i, p)| (i, (p.expected.0, p.warn_only)))
                .collect(),
        }
    }

    fn check(&self, evidence: &[u8], user_data: &[u8; 32]) -> Result<Verified, String> {
        let evidence = Evidence::decode(evidence).map_err(|e| e.to_string())?;
        let verified = self.admission.verify(&evidence, user_data)?;
        let wrong: Vec<String> = check_pcrs(&verified.pcrs, &self.expected)
            .iter()
            .filter(|c| {
                matches!(
                    c.outcome,
                    PcrOutcome::Mismatch | PcrOutcome::Missing { warn_only: false }
                )
            })
            .map(ToString::to_string)
            .collect();
        if !wrong.is_empty() {
            return Err(format!(
                "the joiner does not match the cluster's reference measurements: {}",
                wrong.join("; ")
            ));
        }
        match (
            Standing::of(&verified, &self.member_pcr),
            verified.pcrs.get(&CLUSTER_PCR),
        ) {
            (Some(_), _) => Ok(verified),
            (None, Some(v)) => Err(format!(
                "the joiner already belongs to another cluster in this boot (PCR {CLUSTER_PCR} is {})",
                hex::encode(v)
            )),
            (None, None) => Err(format!("the joiner did not quote PCR {CLUSTER_PCR}")),
        }
    }
}

impl EvidenceValidator for JoinerValidator {
    fn validate(&self, evidence: &[u8], user_data: &[u8; 32]) -> Result<Verified, AtlsError> {
        self.check(evidence, user_data).map_err(|reason| {
            tracing::warn!("refused a joiner: {reason}");
            AtlsError::Refused(reason)
        })
    }
}

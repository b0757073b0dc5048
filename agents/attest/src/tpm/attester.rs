//! The node side: a TPM 2.0 attester on top of tss-esapi (libtss2).
//!
//! On open it recreates the EK from the TCG default template (RSA-2048, the key the EK
//! certificate in NV certifies), reads that certificate (none in a confidential VM
//! whose TPM has none, such as AWS's NitroTPM), and creates a fresh ECDSA P-256
//! attestation key under the EK. The AK is only useful to a verifier after credential
//! activation ([`TpmAttester::activate`]).

use std::collections::BTreeMap;
use std::convert::TryFrom;
use std::path::PathBuf;

use crate::cvm::{HardwareAttestError, HardwareAttester};
use thiserror::Error;
use tss_esapi::Context;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ak, ek, pcr};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, PcrHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, Digest, DigestValues, EncryptedSecret, IdObject, PcrSelectionList, PcrSlot, PublicBuffer,
    Signature, SignatureScheme, SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use zeroize::Zeroizing;

use super::credential::CredentialChallenge;
use super::evidence::{AkIdentity, TpmEvidence};
use super::public::TpmPublic;
use super::quote::{Quote, pcr_digest};
use crate::encoding::Digest32;
use crate::evidence::{Attester, Evidence};

/// Where Linux exposes the firmware's TCG event log.
pub const DEFAULT_EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

/// Where systemd logs the extends it makes (systemd-stub's are in the firmware log).
pub const DEFAULT_SYSTEMD_LOG: &str = "/run/log/systemd/tpm2-measure.log";

/// The most event-log bytes attached to one piece of evidence. The evidence travels in
/// a TLS certificate, and a TLS handshake message holds at most 64 KiB; larger logs
/// are left out (verifiers then cannot name components, but the quote still counts).
pub const MAX_ATTACHED_LOG_BYTES: usize = 40 * 1024;

/// How many times a quote is retaken if PCRs change between quoting and reading them.
pub(crate) const QUOTE_ATTEMPTS: usize = 3;

#[derive(Debug, Error)]
pub enum TpmAttestError {
    #[error("cannot open TPM through TCTI {tcti:?}: {source}")]
    Open {
        tcti: String,
        #[source]
        source: tss_esapi::Error,
    },
    #[error("TPM operation '{op}' failed: {source}")]
    Tpm {
        op: &'static str,
        #[source]
        source: tss_esapi::Error,
    },
    #[error("PCR index {index} is out of range (0..=23)")]
    BadPcr { index: u32 },
    #[error("cannot read the event log {path}: {source}")]
    EventLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("PCRs kept changing while quoting ({attempts} attempts)")]
    PcrsUnstable { attempts: usize },
    #[error("TPM returned an unexpected {what}: {reason}")]
    Unexpected { what: &'static str, reason: String },
    #[error(transparent)]
    Hardware(#[from] HardwareAttestError),
}

pub(crate) fn tpm(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmAttestError {
    move |source| TpmAttestError::Tpm { op, source }
}

/// Attester settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmAttesterConfig {
    /// tss TCTI string, e.g. `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321`.
    pub tcti: String,
    /// SHA-256 PCRs to quote.
    pub pcrs: Vec<u32>,
    /// Firmware (TCG) event log to attach if the file exists.
    pub event_log: Option<PathBuf>,
    /// systemd's log of its own extends (PCR 11 phases, …) to attach if it exists.
    pub systemd_log: Option<PathBuf>,
    /// In a confidential VM: attach a hardware report binding the AK to each quote.
    pub hardware: Option<HardwareAttester>,
}

impl Default for TpmAttesterConfig {
    fn default() -> Self {
        TpmAttesterConfig {
            tcti: "device:/dev/tpmrm0".into(),
            pcrs: (0..16).collect(),
            event_log: Some(PathBuf::from(DEFAULT_EVENT_LOG)),
            systemd_log: Some(PathBuf::from(DEFAULT_SYSTEMD_LOG)),
            hardware: None,
        }
    }
}

impl TpmAttesterConfig {
    /// Defaults with another TCTI.
    pub fn with_tcti(tcti: impl Into<String>) -> Self {
        TpmAttesterConfig {
            tcti: tcti.into(),
            ..Default::default()
        }
    }
}

/// A TPM with its EK and a loaded AK.
pub struct TpmAttester {
    ctx: Context,
    ek: KeyHandle,
    ak: KeyHandle,
    identity: AkIdentity,
    pcrs: Vec<u32>,
    event_log: Option<PathBuf>,
    systemd_log: Option<PathBuf>,
    hardware: Option<HardwareAttester>,
}

impl std::fmt::Debug for TpmAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmAttester")
            .field("pcrs", &self.pcrs)
            .field("event_log", &self.event_log)
            .field("hardware", &self.hardware)
            .finish_non_exhaustive()
    }
}

impl TpmAttester {
    /// Opens the TPM, creates the EK and a new AK, reads the EK certificate.
    pub fn open(config: &TpmAttesterConfig) -> Result<Self, TpmAttestError> {
        let open_err = |source| TpmAttestError::Open {
            tcti: config.tcti.clone(),
            source,
        };
        let tcti: TctiNameConf = config.tcti.parse().map_err(open_err)?;
        let mut ctx = Context::new(tcti).map_err(open_err)?;
        // Checked now, so a bad index fails at open rather than at the first quote.
        sha256_selection(&config.pcrs)?;

        let ek_alg = AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048);
        let ek = ek::create_ek_object_2(&mut ctx, ek_alg, None).map_err(tpm("create EK"))?;
        // A confidential VM's TPM may have no EK certificate (AWS's NitroTPM): there the
        // hardware report binds the AK, and the evidence says so with an empty one. A
        // TPM without hardware beside it must have its certificate, or nothing vouches.
        let ek_cert = match ek::retrieve_ek_pubcert(&mut ctx, ek_alg) {
            Ok(cert) => cert,
            Err(_) if config.hardware.is_some() => Vec::new(),
            Err(e) => return Err(tpm("read EK certificate from NV 0x01c00002")(e)),
        };
        let created = ak::create_ak_2(
            &mut ctx,
            ek,
            HashingAlgorithm::Sha256,
            AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            SignatureSchemeAlgorithm::EcDsa,
            None,
            None,
        )
        .map_err(tpm("create AK"))?;
        let ak = ak::load_ak(&mut ctx, ek, None, created.out_private, created.out_public)
            .map_err(tpm("load AK"))?;

        let ek_public = public_bytes(&mut ctx, ek, "EK")?;
        let ak_public = public_bytes(&mut ctx, ak, "AK")?;
        Ok(TpmAttester {
            ctx,
            ek,
            ak,
            identity: AkIdentity {
                ek_public,
                ek_cert,
                ak_public,
            },
            pcrs: config.pcrs.clone(),
            event_log: config.event_log.clone(),
            systemd_log: config.systemd_log.clone(),
            hardware: config.hardware.clone(),
        })
    }

    /// The EK certificate, EK and AK public areas, for the verifier's challenge.
    pub fn identity(&self) -> &AkIdentity {
        &self.identity
    }

    /// Answers a credential challenge: TPM2_ActivateCredential with the AK as the
    /// activated object and the EK as decryption key. The EK's authPolicy is
    /// PolicySecret(TPM_RH_ENDORSEMENT) (TCG EK Credential Profile, policy A), so a policy
    /// session satisfying it authorises the EK; the AK uses its (empty) password.
    pub fn activate(
        &mut self,
        challenge: &CredentialChallenge,
    ) -> Result<Zeroizing<Vec<u8>>, TpmAttestError> {
        let unexpected = |what, e: tss_esapi::Error| TpmAttestError::Unexpected {
            what,
            reason: e.to_string(),
        };
        let blob = IdObject::try_from(challenge.credential_blob.clone())
            .map_err(|e| unexpected("credential blob size", e))?;
        let secret = EncryptedSecret::try_from(challenge.encrypted_secret.clone())
            .map_err(|e| unexpected("encrypted secret size", e))?;
        let session = self
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(tpm("start EK policy session"))?
            .ok_or_else(|| TpmAttestError::Unexpected {
                what: "session",
                reason: "TPM returned no policy session".into(),
            })?;
        let (ak, ek) = (self.ak, self.ek);
        let out = self.ctx.execute_with_temporary_object(
            SessionHandle::from(session).into(),
            |ctx, _| {
                let policy = PolicySession::try_from(session)?;
                ctx.execute_with_nullauth_session(|ctx| {
                    ctx.policy_secret(
                        policy,
                        AuthHandle::Endorsement,
                        Default::default(),
                        Default::default(),
                        Default::default(),
                        None,
                    )
                })?;
                ctx.execute_with_sessions(
                    (Some(AuthSession::Password), Some(session), None),
                    |ctx| ctx.activate_credential(ak, ek, blob, secret),
                )
            },
        );
        let digest = out.map_err(tpm("ActivateCredential"))?;
        Ok(Zeroizing::new(digest.value().to_vec()))
    }

    /// Quotes the configured PCRs with `user_data` as qualifying data.
    pub fn quote(&mut self, user_data: &[u8; 32]) -> Result<TpmEvidence, TpmAttestError> {
        let quoted = quote_pcrs(&mut self.ctx, self.ak, &self.pcrs, user_data)?;
        let signature = quoted
            .signature
            .marshall()
            .map_err(tpm("marshal TPMT_SIGNATURE"))?;
        let mut event_log = read_optional(self.event_log.as_deref())?;
        let mut systemd_log = read_optional(self.systemd_log.as_deref())?;
        let attached = [&event_log, &systemd_log]
            .iter()
            .filter_map(|l| l.as_ref().map(Vec::len))
            .sum::<usize>();
        if attached > MAX_ATTACHED_LOG_BYTES {
            (event_log, systemd_log) = (None, None);
        }
        let hardware = match &mut self.hardware {
            Some(h) => Some(h.report(user_data, &self.identity.ak_public)?),
            None => None,
        };
        Ok(TpmEvidence {
            quote: quoted.attest,
            signature,
            pcrs: quoted
                .pcrs
                .into_iter()
                .map(|(i, v)| (i, Digest32(v)))
                .collect(),
            ak_public: self.identity.ak_public.clone(),
            ek_public: self.identity.ek_public.clone(),
            ek_cert: self.identity.ek_cert.clone(),
            event_log,
            systemd_log,
            hardware,
        })
    }

    /// Reads SHA-256 PCR values.
    pub fn read_pcrs(
        &mut self,
        indices: &[u32],
    ) -> Result<BTreeMap<u32, [u8; 32]>, TpmAttestError> {
        read_sha256_pcrs(&mut self.ctx, indices)
    }

    /// Extends SHA-256 PCR `index` with `digest` (e.g. PCR 15 with the cluster id).
    pub fn extend_pcr(&mut self, index: u32, digest: &[u8; 32]) -> Result<(), TpmAttestError> {
        let handle = PcrHandle::try_from(index).map_err(|_| TpmAttestError::BadPcr { index })?;
        let mut values = DigestValues::new();
        values.set(
            HashingAlgorithm::Sha256,
            Digest::try_from(digest.to_vec()).map_err(tpm("digest"))?,
        );
        self.ctx
            .execute_with_nullauth_session(|ctx| ctx.pcr_extend(handle, values))
            .map_err(tpm("PCR_Extend"))
    }
}

/// The file at `path`, if there is a path and the file exists.
fn read_optional(path: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, TpmAttestError> {
    let Some(path) = path else {
        return Ok(None);
    };
    match std::fs::read(path) {
        Ok(log) => Ok(Some(log)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TpmAttestError::EventLog {
            path: path.to_owned(),
            source,
        }),
    }
}

impl Attester for TpmAttester {
    type Error = TpmAttestError;

    fn evidence(&mut self, user_data: &[u8; 32]) -> Result<Evidence, TpmAttestError> {
        self.quote(user_data).map(Evidence::Tpm)
    }
}

/// A TPM context through `tcti`.
pub(crate) fn open_context(tcti: &str) -> Result<Context, TpmAttestError> {
    let open_err = |source| TpmAttestError::Open {
        tcti: tcti.to_owned(),
        source,
    };
    let conf: TctiNameConf = tcti.parse().map_err(open_err)?;
    Context::new(conf).map_err(open_err)
}

/// Whether NV `index` is defined in the TPM at `tcti`.
pub(crate) fn nv_index_defined(tcti: &str, index: u32) -> Result<bool, TpmAttestError> {
    let mut ctx = open_context(tcti)?;
    let index = tss_esapi::handles::NvIndexTpmHandle::new(index).map_err(tpm("NV index"))?;
    Ok(tss_esapi::abstraction::nv::list(&mut ctx)
        .map_err(tpm("list NV indices"))?
        .iter()
        .any(|(p, _)| p.nv_index() == index))
}

/// The whole of NV `index`, read with owner authorization (empty password).
pub(crate) fn read_nv(
    ctx: &mut Context,
    index: u32,
    op: &'static str,
) -> Result<Vec<u8>, TpmAttestError> {
    let handle = tss_esapi::handles::NvIndexTpmHandle::new(index).map_err(tpm("NV index"))?;
    ctx.execute_with_nullauth_session(|ctx| {
        tss_esapi::abstraction::nv::read_full(
            ctx,
            tss_esapi::interface_types::resource_handles::NvAuth::Owner,
            handle,
        )
    })
    .map_err(tpm(op))
}

/// A quote and the PCR values it covers.
pub(crate) struct QuotedPcrs {
    /// TPMS_ATTEST, marshalled.
    pub attest: Vec<u8>,
    pub signature: Signature,
    pub pcrs: BTreeMap<u32, [u8; 32]>,
}

/// Quotes the SHA-256 `pcrs` with `key` over `user_data`. The quote carries only a
/// digest, so the values are read after it and kept if they are the ones quoted (an
/// extend in between means: quote again).
pub(crate) fn quote_pcrs(
    ctx: &mut Context,
    key: KeyHandle,
    pcrs: &[u32],
    user_data: &[u8; 32],
) -> Result<QuotedPcrs, TpmAttestError> {
    for _ in 0..QUOTE_ATTEMPTS {
        let selection = sha256_selection(pcrs)?;
        let (attest, signature) = ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.quote(
                    key,
                    Data::try_from(user_data.to_vec())?,
                    SignatureScheme::Null,
                    selection,
                )
            })
            .map_err(tpm("Quote"))?;
        let attest = attest.marshall().map_err(tpm("marshal TPMS_ATTEST"))?;
        let parsed = Quote::parse(&attest).map_err(|e| TpmAttestError::Unexpected {
            what: "quote",
            reason: e.to_string(),
        })?;
        let order = parsed
            .sha256_pcrs()
            .map_err(|e| TpmAttestError::Unexpected {
                what: "quote selection",
                reason: e.to_string(),
            })?;
        let values = read_sha256_pcrs(ctx, &order)?;
        let digest = pcr_digest(order.iter().filter_map(|i| values.get(i)));
        if values.len() == order.len() && digest.as_slice() == parsed.pcr_digest {
            return Ok(QuotedPcrs {
                attest,
                signature,
                pcrs: values,
            });
        }
    }
    Err(TpmAttestError::PcrsUnstable {
        attempts: QUOTE_ATTEMPTS,
    })
}

/// Reads SHA-256 PCR values.
pub(crate) fn read_sha256_pcrs(
    ctx: &mut Context,
    indices: &[u32],
) -> Result<BTreeMap<u32, [u8; 32]>, TpmAttestError> {
    let data = pcr::read_all(ctx, sha256_selection(indices)?).map_err(tpm("PCR_Read"))?;
    let bank =
        data.pcr_bank(HashingAlgorithm::Sha256)
            .ok_or_else(|| TpmAttestError::Unexpected {
                what: "PCR read",
                reason: "no SHA-256 bank in the answer".into(),
            })?;
    let mut out = BTreeMap::new();
    for &i in indices {
        let digest = bank
            .get_digest(pcr_slot(i)?)
            .ok_or_else(|| TpmAttestError::Unexpected {
                what: "PCR read",
                reason: format!("PCR {i} missing from the answer"),
            })?;
        let value =
            <[u8; 32]>::try_from(digest.value()).map_err(|_| TpmAttestError::Unexpected {
                what: "PCR value",
                reason: format!("PCR {i} has {} bytes", digest.value().len()),
            })?;
        out.insert(i, value);
    }
    Ok(out)
}

fn pcr_slot(index: u32) -> Result<PcrSlot, TpmAttestError> {
    if index > 23 {
        return Err(TpmAttestError::BadPcr { index });
    }
    PcrSlot::try_from(1u32 << index).map_err(|_| TpmAttestError::BadPcr { index })
}

pub(crate) fn sha256_selection(indices: &[u32]) -> Result<PcrSelectionList, TpmAttestError> {
    let slots = indices
        .iter()
        .map(|&i| pcr_slot(i))
        .collect::<Result<Vec<_>, _>>()?;
    PcrSelectionList::builder()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(tpm("PCR selection"))
}

/// The object's TPM2B_PUBLIC, checked to be named by the TPM exactly as the verifier will
/// name it (nameAlg || SHA-256 of the re-marshalled TPMT_PUBLIC).
fn public_bytes(
    ctx: &mut Context,
    key: KeyHandle,
    what: &'static str,
) -> Result<Vec<u8>, TpmAttestError> {
    let (public, tpm_name, _) = ctx.read_public(key).map_err(tpm("ReadPublic"))?;
    let bytes = PublicBuffer::try_from(public)
        .and_then(|b| b.marshall())
        .map_err(tpm("marshal TPM2B_PUBLIC"))?;
    let ours = TpmPublic::from_tpm2b(&bytes)
        .and_then(|p| p.name())
        .map_err(|e| TpmAttestError::Unexpected {
            what,
            reason: format!("public area does not parse: {e}"),
        })?;
    if ours != tpm_name.value() {
        return Err(TpmAttestError::Unexpected {
            what,
            reason: format!(
                "name computed here {} differs from the TPM's {}",
                hex::encode(&ours),
                hex::encode(tpm_name.value())
            ),
        });
    }
    Ok(bytes)
}

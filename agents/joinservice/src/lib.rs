//! The join service: runs on a cluster's control-plane node (its own unit,
//! `veil-joinservice.service`) and admits new and rebooted nodes on the join port
//! ([`veil_protocol::JOIN_PORT`], services in `proto/join.proto`).
//!
//! A joiner gets a key only after its TPM proved, in the same mutual aTLS handshake
//! that carries the request, that it runs what the cluster's reference measurements
//! say and has not joined a cluster in this boot (PCR 15 zero). Its AK is trusted only
//! after credential activation against an EK certificate from the configured TPM CA.
//! Keys are derived from the master secret for the asking node's state partition and
//! are never stored; the service keeps no state that a restart would lose except
//! joins in flight, which the joiner starts again.
//!
//! Where the cluster's platform policy accepts SEV-SNP or TDX, a joiner's quote may (or,
//! with `requireHardware`, must) carry a hardware report over its AK, checked under it.
//! Under a cloud profile the joiner's evidence is its cloud's (Azure's HCL report,
//! GCE's certified AK, AWS's SEV-SNP report over the AK): that proof names the AK, so
//! nothing is activated, and the member is known by the AK the cloud's proof names
//! ([`veil_attest::Machine`]).
//!
//! What the service holds (the master secret and the reference measurements) lives on
//! the node's encrypted state disk, where Init or Recover put it ([`Cluster::load`]).

mod admission;
pub mod kubernetes;
mod limit;
pub mod roster;
mod service;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use measured_boot::reference::ReferenceMeasurements;
use thiserror::Error;
use tonic::transport::Server;
use veil_atls::{ClientAuth, EvidenceIssuer};
use veil_attest::tpm::{EkTrust, TpmVerifier};
use veil_attest::{Evidence, PlatformPolicy, PlatformVerifier};
use veil_keys::MasterSecret;
use veil_protocol::MAX_MESSAGE;
use veil_protocol::activation::{ActivationService, SharedTpm};
use veil_protocol::paths::{self, ClusterSettings};
use veil_protocol::pb::attestation::activation_server::ActivationServer;
use veil_protocol::pb::join::join_activation_server::JoinActivationServer;
use veil_protocol::pb::join::join_server::JoinServer;
use veil_protocol::pb::join::mesh_server::MeshServer;

pub use admission::{Admission, JoinerValidator, Standing};
pub use limit::Limits;

#[derive(Debug, Error)]
pub enum JoinServiceError {
    #[error("loading the cluster's master secret: {0}")]
    MasterSecret(#[from] veil_keys::KeyError),
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} does not parse: {reason}", path.display())]
    Reference { path: PathBuf, reason: String },
    #[error(transparent)]
    Policy(#[from] veil_attest::PolicyError),
    #[error(transparent)]
    Roster(#[from] roster::RosterError),
    #[error("serving the join port failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// What the join service needs from the cluster.
pub struct Cluster {
    pub master: MasterSecret,
    pub reference: ReferenceMeasurements,
    /// Which hardware evidence joiners may or must show with their TPM quotes.
    pub platform: PlatformPolicy,
    pub settings: ClusterSettings,
    /// The WireGuard mesh's subnet (from the settings).
    pub mesh: veil_mesh::address::MeshPlan,
    /// The pod network (from the settings).
    pub pods: ipnet::Ipv4Net,
    /// The members admitted so far.
    pub roster: Arc<roster::Roster>,
    /// This node on the mesh, where Init gave it a WireGuard key.
    pub own_mesh: Option<OwnMesh>,
}

/// The control-plane node on the mesh: the service keeps its mesh file (`path`,
/// [`paths::MESH`]) in step with the roster, and the node's mesh follower applies it.
#[derive(Debug, Clone)]
pub struct OwnMesh {
    pub path: PathBuf,
    pub key: veil_mesh::peers::WgKey,
    pub address: std::net::Ipv4Addr,
}

impl Cluster {
    /// Reads the master secret, reference measurements and settings from `dir`
    /// ([`paths::CLUSTER_DIR`] on a node: its encrypted state disk).
    pub fn load(dir: &Path) -> Result<Cluster, JoinServiceError> {
        let master = MasterSecret::read_file(&dir.join(paths::MASTER_SECRET))?;
        let path = dir.join(paths::REFERENCE);
        let text = std::fs::read_to_string(&path).map_err(|source| JoinServiceError::Read {
            path: path.clone(),
            source,
        })?;
        let reference =
            ReferenceMeasurements::from_json(&text).map_err(|e| JoinServiceError::Reference {
                path,
                reason: e.to_string(),
            })?;
        // Kept by Init since settings existed; an older node has none: the defaults.
        let path = dir.join(paths::SETTINGS);
        let settings = match read_optional(&path)? {
            Some(text) => {
                ClusterSettings::from_json(&text).map_err(|e| JoinServiceError::Reference {
                    path,
                    reason: e.to_string(),
                })?
            }
            None => ClusterSettings::default(),
        };
        // Kept by Init only when the operator gave one: otherwise TPM quotes only.
        let path = dir.join(paths::PLATFORM_POLICY);
        let platform = match read_optional(&path)? {
            Some(text) => PlatformPolicy::from_json(&path.display().to_string(), &text)?,
            None => PlatformPolicy::default(),
        };
        // The node this service runs on never joined: its name is taken all the same.
        let path = dir.join(paths::NODE);
        let own: Option<paths::NodeRecord> = match read_optional(&path)? {
            Some(text) => {
                Some(
                    serde_json::from_str(&text).map_err(|e| JoinServiceError::Reference {
                        path,
                        reason: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        let reserved = own.iter().map(|r| r.name.clone()).collect();
        let own_partition = own.as_ref().map(|r| r.partuuid.clone()).unwrap_or_default();
        let mesh = mesh_plan(&settings).map_err(|reason| JoinServiceError::Reference {
            path: dir.join(paths::SETTINGS),
            reason,
        })?;
        let k = &settings.kubernetes;
        let pods = veil_kube::Network::from_settings(&k.pod_subnet, &k.service_subnet)
            .map(|n| n.pods.into())
            .map_err(|e| JoinServiceError::Reference {
                path: dir.join(paths::SETTINGS),
                reason: e.to_string(),
            })?;
        let roster = roster::Roster::load(dir, reserved, mesh)?.reserve_partition(&own_partition);
        // This node is on the mesh too, with the key Init made for it.
        let path = dir.join(paths::WIREGUARD_KEY);
        let mut own_mesh = None;
        if let (Some(own), Some(text)) = (&own, read_optional(&path)?) {
            let key = veil_mesh::key::PrivateKey::parse(&path.display().to_string(), &text)
                .map_err(|e| JoinServiceError::Reference {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
                .public();
            let member = roster.own(&own.name, &own_partition, &key)?;
            own_mesh = member.mesh_ip.map(|address| OwnMesh {
                path: dir.join(paths::MESH),
                key,
                address,
            });
        }
        Ok(Cluster {
            master,
            reference,
            platform,
            settings,
            mesh,
            pods,
            roster: Arc::new(roster),
            own_mesh,
        })
    }
}

/// The cluster's mesh plan: its mesh subnet setting, clear of its pod and Service
/// networks.
pub fn mesh_plan(settings: &ClusterSettings) -> Result<veil_mesh::address::MeshPlan, String> {
    let k = &settings.kubernetes;
    let network = veil_kube::Network::from_settings(&k.pod_subnet, &k.service_subnet)
        .map_err(|e| e.to_string())?;
    veil_mesh::address::MeshPlan::from_setting(&settings.mesh_subnet, &network.ranges())
        .map_err(|e| e.to_string())
}

/// A file's text, or None if there is no such file.
fn read_optional(path: &Path) -> Result<Option<String>, JoinServiceError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(JoinServiceError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

impl Cluster {
    /// How joiners' evidence is checked: TPM quotes under `trust` (the image's TPM CA)
    /// and activated AKs, cloud and hardware evidence as the cluster's policy says.
    pub fn verifier(&self, trust: EkTrust) -> Result<PlatformVerifier, JoinServiceError> {
        Ok(PlatformVerifier::new(
            TpmVerifier::new(trust),
            &self.platform,
            "the cluster's platform policy",
        )?)
    }
}

/// What the join service proves itself with, and checks joiners by.
pub struct Credentials {
    /// The node's TPM: where joiners activate the service's AK (the `qemu` profile).
    pub tpm: SharedTpm,
    /// What the join port's aTLS presents: the TPM's quote, or on a cloud's CVM the
    /// cloud's evidence (whose own proof names the AK).
    pub issuer: Arc<dyn EvidenceIssuer>,
    /// Joiners' evidence is checked by it ([`Cluster::verifier`]).
    pub verifier: PlatformVerifier,
    /// Where this node, a TD, fetches Intel's collateral for its own platform to keep
    /// the policy's fresh ([`keep_collateral_fresh`]); `None` elsewhere.
    pub collateral: Option<veil_fetch::pcs::PcsClient>,
}

/// How often collateral is fetched anew: Intel's TCB info and CRLs are dated for a
/// month, and a TCB recovery publishes new ones.
const COLLATERAL_REFRESH: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
/// After a failed fetch (no route out, PCS down), the next try.
const COLLATERAL_RETRY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Keeps the cluster policy's Intel collateral for TD quotes fresh, where this node is a
/// TD: at start and then every [`COLLATERAL_REFRESH`], collateral fetched for its own
/// platform (its own evidence, from `issuer`) replaces what the policy holds when
/// Intel's chain holds for its own quote with it and it is no older. An operator's
/// inline collateral expires within weeks; without this, joins would stop then.
pub async fn keep_collateral_fresh(
    admission: Arc<Admission>,
    issuer: Arc<dyn EvidenceIssuer>,
    pcs: veil_fetch::pcs::PcsClient,
) {
    loop {
        let wait = match refresh_collateral_once(&admission, &issuer, &pcs).await {
            Ok(None) => return,
            Ok(Some(outcome)) => {
                tracing::info!(?outcome, "Intel's collateral for the cluster's TD quotes");
                COLLATERAL_REFRESH
            }
            Err(e) => {
                tracing::warn!(
                    "keeping the cluster's TD collateral fresh: {e} (next try in {COLLATERAL_RETRY:?})"
                );
                COLLATERAL_RETRY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One round of [`keep_collateral_fresh`]: `None` where this node has no TD quote or
/// the policy checks none of its kind.
async fn refresh_collateral_once(
    admission: &Admission,
    issuer: &Arc<dyn EvidenceIssuer>,
    pcs: &veil_fetch::pcs::PcsClient,
) -> Result<Option<veil_attest::tdx::CollateralRefresh>, String> {
    let issuer = issuer.clone();
    // Any data will do: only the quote's platform is used.
    let encoded = tokio::task::spawn_blocking(move || issuer.issue(&[0; 32]))
        .await
        .map_err(|e| format!("the task reading this node's evidence: {e}"))?
        .map_err(|e| format!("this node's evidence: {e}"))?;
    let own = Evidence::decode(&encoded).map_err(|e| format!("this node's evidence: {e}"))?;
    let Some(quote) = veil_attest::cvm::td_quote(&own) else {
        return Ok(None);
    };
    let json = pcs.collateral_for(quote).await.map_err(|e| e.to_string())?;
    admission
        .refresh_tdx_collateral(&own, &json)
        .map_err(|e| format!("the fetched collateral, for this node's own TD quote: {e}"))
}

/// Serves the join port on `listener` until it fails: activation both ways on plain
/// HTTP/2 (for TPM evidence; a cloud's evidence needs none), Join and Rejoin on
/// mutual aTLS.
pub async fn serve(
    listener: tokio::net::TcpListener,
    credentials: Credentials,
    cluster: Cluster,
    limits: Limits,
    kubernetes: Arc<dyn kubernetes::Kubernetes>,
) -> Result<(), JoinServiceError> {
    let Credentials {
        tpm,
        issuer,
        verifier,
        collateral,
    } = credentials;
    let admission = Arc::new(Admission::new(verifier, limits.clone()));
    if let Some(pcs) = collateral {
        tokio::spawn(keep_collateral_fresh(
            admission.clone(),
            issuer.clone(),
            pcs,
        ));
    }
    let validator = Arc::new(JoinerValidator::new(
        admission.clone(),
        &cluster.reference,
        &cluster.master.cluster_id(),
    ));
    let (plain, atls) = veil_protocol::server::split(
        listener,
        issuer,
        // Optional: `veil remove` has nothing to attest; every call but Remove
        // requires a verified TPM (JoinService::attested), Remove the admin credential.
        ClientAuth::Optional(validator),
        limits.connections.clone(),
    );
    let limiter = Arc::new(limit::PeerLimiter::new(&limits));
    let plain = Server::builder()
        .add_service(
            ActivationServer::new(ActivationService { tpm }).max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            JoinActivationServer::new(service::JoinActivationService::new(
                admission.clone(),
                limiter.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming(plain);
    let join = Arc::new(service::JoinService::new(
        cluster,
        limiter,
        kubernetes.clone(),
    ));
    // This node's mesh file, for the roster as it is now (a restart, a Recover).
    join.publish_own_mesh();
    // Each member's pod range, as the controller manager gives it, into the roster.
    let (ranges, mut changed) = tokio::sync::watch::channel(Default::default());
    tokio::spawn(async move { kubernetes.watch_pod_ranges(ranges).await });
    let follower = join.clone();
    tokio::spawn(async move {
        while changed.changed().await.is_ok() {
            let now = changed.borrow_and_update().clone();
            follower.set_pod_ranges(&now);
        }
    });
    let atls = Server::builder()
        .add_service(JoinServer::from_arc(join.clone()).max_decoding_message_size(MAX_MESSAGE))
        .add_service(
            MeshServer::new(service::MeshService::new(join)).max_decoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming(atls);
    tokio::try_join!(plain, atls)?;
    Ok(())
}

/// TEST DATA: the recorded Azure TDX evidence, shared with `veil-attest`'s tests.
#[cfg(test)]
#[path = "../../attest/tests/pcs_support/mod.rs"]
mod pcs_support;

#[cfg(test)]
mod tests {
    use super::*;

    /// A TEST DOUBLE of this node's evidence: issues `evidence` whatever it is asked.
    struct Recorded(Evidence);

    impl EvidenceIssuer for Recorded {
        fn issue(&self, _: &[u8; 32]) -> Result<Vec<u8>, veil_atls::AtlsError> {
            Ok(self.0.encode())
        }
    }

    fn admission() -> Admission {
        let ek = EkTrust::from_pem(include_bytes!("../../attest/tests/data/snp/milan_ark.pem"))
            .expect("a root");
        Admission::new(
            PlatformVerifier::tpm_only(TpmVerifier::new(ek)),
            Limits::default(),
        )
    }

    /// Nothing listens here: a fetch from it fails, naming it.
    fn unreachable_pcs() -> veil_fetch::pcs::PcsClient {
        veil_fetch::pcs::PcsClient::with_roots(
            "http://127.0.0.1:9",
            "http://127.0.0.1:9/IntelSGXRootCA.der",
            rustls::RootCertStore::empty(),
        )
        .expect("client")
    }

    #[tokio::test]
    async fn only_a_td_fetches_collateral_and_a_failed_fetch_is_named() {
        let admission = admission();
        let snp: Arc<dyn EvidenceIssuer> =
            Arc::new(Recorded(Evidence::SevSnp(veil_attest::snp::SnpEvidence {
                report: vec![0; 1184],
                vcek: Vec::new(),
                cert_chain: None,
            })));
        let outcome = refresh_collateral_once(&admission, &snp, &unreachable_pcs())
            .await
            .expect("nothing to fetch for");
        assert_eq!(outcome, None);

        let td: Arc<dyn EvidenceIssuer> = Arc::new(Recorded(Evidence::AzureTdx(
            pcs_support::recorded_azure_tdx(),
        )));
        let e = refresh_collateral_once(&admission, &td, &unreachable_pcs())
            .await
            .expect_err("no PCS");
        assert!(e.contains("http://127.0.0.1:9/"), "{e}");
    }
}

//! The Bootstrap service (veil-protocol's `proto/bootstrap.proto`), over aTLS on the
//! agent port: `veil init` makes this node a cluster's first node, `veil recover`
//! brings an initialized node's state disk back after a full restart.
//!
//! Either way the node derives its disk key from the master secret it is given, opens
//! (or creates) its state disk, and extends PCR 15 with the cluster id. A node whose
//! PCR 15 is set has joined a cluster for this boot and refuses both; a state disk is
//! formatted only by Init and only when blank; a wrong secret opens nothing and
//! changes nothing.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use measured_boot::reference::ReferenceMeasurements;
use tonic::{Request, Response, Status};
use veil_attest::PlatformPolicy;
use veil_attest::tpm::TpmAttester;
use veil_disk::Integrity;
use veil_keys::{ClusterId, MasterSecret};
use veil_protocol::paths;
use veil_protocol::pb::bootstrap::bootstrap_server::Bootstrap;
use veil_protocol::pb::bootstrap::{BootstrapResponse, InitRequest, RecoverRequest};
use zeroize::Zeroize;

use crate::attestation::SharedTpm;
use crate::state::{self, StatePartition};

/// PCR that holds the cluster id.
pub const CLUSTER_PCR: u32 = 15;

/// What Init, Recover and the join loop share: the TPM, where the state disk lives,
/// and one lock so that only one of them brings the node into a cluster.
#[derive(Clone)]
pub struct Node {
    tpm: SharedTpm,
    /// `major:minor` of the root device (to find the disk for the state partition).
    root_dev: String,
    /// One Init/Recover/Join at a time: the second waits, then sees PCR 15 set.
    busy: Arc<Mutex<()>>,
}

/// How the node came by its state disk key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Init,
    Recover,
    Join,
    Rejoin,
}

impl Admission {
    pub fn name(self) -> &'static str {
        match self {
            Admission::Init => "Init",
            Admission::Recover => "Recover",
            Admission::Join => "Join",
            Admission::Rejoin => "Rejoin",
        }
    }
}

/// A node that has joined: what it extended into PCR 15, and its state disk.
#[derive(Debug)]
pub struct Joined {
    pub cluster_id: ClusterId,
    pub partuuid: String,
    pub created: bool,
}

impl Node {
    pub fn new(tpm: SharedTpm, root_dev: String) -> Self {
        Node {
            tpm,
            root_dev,
            busy: Arc::default(),
        }
    }

    pub fn tpm(&self) -> &SharedTpm {
        &self.tpm
    }

    /// Holds the node for one admission; every step below runs under it.
    pub fn lock(&self) -> Result<MutexGuard<'_, ()>, Status> {
        self.busy
            .lock()
            .map_err(|_| Status::internal("bootstrap lock poisoned"))
    }

    fn lock_tpm(&self) -> Result<MutexGuard<'_, TpmAttester>, Status> {
        self.tpm
            .0
            .lock()
            .map_err(|_| Status::internal("TPM lock poisoned"))
    }

    /// PCR 15, zero until the node joins a cluster in this boot.
    pub fn cluster_pcr(&self) -> Result<[u8; 32], Status> {
        let pcrs = self
            .lock_tpm()?
            .read_pcrs(&[CLUSTER_PCR])
            .map_err(|e| Status::internal(format!("reading PCR {CLUSTER_PCR}: {e}")))?;
        pcrs.get(&CLUSTER_PCR)
            .copied()
            .ok_or_else(|| Status::internal(format!("the TPM did not return PCR {CLUSTER_PCR}")))
    }

    /// Refuses `what` on a node that has joined a cluster in this boot.
    pub fn check_unjoined(&self, what: Admission) -> Result<(), Status> {
        let value = self.cluster_pcr()?;
        if value != [0; 32] {
            return Err(Status::failed_precondition(format!(
                "this node already belongs to a cluster (PCR {CLUSTER_PCR} is {}): {} refused",
                crate::hex_lower(&value),
                what.name()
            )));
        }
        Ok(())
    }

    /// The state partition (created if missing) and what it holds.
    pub fn locate(&self) -> Result<(StatePartition, veil_disk::Contents), Status> {
        let started = Instant::now();
        let part = state::find_or_create(&self.root_dev)
            .map_err(|e| Status::internal(format!("finding the state disk: {e:#}")))?;
        let contents = veil_disk::inspect(&part.device)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        tracing::info!(
            device = %part.device.display(),
            ms = started.elapsed().as_millis(),
            "state partition found or created"
        );
        Ok((part, contents))
    }

    /// Opens the state disk with `key` (formatting it when `create`), then extends
    /// PCR 15 with the cluster id: `cluster`, or for a disk that is opened, the one
    /// the disk was created for. `before_join` runs on the mounted disk first (to keep
    /// files there). Reports on the console; never a secret.
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &self,
        how: Admission,
        part: &StatePartition,
        key: &[u8],
        create: bool,
        integrity: Integrity,
        cluster: Option<ClusterId>,
        before_join: impl FnOnce() -> Result<(), Status>,
    ) -> Result<Joined, Status> {
        let started = Instant::now();
        let marker = cluster.map(|c| c.to_hex()).unwrap_or_default();
        let opened = state::open(part, key, create, integrity, &marker).map_err(|e| {
            match e.downcast_ref::<veil_disk::DiskError>() {
                Some(disk) => Status::failed_precondition(disk.to_string()),
                None => Status::internal(format!("opening the state disk: {e:#}")),
            }
        })?;
        let cluster_id = match cluster {
            Some(c) => c,
            None => ClusterId::from_hex(&opened.marker).ok_or_else(|| {
                Status::internal(format!(
                    "the state disk names no cluster ('{}' is not a cluster id)",
                    opened.marker
                ))
            })?,
        };
        before_join()?;
        let extend_started = Instant::now();
        self.lock_tpm()?
            .extend_pcr(CLUSTER_PCR, &cluster_id.0)
            .map_err(|e| Status::internal(format!("extending PCR {CLUSTER_PCR}: {e}")))?;
        let timings: Vec<String> = opened
            .timings
            .iter()
            .copied()
            .chain([
                ("pcr15", extend_started.elapsed()),
                ("total", started.elapsed()),
            ])
            .map(|(step, d)| format!("{step}={}ms", d.as_millis()))
            .collect();
        let integrity = if create {
            integrity
        } else {
            veil_disk::integrity(&part.device).unwrap_or_default()
        };
        println!(
            "veil-state {} partuuid={} device={} by={} integrity={} size={}MiB",
            if create { "created" } else { "unlocked" },
            part.partuuid,
            part.device.display(),
            how.name(),
            integrity.name(),
            state::size_bytes(&part.device).unwrap_or(0) >> 20
        );
        println!("veil-state-marker {}", opened.marker);
        println!("veil-cluster {cluster_id}");
        println!("veil-state-timing {}", timings.join(" "));
        tracing::info!(how = how.name(), cluster = %cluster_id, "node joined its cluster");
        Ok(Joined {
            cluster_id,
            partuuid: part.partuuid.clone(),
            created: create,
        })
    }
}

/// Starts the join service if this node holds what it needs (Init put it on the
/// state disk). Asynchronous: the unit's own start-up is its business.
pub fn start_join_service() {
    if !Path::new(paths::CLUSTER_DIR)
        .join(paths::MASTER_SECRET)
        .exists()
    {
        return;
    }
    match std::process::Command::new("systemctl")
        .args(["start", "--no-block", "veil-joinservice.service"])
        .status()
    {
        Ok(s) if s.success() => tracing::info!("join service started"),
        Ok(s) => tracing::error!("starting the join service failed: systemctl {s}"),
        Err(e) => tracing::error!("starting the join service failed: running systemctl: {e}"),
    }
}

pub struct BootstrapService {
    node: Node,
}

impl BootstrapService {
    pub fn new(node: Node) -> Self {
        BootstrapService { node }
    }

    async fn handle(
        &self,
        how: Admission,
        mut secret: Vec<u8>,
        mut salt: Vec<u8>,
        init: Option<InitSettings>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        let master = MasterSecret::from_parts(&secret, &salt);
        secret.zeroize();
        salt.zeroize();
        let master = master.map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(InitSettings {
            reference, policy, ..
        }) = &init
        {
            ReferenceMeasurements::from_json(reference).map_err(|e| {
                Status::invalid_argument(format!(
                    "the Init request's reference measurements do not parse: {e}"
                ))
            })?;
            if let Some(policy) = policy {
                PlatformPolicy::from_json("the Init request's platform policy", policy)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
            }
        }
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || provision(how, &master, init, &node))
            .await
            .map_err(|e| Status::internal(format!("{} task failed: {e}", how.name())))?
            .map(Response::new)
    }
}

/// What Init brings besides the secret.
struct InitSettings {
    reference: String,
    /// None: joiners show TPM quotes only.
    policy: Option<String>,
    settings: paths::ClusterSettings,
}

fn provision(
    how: Admission,
    master: &MasterSecret,
    init: Option<InitSettings>,
    node: &Node,
) -> Result<BootstrapResponse, Status> {
    let _one_at_a_time = node.lock()?;
    node.check_unjoined(how)?;
    let (part, contents) = node.locate()?;
    let create = match (how, contents) {
        (Admission::Init, veil_disk::Contents::Blank) => true,
        (Admission::Recover, veil_disk::Contents::Luks2 { .. }) => false,
        (Admission::Init, veil_disk::Contents::Luks2 { .. }) => {
            return Err(Status::failed_precondition(format!(
                "the state disk {} already holds a volume: this node was initialized before \
                 (use veil recover); Init refused",
                part.device.display()
            )));
        }
        (_, veil_disk::Contents::Blank) => {
            return Err(Status::failed_precondition(format!(
                "the state disk {} is blank: there is nothing to recover (use veil init)",
                part.device.display()
            )));
        }
        (_, veil_disk::Contents::Luks2 { .. }) => {
            return Err(Status::internal(format!(
                "{} is not served here",
                how.name()
            )));
        }
    };
    let key = master
        .disk_key(&part.partuuid)
        .map_err(|e| Status::internal(e.to_string()))?;
    // Init keeps what the join service needs on the (encrypted) state disk.
    let keep = || {
        let Some(InitSettings {
            reference,
            policy,
            settings,
        }) = &init
        else {
            return Ok(());
        };
        let dir = Path::new(paths::CLUSTER_DIR);
        master
            .write_file(&dir.join(paths::MASTER_SECRET))
            .map_err(|e| Status::internal(format!("keeping the master secret: {e}")))?;
        state::write_synced(&dir.join(paths::SETTINGS), settings.to_json().as_bytes())
            .map_err(|e| Status::internal(format!("keeping the cluster settings: {e:#}")))?;
        if let Some(policy) = policy {
            state::write_synced(&dir.join(paths::PLATFORM_POLICY), policy.as_bytes())
                .map_err(|e| Status::internal(format!("keeping the platform policy: {e:#}")))?;
        }
        state::write_synced(&dir.join(paths::REFERENCE), reference.as_bytes())
            .map_err(|e| Status::internal(format!("keeping the reference measurements: {e:#}")))
    };
    let integrity = match &init {
        Some(i) if i.settings.state_disk_integrity => Integrity::HmacSha256,
        _ => Integrity::None,
    };
    let joined = node.admit(
        how,
        &part,
        key.as_ref(),
        create,
        integrity,
        Some(master.cluster_id()),
        keep,
    )?;
    start_join_service();
    Ok(BootstrapResponse {
        cluster_id: joined.cluster_id.0.to_vec(),
        state_partition_uuid: joined.partuuid,
        state_disk_created: joined.created,
    })
}

#[tonic::async_trait]
impl Bootstrap for BootstrapService {
    async fn init(
        &self,
        request: Request<InitRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        let r = request.into_inner();
        if r.reference_measurements.is_empty() {
            return Err(Status::invalid_argument(
                "the Init request carries no reference measurements: the node could not \
                 check the nodes that join it",
            ));
        }
        let init = InitSettings {
            reference: r.reference_measurements,
            policy: Some(r.platform_policy).filter(|p| !p.is_empty()),
            settings: paths::ClusterSettings {
                state_disk_integrity: r.state_disk_integrity,
            },
        };
        self.handle(Admission::Init, r.master_secret, r.salt, Some(init))
            .await
    }

    async fn recover(
        &self,
        request: Request<RecoverRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        let r = request.into_inner();
        self.handle(Admission::Recover, r.master_secret, r.salt, None)
            .await
    }
}

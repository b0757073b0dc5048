//! The Bootstrap service (veil-protocol's `proto/bootstrap.proto`), over aTLS on the
//! agent port: `veil init` makes this node a cluster's first node, `veil recover`
//! brings an initialized node's state disk back after a full restart.
//!
//! Either way the node derives its disk key from the master secret it is given, opens
//! (or creates) its state disk, and extends PCR 15 with the cluster id. A node whose
//! PCR 15 is set has joined a cluster for this boot and refuses both; a state disk is
//! formatted only by Init and only when blank; a wrong secret opens nothing and
//! changes nothing.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use veil_keys::MasterSecret;
use veil_protocol::pb::bootstrap::bootstrap_server::Bootstrap;
use veil_protocol::pb::bootstrap::{BootstrapResponse, InitRequest, RecoverRequest};
use zeroize::Zeroize;

use crate::attestation::SharedTpm;
use crate::state;

/// PCR that holds the cluster id.
pub const CLUSTER_PCR: u32 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Init,
    Recover,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Init => "Init",
            Mode::Recover => "Recover",
        }
    }
}

pub struct BootstrapService {
    tpm: SharedTpm,
    /// `major:minor` of the root device (to find the disk for the state partition).
    root_dev: String,
    /// One Init/Recover at a time: the second waits, then sees PCR 15 set.
    busy: Arc<std::sync::Mutex<()>>,
}

impl BootstrapService {
    pub fn new(tpm: SharedTpm, root_dev: String) -> Self {
        BootstrapService {
            tpm,
            root_dev,
            busy: Arc::default(),
        }
    }

    async fn handle(
        &self,
        mode: Mode,
        mut secret: Vec<u8>,
        mut salt: Vec<u8>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        let master = MasterSecret::from_parts(&secret, &salt);
        secret.zeroize();
        salt.zeroize();
        let master = master.map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (tpm, root_dev, busy) = (self.tpm.clone(), self.root_dev.clone(), self.busy.clone());
        tokio::task::spawn_blocking(move || provision(mode, &master, &tpm, &root_dev, &busy))
            .await
            .map_err(|e| Status::internal(format!("{} task failed: {e}", mode.name())))?
            .map(Response::new)
    }
}

fn provision(
    mode: Mode,
    master: &MasterSecret,
    tpm: &SharedTpm,
    root_dev: &str,
    busy: &std::sync::Mutex<()>,
) -> Result<BootstrapResponse, Status> {
    let _one_at_a_time = busy
        .lock()
        .map_err(|_| Status::internal("bootstrap lock poisoned"))?;
    let lock_tpm = || {
        tpm.0
            .lock()
            .map_err(|_| Status::internal("TPM lock poisoned"))
    };
    let pcr15 = lock_tpm()?
        .read_pcrs(&[CLUSTER_PCR])
        .map_err(|e| Status::internal(format!("reading PCR {CLUSTER_PCR}: {e}")))?;
    if let Some(value) = pcr15.get(&CLUSTER_PCR).filter(|v| **v != [0; 32]) {
        return Err(Status::failed_precondition(format!(
            "this node already belongs to a cluster (PCR {CLUSTER_PCR} is {}): {} refused",
            crate::hex_lower(value),
            mode.name()
        )));
    }

    let started = std::time::Instant::now();
    let part = state::find_or_create(root_dev)
        .map_err(|e| Status::internal(format!("finding the state disk: {e:#}")))?;
    let found_in = started.elapsed();
    let contents =
        veil_disk::inspect(&part.device).map_err(|e| Status::failed_precondition(e.to_string()))?;
    let create = match (mode, contents) {
        (Mode::Init, veil_disk::Contents::Blank) => true,
        (Mode::Recover, veil_disk::Contents::Luks2 { .. }) => false,
        (Mode::Init, veil_disk::Contents::Luks2 { .. }) => {
            return Err(Status::failed_precondition(format!(
                "the state disk {} already holds a volume: this node was initialized before \
                 (use veil recover); Init refused",
                part.device.display()
            )));
        }
        (Mode::Recover, veil_disk::Contents::Blank) => {
            return Err(Status::failed_precondition(format!(
                "the state disk {} is blank: there is nothing to recover (use veil init)",
                part.device.display()
            )));
        }
    };
    let cluster_id = master.cluster_id();
    let key = master
        .disk_key(&part.partuuid)
        .map_err(|e| Status::internal(e.to_string()))?;
    let opened =
        state::open(&part, key.as_ref(), create, &cluster_id.to_hex()).map_err(|e| {
            match e.downcast_ref::<veil_disk::DiskError>() {
                Some(disk) => Status::failed_precondition(disk.to_string()),
                None => Status::internal(format!("opening the state disk: {e:#}")),
            }
        })?;
    let extend_started = std::time::Instant::now();
    lock_tpm()?
        .extend_pcr(CLUSTER_PCR, &cluster_id.0)
        .map_err(|e| Status::internal(format!("extending PCR {CLUSTER_PCR}: {e}")))?;
    let timings: Vec<String> = [("find-or-create", found_in)]
        .into_iter()
        .chain(opened.timings.iter().copied())
        .chain([
            ("pcr15", extend_started.elapsed()),
            ("total", started.elapsed()),
        ])
        .map(|(step, d)| format!("{step}={}ms", d.as_millis()))
        .collect();

    // The boot report (console): what happened, never a secret.
    println!(
        "veil-state {} partuuid={} device={}",
        if create { "created" } else { "unlocked" },
        part.partuuid,
        part.device.display()
    );
    println!("veil-state-marker {}", opened.marker);
    println!("veil-cluster {cluster_id}");
    println!("veil-state-timing {}", timings.join(" "));
    tracing::info!(mode = mode.name(), cluster = %cluster_id, "node bootstrapped");
    Ok(BootstrapResponse {
        cluster_id: cluster_id.0.to_vec(),
        state_partition_uuid: part.partuuid,
        state_disk_created: create,
    })
}

#[tonic::async_trait]
impl Bootstrap for BootstrapService {
    async fn init(
        &self,
        request: Request<InitRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        let r = request.into_inner();
        self.handle(Mode::Init, r.master_secret, r.salt).await
    }

    async fn recover(
        &self,
        request: Request<RecoverRequest>,
    ) -> Result<Response<BootstrapResponse>, Status> {
        let r = request.into_inner();
        self.handle(Mode::Recover, r.master_secret, r.salt).await
    }
}

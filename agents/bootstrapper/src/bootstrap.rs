//! The Bootstrap service (veil-protocol's `proto/bootstrap.proto`), over aTLS on the
//! agent port: `veil init` makes this node a cluster's first node, `veil recover`
//! brings an initialized node's state disk back after a full restart.
//!
//! Either way the node derives its disk key from the master secret it is given, opens
//! (or creates) its state disk, and extends PCR 15 with the cluster id; then it brings
//! up Kubernetes (crate::kube): `kubeadm init` on Init, kubelet from the disk on
//! Recover. Both stream their stages to the caller and end with the result (and, if
//! asked, the cluster administrator's kubeconfig).
//!
//! A node whose PCR 15 holds another cluster's id refuses both; one whose PCR 15 holds
//! this secret's cluster id (it was admitted in this boot) refuses Init, and on
//! Recover only retries Kubernetes if that failed. A state disk is formatted only by
//! Init and only when blank; a wrong secret opens nothing and changes nothing.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use measured_boot::reference::ReferenceMeasurements;
use tonic::{Request, Response, Status};
use veil_attest::PlatformPolicy;
use veil_attest::tpm::TpmAttester;
use veil_disk::Integrity;
use veil_keys::{ClusterId, InitSecret, MasterSecret};
use veil_protocol::launch::{FW_CFG_INIT_SECRET_HASH, LaunchConfig};
use veil_protocol::paths;
use veil_protocol::paths::NodeRecord;
use veil_protocol::pb::bootstrap::bootstrap_server::Bootstrap;
use veil_protocol::pb::bootstrap::progress::Event;
use veil_protocol::pb::bootstrap::{BootstrapResponse, InitRequest, Progress, RecoverRequest};
use zeroize::Zeroize;

use crate::attestation::SharedTpm;
use crate::kube::{KubeStatus, SharedStatus, Stage, Start};
use crate::state::{self, StatePartition};

/// PCR that holds the cluster id.
pub const CLUSTER_PCR: u32 = 15;
/// How long Kubernetes waits for `wg0` (on a control-plane node, its join service
/// writes the mesh file first).
const MESH_WAIT: std::time::Duration = std::time::Duration::from_secs(180);

/// What Init, Recover and the join loop share: the TPM, where the state disk lives,
/// and one lock so that only one of them brings the node into a cluster.
#[derive(Clone)]
pub struct Node {
    tpm: SharedTpm,
    /// `major:minor` of the root device (to find the disk for the state partition).
    root_dev: String,
    /// One Init/Recover/Join at a time: the second waits, then sees PCR 15 set.
    busy: Arc<Mutex<()>>,
    /// Where fw_cfg and sysfs are (`/` but in tests).
    root: PathBuf,
    /// Whether Kubernetes runs here (a real node, not a test of the service).
    kubernetes: bool,
    /// The node segment (QEMU's), if the node knows it: part of the underlay that
    /// the mesh's rules keep to WireGuard and aTLS.
    segment: Option<ipnet::Ipv4Net>,
    /// Kubernetes in this boot.
    kube: SharedStatus,
    /// What the node was launched with (measured into PCR 14 before serving).
    launch: LaunchConfig,
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
            root: PathBuf::from("/"),
            kubernetes: false,
            segment: None,
            kube: Arc::new(Mutex::new(KubeStatus::Down)),
            launch: LaunchConfig::default(),
        }
    }

    /// The launch configuration the node measured (without one, Init is refused).
    pub fn with_launch(mut self, launch: LaunchConfig) -> Self {
        self.launch = launch;
        self
    }

    pub fn launch(&self) -> &LaunchConfig {
        &self.launch
    }

    /// Runs Kubernetes once admitted; `segment` is the node segment, if known.
    pub fn with_kubernetes(mut self, root: PathBuf, segment: Option<ipnet::Ipv4Net>) -> Self {
        self.root = root;
        self.kubernetes = true;
        self.segment = segment;
        self
    }

    pub fn segment(&self) -> Option<ipnet::Ipv4Net> {
        self.segment
    }

    pub fn kube_status(&self) -> KubeStatus {
        self.kube
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| KubeStatus::Failed("status lock poisoned".into()))
    }

    fn set_kube_status(&self, status: KubeStatus) {
        if let Ok(mut s) = self.kube.lock() {
            *s = status;
        }
    }

    /// Brings Kubernetes up (see crate::kube) and starts the pod network; `record`
    /// is the node's, on its open state disk. Reports the status on the console.
    /// Returns once kubeadm has finished and the node has its pod CIDR.
    pub fn start_kubernetes(
        &self,
        record: &mut NodeRecord,
        start: Start<'_>,
        stage: Stage,
    ) -> Result<(), Status> {
        if !self.kubernetes {
            return Err(Status::failed_precondition(
                "Kubernetes does not run here (not a node)",
            ));
        }
        // Kubernetes between nodes rides the mesh: kubelet's node IP, the API
        // server's advertise address and etcd's peer address are the mesh address.
        stage("waiting for wg0 to hold this node's mesh address".into());
        let ip = crate::mesh::wait_address(Path::new(paths::CLUSTER_DIR), MESH_WAIT)
            .map_err(|e| Status::unavailable(format!("the node's mesh address: {e:#}")))?;
        self.set_kube_status(KubeStatus::Starting);
        let started = Instant::now();
        let fail = |e: anyhow::Error| {
            let text = format!("{e:#}");
            println!("veil-kube-failed {}", text.replace('\n', " | "));
            crate::kube::report_logs();
            self.set_kube_status(KubeStatus::Failed(text.clone()));
            Status::internal(format!("bringing up Kubernetes failed: {text}"))
        };
        crate::kube::bring_up(record, ip, start, stage).map_err(fail)?;
        let name = veil_kube::NodeName::new(&record.name).map_err(|e| fail(e.into()))?;
        stage("waiting for the node's slice of the pod network".into());
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = tokio::runtime::Handle::current();
        handle.spawn(crate::kube::pod_network(name, move |r| {
            let _ = tx.send(r);
        }));
        let cidr = rx
            .recv()
            .map_err(|_| fail(anyhow::anyhow!("the pod network task ended")))?
            .map_err(fail)?;
        stage(format!("pod network {cidr} configured"));
        self.set_kube_status(KubeStatus::Up);
        println!(
            "veil-kube-ready name={} role={} seconds={}",
            record.name,
            record.role,
            started.elapsed().as_secs()
        );
        Ok(())
    }

    pub fn tpm(&self) -> &SharedTpm {
        &self.tpm
    }

    pub fn root(&self) -> &Path {
        &self.root
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
        integrity: Option<Integrity>,
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
        println!(
            "veil-state {} partuuid={} device={} by={} integrity={} size={}MiB",
            if create { "created" } else { "unlocked" },
            part.partuuid,
            part.device.display(),
            how.name(),
            opened.integrity.name(),
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

/// What Init and Recover answer with: stages, then the result.
pub type ProgressStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<Progress, Status>> + Send + 'static>>;

impl BootstrapService {
    pub fn new(node: Node) -> Self {
        BootstrapService { node }
    }

    fn handle(
        &self,
        how: Admission,
        mut secret: Vec<u8>,
        mut salt: Vec<u8>,
        init: Option<InitSettings>,
        want_kubeconfig: bool,
    ) -> Result<Response<ProgressStream>, Status> {
        let master = MasterSecret::from_parts(&secret, &salt);
        secret.zeroize();
        salt.zeroize();
        let master = master.map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(InitSettings {
            reference,
            policy,
            settings,
        }) = &init
        {
            let parsed = ReferenceMeasurements::from_json(reference).map_err(|e| {
                Status::invalid_argument(format!(
                    "the Init request's reference measurements do not parse: {e}"
                ))
            })?;
            let unenforced = parsed.unenforced_boot_chain();
            if !unenforced.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "the Init request's reference measurements do not enforce PCR {}: the \
                     join service would admit nodes running any kernel or command line",
                    unenforced
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if let Some(policy) = policy {
                PlatformPolicy::from_json("the Init request's platform policy", policy)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
            }
            check_kubernetes_settings(&settings.kubernetes)?;
            crate::mesh::plan(settings).map_err(|e| {
                Status::invalid_argument(format!("the Init request's mesh subnet: {e:#}"))
            })?;
        }
        let node = self.node.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::task::spawn_blocking(move || {
            let stage = |text: String| {
                println!("veil-kube-stage {text}");
                let _ = tx.blocking_send(Ok(Progress {
                    event: Some(Event::Stage(text)),
                }));
            };
            let result = provision(how, &master, init, &node, want_kubeconfig, &stage);
            let _ = tx.blocking_send(result.map(|done| Progress {
                event: Some(Event::Done(done)),
            }));
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// The Kubernetes settings of an Init, checked before anything is touched.
fn check_kubernetes_settings(k: &paths::KubernetesSettings) -> Result<(), Status> {
    let bad = |e: String| {
        Status::invalid_argument(format!("the Init request's Kubernetes settings: {e}"))
    };
    veil_kube::Network::from_settings(&k.pod_subnet, &k.service_subnet)
        .map_err(|e| bad(e.to_string()))?;
    for san in &k.api_server_cert_sans {
        veil_kube::check_san(san).map_err(|e| bad(e.to_string()))?;
    }
    for (host, pem) in &k.registry_cas {
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(bad(format!(
                "the CA for registry '{host}' is not a PEM certificate"
            )));
        }
    }
    Ok(())
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
    want_kubeconfig: bool,
    stage: Stage,
) -> Result<BootstrapResponse, Status> {
    let _one_at_a_time = node.lock()?;
    let pcr = node.cluster_pcr()?;
    // A node admitted in this boot takes Recover (with its own cluster's secret) only
    // to retry Kubernetes; nothing about its disk changes.
    let already = how == Admission::Recover && pcr == master.cluster_id().member_pcr();
    let (partuuid, created) = if already {
        match node.kube_status() {
            KubeStatus::Starting => {
                return Err(Status::unavailable(
                    "Kubernetes is coming up on this node: wait for it",
                ));
            }
            status => tracing::info!(?status, "Recover of a node admitted in this boot"),
        }
        (String::new(), false)
    } else {
        node.check_unjoined(how)?;
        let joined = unlock(how, master, init.as_ref(), node)?;
        (joined.partuuid, joined.created)
    };
    if !already {
        stage(format!(
            "state disk {} ({})",
            if created { "created" } else { "unlocked" },
            how.name()
        ));
    }
    let mut record =
        match crate::kube::read_record().map_err(|e| Status::internal(format!("{e:#}")))? {
            Some(r) => r,
            None if how == Admission::Init => NodeRecord {
                name: crate::kube::wanted_name(&node.root).to_string(),
                role: NodeRecord::CONTROL_PLANE.into(),
                kubernetes_joined: false,
                pod_subnet: String::new(),
                service_subnet: String::new(),
                partuuid: partuuid.clone(),
            },
            None => {
                return Err(Status::failed_precondition(
                    "the state disk holds no node record: this node was never a Kubernetes node",
                ));
            }
        };
    if how == Admission::Init {
        crate::kube::write_record(&record)
            .map_err(|e| Status::internal(format!("keeping the node record: {e:#}")))?;
    }
    // Joiners may come now (the join service reads the record first: this node's
    // name and partition are not theirs to take); it tells them to retry until the
    // control plane answers.
    start_join_service();
    // Its join service writes the mesh file (the roster without this node).
    crate::mesh::start(Path::new(paths::CLUSTER_DIR), node.segment());
    if node.kube_status() != KubeStatus::Up {
        let settings = read_settings()?;
        let start = if record.is_control_plane() {
            Start::Init(&settings)
        } else {
            Start::Restart
        };
        node.start_kubernetes(&mut record, start, stage)?;
    } else {
        stage("Kubernetes is up already".into());
    }
    let admin_kubeconfig = if want_kubeconfig {
        std::fs::read(veil_kube::ADMIN_KUBECONFIG).map_err(|e| {
            Status::failed_precondition(format!(
                "no admin kubeconfig to send ({}: {e}); a worker has none",
                veil_kube::ADMIN_KUBECONFIG
            ))
        })?
    } else {
        Vec::new()
    };
    let versions = veil_kube::Versions::read(Path::new(veil_kube::VERSIONS_FILE))
        .map(|v| v.kubernetes)
        .unwrap_or_default();
    Ok(BootstrapResponse {
        cluster_id: master.cluster_id().0.to_vec(),
        state_partition_uuid: partuuid,
        state_disk_created: created,
        node_name: record.name,
        kubernetes_version: versions,
        admin_kubeconfig,
    })
}

/// The cluster's settings from the state disk (Init kept them there).
fn read_settings() -> Result<paths::ClusterSettings, Status> {
    let path = Path::new(paths::CLUSTER_DIR).join(paths::SETTINGS);
    match std::fs::read_to_string(&path) {
        Ok(text) => paths::ClusterSettings::from_json(&text)
            .map_err(|e| Status::internal(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(Status::internal(format!("reading {}: {e}", path.display()))),
    }
}

/// Opens (Recover) or creates (Init) the state disk and extends PCR 15.
fn unlock(
    how: Admission,
    master: &MasterSecret,
    init: Option<&InitSettings>,
    node: &Node,
) -> Result<Joined, Status> {
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
        }) = init
        else {
            return Ok(());
        };
        let dir = Path::new(paths::CLUSTER_DIR);
        master
            .write_file(&dir.join(paths::MASTER_SECRET))
            .map_err(|e| Status::internal(format!("keeping the master secret: {e}")))?;
        state::write_synced(&dir.join(paths::SETTINGS), settings.to_json().as_bytes())
            .map_err(|e| Status::internal(format!("keeping the cluster settings: {e:#}")))?;
        // Its own key on the mesh: the join service puts it in the roster.
        state::write_synced(
            &dir.join(paths::WIREGUARD_KEY),
            veil_mesh::key::PrivateKey::generate()
                .to_base64()
                .as_bytes(),
        )
        .map_err(|e| Status::internal(format!("keeping the WireGuard key: {e:#}")))?;
        if let Some(policy) = policy {
            state::write_synced(&dir.join(paths::PLATFORM_POLICY), policy.as_bytes())
                .map_err(|e| Status::internal(format!("keeping the platform policy: {e:#}")))?;
        }
        state::write_synced(&dir.join(paths::REFERENCE), reference.as_bytes())
            .map_err(|e| Status::internal(format!("keeping the reference measurements: {e:#}")))
    };
    // A new disk takes the cluster's setting; an existing one's authenticated header
    // says (Recover knows the cluster's settings only once the disk is open).
    let integrity = init.map(|i| {
        if i.settings.state_disk_integrity {
            Integrity::HmacSha256
        } else {
            Integrity::None
        }
    });
    node.admit(
        how,
        &part,
        key.as_ref(),
        create,
        integrity,
        Some(master.cluster_id()),
        keep,
    )
}

/// Init is the operator's: the caller must send the init secret whose hash the node
/// was launched with (and measured). Checked before anything else.
fn authorize_init(
    node: &Node,
    secret: Result<InitSecret, veil_keys::KeyError>,
) -> Result<(), Status> {
    let Some(expected) = node.launch.init_secret_hash else {
        return Err(Status::permission_denied(format!(
            "this node was launched without an init secret hash ({}): it takes no Init, \
             only joins a cluster",
            FW_CFG_INIT_SECRET_HASH
                .rsplit_once("/by_name/")
                .map_or(FW_CFG_INIT_SECRET_HASH, |(_, p)| p)
                .trim_end_matches("/raw")
        )));
    };
    let secret = secret
        .map_err(|e| Status::permission_denied(format!("the Init request's init secret: {e}")))?;
    if !secret.matches(&expected) {
        tracing::warn!("refused an Init with the wrong init secret");
        return Err(Status::permission_denied(
            "the init secret is not the one this node was launched with: Init refused",
        ));
    }
    Ok(())
}

fn kubernetes_settings(
    k: Option<veil_protocol::pb::bootstrap::KubernetesSettings>,
) -> paths::KubernetesSettings {
    let k = k.unwrap_or_default();
    paths::KubernetesSettings {
        pod_subnet: k.pod_subnet,
        service_subnet: k.service_subnet,
        api_server_cert_sans: k.api_server_cert_sans,
        registry_cas: k.registry_cas.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl Bootstrap for BootstrapService {
    type InitStream = ProgressStream;
    type RecoverStream = ProgressStream;

    async fn init(
        &self,
        request: Request<InitRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let mut r = request.into_inner();
        let secret = InitSecret::from_bytes(&r.init_secret);
        r.init_secret.zeroize();
        authorize_init(&self.node, secret)?;
        if r.reference_measurements.is_empty() {
            return Err(Status::invalid_argument(
                "the Init request carries no reference measurements: the node could not \
                 check the nodes that join it",
            ));
        }
        let init = InitSettings {
            reference: std::mem::take(&mut r.reference_measurements),
            policy: Some(std::mem::take(&mut r.platform_policy)).filter(|p| !p.is_empty()),
            settings: paths::ClusterSettings {
                state_disk_integrity: r.state_disk_integrity,
                kubernetes: kubernetes_settings(r.kubernetes.take()),
                mesh_subnet: std::mem::take(&mut r.mesh_subnet),
            },
        };
        self.handle(
            Admission::Init,
            std::mem::take(&mut r.master_secret),
            std::mem::take(&mut r.salt),
            Some(init),
            r.admin_kubeconfig,
        )
    }

    async fn recover(
        &self,
        request: Request<RecoverRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let mut r = request.into_inner();
        self.handle(
            Admission::Recover,
            std::mem::take(&mut r.master_secret),
            std::mem::take(&mut r.salt),
            None,
            r.admin_kubeconfig,
        )
    }
}

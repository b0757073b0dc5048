//! The join port's gRPC services: JoinActivation (plain HTTP/2) and Join (mutual
//! aTLS; the handshake already refused joiners that did not attest).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tonic::{Request, Response, Status};
use veil_keys::MasterSecret;
use veil_mesh::address::MeshPlan;
use veil_mesh::wg::LISTEN_PORT;
use veil_protocol::pb::attestation::TpmIdentity;
use veil_protocol::pb::join::join_activation_server::JoinActivation;
use veil_protocol::pb::join::join_server::Join;
use veil_protocol::pb::join::mesh_server::Mesh;
use veil_protocol::pb::join::{
    ChallengeResponse, JoinRequest, JoinTicket, MeshConfig, MeshPeer, MeshRoster, ProveRequest,
    ProveResponse, RejoinRequest, RejoinTicket, RemoveRequest, RemoveResponse, Role, WatchRequest,
};
use veil_protocol::server::PeerInfo;

use crate::Cluster;
use crate::admission::{Admission, AdmissionError, Standing};
use crate::kubernetes::Kubernetes;
use crate::limit::PeerLimiter;
use crate::roster::{Member, Roster};

pub struct JoinActivationService {
    admission: Arc<Admission>,
    limiter: Arc<PeerLimiter>,
}

impl JoinActivationService {
    pub fn new(admission: Arc<Admission>, limiter: Arc<PeerLimiter>) -> Self {
        JoinActivationService { admission, limiter }
    }
}

fn refused(e: AdmissionError) -> Status {
    match e {
        AdmissionError::Busy(_) => Status::unavailable(e.to_string()),
        AdmissionError::NoActivation(_) => Status::failed_precondition(e.to_string()),
        _ => Status::permission_denied(e.to_string()),
    }
}

#[tonic::async_trait]
impl JoinActivation for JoinActivationService {
    async fn challenge(
        &self,
        request: Request<TpmIdentity>,
    ) -> Result<Response<ChallengeResponse>, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        self.limiter.admit(peer, "Challenge")?;
        let identity = request.into_inner().into();
        let admission = self.admission.clone();
        // RSA-OAEP and the certificate chain: off the async threads.
        let (id, credential) = tokio::task::spawn_blocking(move || admission.challenge(&identity))
            .await
            .map_err(|e| Status::internal(format!("challenge task failed: {e}")))?
            .map_err(|e| {
                tracing::warn!(?peer, "refused a joiner's TPM identity: {e}");
                refused(e)
            })?;
        Ok(Response::new(ChallengeResponse {
            challenge_id: id.to_vec(),
            credential: Some(credential.into()),
        }))
    }

    async fn prove(
        &self,
        request: Request<ProveRequest>,
    ) -> Result<Response<ProveResponse>, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        let r = request.into_inner();
        self.admission
            .prove(&r.challenge_id, &r.secret)
            .map_err(|e| {
                tracing::warn!(?peer, "a joiner's activation failed: {e}");
                refused(e)
            })?;
        tracing::info!(?peer, "activated a joiner's AK");
        Ok(Response::new(ProveResponse {}))
    }
}

/// Roster watches at once: one per member, with room for reconnects.
const MAX_WATCHES: usize = 1024;

pub struct JoinService {
    master: MasterSecret,
    /// PCR 15 of a member admitted in this boot.
    member_pcr: [u8; 32],
    /// Roster watches open now (each holds a stream until its member goes).
    watches: Arc<tokio::sync::Semaphore>,
    mesh: MeshPlan,
    /// The cluster's pod network: every member's pod range is in it.
    pods: ipnet::Ipv4Net,
    own_mesh: Option<crate::OwnMesh>,
    state_disk_integrity: bool,
    limiter: Arc<PeerLimiter>,
    roster: Arc<Roster>,
    kubernetes: Arc<dyn Kubernetes>,
}

impl JoinService {
    pub fn new(
        cluster: Cluster,
        limiter: Arc<PeerLimiter>,
        kubernetes: Arc<dyn Kubernetes>,
    ) -> Self {
        JoinService {
            member_pcr: cluster.master.cluster_id().member_pcr(),
            watches: Arc::new(tokio::sync::Semaphore::new(MAX_WATCHES)),
            master: cluster.master,
            mesh: cluster.mesh,
            pods: cluster.pods,
            own_mesh: cluster.own_mesh,
            state_disk_integrity: cluster.settings.state_disk_integrity,
            limiter,
            roster: cluster.roster,
            kubernetes,
        }
    }

    /// The verified peer's address, the local address it reached, and its machine
    /// ([`veil_attest::Machine`]: its EK, or the AK its cloud's proof names), once its
    /// PCR 15 shows the standing `call` needs; a call without verified evidence never
    /// gets here (the handshake requires it), but a key is never released on an
    /// assumption.
    fn attested<T>(
        &self,
        request: &Request<T>,
        call: &str,
        needs: Standing,
    ) -> Result<(Option<IpAddr>, Option<SocketAddr>, String), Status> {
        let peer = request.extensions().get::<PeerInfo>();
        let verified = peer.and_then(|p| p.verified.as_ref());
        let Some(machine) = verified.and_then(|v| v.machine()) else {
            return Err(Status::unauthenticated(format!(
                "{call} needs a joiner verified by its TPM or its cloud's vTPM"
            )));
        };
        let standing = verified.and_then(|v| Standing::of(v, &self.member_pcr));
        match (needs, standing) {
            (need, Some(has)) if need == has => {}
            (Standing::Joiner, _) => {
                return Err(Status::failed_precondition(format!(
                    "{call} is for a node that has not joined a cluster in this boot (PCR 15 \
                     zero); this one has"
                )));
            }
            (Standing::Member, _) => {
                return Err(Status::permission_denied(format!(
                    "{call} is for members admitted in this boot (PCR 15 holds this cluster's \
                     id); this node is not one"
                )));
            }
        }
        let addr = peer.and_then(|p| p.addr).map(|a| a.ip());
        self.limiter.admit(addr, call)?;
        Ok((addr, peer.and_then(|p| p.local), machine.to_string()))
    }

    /// A member's place on the mesh and every member's entry. The control-plane node
    /// this service runs on has no recorded endpoint: its WireGuard is where the
    /// joiner reached this service (`local`).
    /// Gives each member the pod range its Node has (see
    /// [`crate::roster::Roster::set_pod_ranges`]); this node's mesh file follows.
    pub fn set_pod_ranges(&self, ranges: &std::collections::BTreeMap<String, ipnet::Ipv4Net>) {
        match self.roster.set_pod_ranges(ranges, self.pods) {
            Ok(done) => {
                for why in &done.refused {
                    tracing::error!("{why}");
                    println!("veil-joinservice-pod-range-refused {why}");
                }
                if done.changed {
                    let given: Vec<String> =
                        done.given.iter().map(|(n, c)| format!("{n}={c}")).collect();
                    tracing::info!(version = done.version, "pod ranges in the roster");
                    println!(
                        "veil-joinservice-pod-ranges version={} ranges={}",
                        done.version,
                        given.join(",")
                    );
                    self.publish_own_mesh();
                }
            }
            Err(e) => tracing::error!("keeping the pod ranges in the roster: {e}"),
        }
    }

    /// Writes this node's mesh file for the roster as it is (every member but this
    /// node); a failure is logged: the member is on record, and the next change
    /// writes the file again.
    pub fn publish_own_mesh(&self) {
        let Some(own) = &self.own_mesh else {
            return;
        };
        let state = veil_mesh::state::MeshState {
            plan: self.mesh,
            address: own.address,
            secret: veil_mesh::psk::MeshSecret::new(self.master.mesh_secret()),
            roster: self.roster.snapshot().view(None, Some(&own.key)),
        };
        match veil_protocol::paths::replace_file(&own.path, &state.to_json()) {
            Ok(()) => tracing::info!(
                version = state.roster.version,
                peers = state.roster.peers.len(),
                "this node's mesh file follows the roster"
            ),
            Err(e) => tracing::error!(
                "writing this node's mesh file {}: {e}; its wg0 lacks the roster's changes",
                own.path.display()
            ),
        }
    }

    fn mesh_config(
        &self,
        address: Option<std::net::Ipv4Addr>,
        local: Option<SocketAddr>,
    ) -> MeshConfig {
        MeshConfig {
            subnet: self.mesh.subnet().to_string(),
            address: address.map(|a| a.to_string()).unwrap_or_default(),
            mesh_secret: self.master.mesh_secret().to_vec(),
            roster: Some(self.mesh_roster(local)),
        }
    }

    /// Every member's entry as it goes on the wire (this node's endpoint: where the
    /// caller reached it, `local`).
    fn mesh_roster(&self, local: Option<SocketAddr>) -> MeshRoster {
        let view = self
            .roster
            .snapshot()
            .view(local.map(|l| SocketAddr::new(l.ip(), LISTEN_PORT)), None);
        MeshRoster {
            version: view.version,
            peers: view
                .peers
                .into_iter()
                .map(|p| MeshPeer {
                    public_key: p.public_key.as_bytes().to_vec(),
                    endpoint: p.endpoint.to_string(),
                    mesh_ip: p.mesh_ip.to_string(),
                    pod_cidr: p.pod_cidr.map(|c| c.to_string()).unwrap_or_default(),
                    name: p.name,
                })
                .collect(),
        }
    }

    fn disk_key(&self, uuid: &str) -> Result<Vec<u8>, Status> {
        let key = self
            .master
            .disk_key(uuid)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(key.to_vec())
    }
}

#[tonic::async_trait]
impl Join for JoinService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinTicket>, Status> {
        let (peer, local, tpm) = self.attested(&request, "Join", Standing::Joiner)?;
        let r = request.into_inner();
        let wireguard_key =
            veil_mesh::peers::WgKey::from_slice(&r.wireguard_public_key).map_err(|e| {
                Status::invalid_argument(format!("the Join's WireGuard public key: {e}"))
            })?;
        let Some(peer_ip) = peer else {
            return Err(Status::invalid_argument(
                "Join from a connection without a peer address: no WireGuard endpoint",
            ));
        };
        let role = match Role::try_from(r.role) {
            Ok(role @ (Role::Worker | Role::ControlPlane)) => role,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "role {} is neither worker nor control plane",
                    r.role
                )));
            }
        };
        let name = veil_kube::NodeName::new(&r.node_name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if role == Role::ControlPlane {
            return Err(Status::unimplemented(
                "joining as a control-plane node (HA) is not supported yet: join as a worker",
            ));
        }
        self.roster
            .check_partition(&r.state_partition_uuid, &tpm)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        let disk_key = self.disk_key(&r.state_partition_uuid)?;
        let taken = |e: crate::roster::RosterError| Status::already_exists(e.to_string());
        self.roster
            .check_name(name.as_str(), &r.state_partition_uuid)
            .map_err(taken)?;
        let known = self.roster.by_partuuid(&r.state_partition_uuid);
        if known.as_ref().map(|m| m.name.as_str()) != Some(name.as_str())
            && self.kubernetes.registered(name.as_str()).await?
        {
            return Err(Status::already_exists(format!(
                "a node named '{name}' is registered in Kubernetes already: ask for another name"
            )));
        }
        // The roster first: a token is made only for a member that is on record.
        let admitted = self
            .roster
            .admit(Member {
                name: name.to_string(),
                partuuid: r.state_partition_uuid.clone(),
                role: "worker".into(),
                wireguard_public_key: wireguard_key,
                tpm,
                mesh_ip: None,
                endpoint: Some(SocketAddr::new(peer_ip, LISTEN_PORT)),
                pod_cidr: None,
            })
            .map_err(|e| match e {
                crate::roster::RosterError::NameTaken { .. }
                | crate::roster::RosterError::KeyTaken { .. } => taken(e),
                crate::roster::RosterError::PartitionTaken { .. } => {
                    Status::permission_denied(e.to_string())
                }
                e => Status::internal(e.to_string()),
            })?;
        self.publish_own_mesh();
        let kubernetes = self.kubernetes.join(name.as_str()).await?;
        tracing::info!(
            ?peer,
            uuid = %r.state_partition_uuid,
            role = role.as_str_name(),
            node = %name,
            mesh_ip = ?admitted.mesh_ip,
            "admitted a new node"
        );
        Ok(Response::new(JoinTicket {
            disk_key,
            cluster_id: self.master.cluster_id().0.to_vec(),
            measurement_secret: self.master.measurement_secret().to_vec(),
            state_disk_integrity: self.state_disk_integrity,
            node_name: name.to_string(),
            kubernetes: Some(kubernetes),
            mesh: Some(self.mesh_config(admitted.mesh_ip, local)),
        }))
    }

    async fn rejoin(
        &self,
        request: Request<RejoinRequest>,
    ) -> Result<Response<RejoinTicket>, Status> {
        let (peer, local, tpm) = self.attested(&request, "Rejoin", Standing::Joiner)?;
        let uuid = request.into_inner().state_partition_uuid;
        // Only the member that joined with this disk, on its own TPM.
        let member = self.roster.rejoiner(&uuid, &tpm).map_err(|e| match e {
            crate::roster::RosterError::NotMember { .. } => Status::not_found(e.to_string()),
            e => Status::permission_denied(e.to_string()),
        })?;
        let disk_key = self.disk_key(&uuid)?;
        if let Some(ip) = peer {
            self.roster
                .moved(&uuid, SocketAddr::new(ip, LISTEN_PORT))
                .map_err(|e| Status::internal(e.to_string()))?;
            self.publish_own_mesh();
        }
        // A member that never became a Kubernetes node (its kubeadm join failed) gets
        // a new token; the others need none. While the control plane is down (a full
        // restart), the disk key alone: kubelet has its credentials on the disk.
        let mut kubernetes = None;
        if let Ok(false) = self.kubernetes.registered(&member.name).await {
            kubernetes = self.kubernetes.join(&member.name).await.ok();
        }
        tracing::info!(?peer, %uuid, token = kubernetes.is_some(), "admitted a rebooted node");
        Ok(Response::new(RejoinTicket {
            disk_key,
            kubernetes,
            state_disk_integrity: self.state_disk_integrity,
            mesh: Some(self.mesh_config(member.mesh_ip, local)),
        }))
    }
}

/// The roster for members (`Mesh.Watch`), beside Join on the aTLS port.
pub struct MeshService {
    join: Arc<JoinService>,
}

impl MeshService {
    pub fn new(join: Arc<JoinService>) -> Self {
        MeshService { join }
    }
}

type RosterStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<MeshRoster, Status>> + Send>>;

#[tonic::async_trait]
impl Mesh for MeshService {
    type WatchStream = RosterStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<RosterStream>, Status> {
        let join = self.join.clone();
        let (peer, local, tpm) = join.attested(&request, "Watch", Standing::Member)?;
        // PCR 15 says it was admitted in this boot; the roster must still have it.
        if !join.roster.has_member_tpm(&tpm) {
            return Err(Status::permission_denied(
                "this node's TPM is no member's: it was removed from the cluster",
            ));
        }
        let permit = join.watches.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!("{MAX_WATCHES} roster watches are open already"))
        })?;
        let mut have = request.into_inner().have_version;
        let mut changes = join.roster.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tracing::info!(?peer, have, "a member watches the roster");
        tokio::spawn(async move {
            let _permit = permit;
            loop {
                let roster = join.mesh_roster(local);
                if roster.version > have {
                    have = roster.version;
                    if tx.send(Ok(roster)).await.is_err() {
                        return;
                    }
                }
                // Ends when the member goes (its stream is dropped) or the service stops.
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        let join = &self.join;
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.addr)
            .map(|a| a.ip());
        join.limiter.admit(peer, "Remove")?;
        let mut r = request.into_inner();
        let authorized = join.master.admin_credential_matches(&r.admin_credential);
        zeroize::Zeroize::zeroize(&mut r.admin_credential);
        if !authorized {
            tracing::warn!(?peer, node = %r.node_name, "refused a Remove with the wrong admin credential");
            return Err(Status::permission_denied(
                "the admin credential is not this cluster's (derived from another master \
                 secret?): nothing was removed",
            ));
        }
        let gone = join.roster.remove(&r.node_name).map_err(|e| match e {
            crate::roster::RosterError::NoSuchMember { .. } => Status::not_found(e.to_string()),
            crate::roster::RosterError::OwnNode { .. } => {
                Status::failed_precondition(e.to_string())
            }
            e => Status::internal(e.to_string()),
        })?;
        join.publish_own_mesh();
        let deleted = match join.kubernetes.delete_node(&gone.name).await {
            Ok(deleted) => deleted,
            Err(e) => {
                tracing::warn!(node = %gone.name, "deleting the removed member's Node: {}", e.message());
                false
            }
        };
        let version = join.roster.snapshot().version;
        tracing::info!(?peer, node = %gone.name, uuid = %gone.partuuid, version, "removed a member from the cluster");
        println!(
            "veil-joinservice-removed node={} version={version}",
            gone.name
        );
        Ok(Response::new(RemoveResponse {
            roster_version: version,
            mesh_ip: gone.mesh_ip.map(|a| a.to_string()).unwrap_or_default(),
            kubernetes_node_deleted: deleted,
        }))
    }
}

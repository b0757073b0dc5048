//! Joining a cluster through a control-plane node's join service (`proto/join.proto`),
//! tried in a loop from boot while the agent port still serves Init and Recover: the
//! first to bring the node into a cluster wins, and PCR 15 tells the others.
//!
//! The join service's address is not trusted (QEMU's fw_cfg here, a cloud's instance
//! metadata elsewhere; neither is measured); the service at it is. Before the joiner
//! asks for anything it checks the service as strictly as the service checks it: the
//! quote comes from a TPM its TPM CA (in the image) certified; the service runs the
//! very image the joiner runs, booted the same way and fully booted (PCRs 4, 9, 11,
//! 12 and 13 equal its own: both are past systemd's "ready" phase, since the
//! bootstrapper starts after `systemd-pcrphase.service`); and it belongs to a cluster
//! (PCR 15 set) — to the cluster the node was launched to join, when its measured
//! launch configuration names one (PCR 15 equal to that id extended once). In a
//! confidential VM the service's quote must also carry a hardware report binding its AK
//! with this node's own launch measurement, vendor root and a TCB no older
//! (`veil_attest::peer`). The service has checked the joiner against the cluster's
//! reference measurements in the same handshake.
//!
//! On a cloud's CVM the node presents its cloud's evidence ([`JoinConfig::cloud_evidence`])
//! instead of the TPM quote: the cloud's own proof names the vTPM's AK, so the node
//! activates nothing, and the service knows it by that AK.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use tonic::Status;
use veil_atls::{EvidenceIssuer, VerifierValidator};
use veil_attest::tpm::{CredentialChallenge, EkTrust, TpmVerifier};
use veil_attest::{Platform, PlatformPolicy, PlatformVerifier, Verified};
use veil_keys::ClusterId;
use veil_protocol::activation::{activate_peer, with_tpm};
use veil_protocol::paths::NodeRecord;
use veil_protocol::pb::join::join_activation_client::JoinActivationClient;
use veil_protocol::pb::join::join_client::JoinClient;
use veil_protocol::pb::join::{JoinRequest, KubernetesJoin, ProveRequest, RejoinRequest, Role};
use veil_protocol::{MAX_MESSAGE, paths};
use zeroize::Zeroizing;

use crate::attestation::SharedTpm;
use crate::bootstrap::{Admission, CLUSTER_PCR, Node};
use crate::state;

/// Where QEMU puts the join service's address (`-fw_cfg name=opt/veil/join-endpoint,…`).
pub const FW_CFG_JOIN_ENDPOINT: &str =
    "sys/firmware/qemu_fw_cfg/by_name/opt/veil/join-endpoint/raw";
/// The node's role, if given the same way (`worker` unless it says `control-plane`).
pub const FW_CFG_ROLE: &str = "sys/firmware/qemu_fw_cfg/by_name/opt/veil/role/raw";

/// PCRs a join service must share with the joiner: the UKI (4), what its stub and
/// kernel loaded from it (9), its sections and boot phase (11), the stub's
/// credentials and configuration (12) and system extensions (13).
pub const SAME_AS_OURS: [u32; 5] = [4, 9, 11, 12, 13];
/// Pause between attempts.
pub const RETRY_AFTER: Duration = Duration::from_secs(3);
/// Longest the talking part of one attempt may take (activation both ways, the
/// handshake, the call); opening the disk afterwards (a whole-disk wipe with
/// dm-integrity) takes as long as it takes.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

pub struct JoinConfig {
    pub endpoint: String,
    pub trust: EkTrust,
    pub role: Role,
    /// The cluster the service must belong to, from the measured launch
    /// configuration (None: any cluster).
    pub cluster_id: Option<ClusterId>,
    /// In a confidential VM: the hardware evidence the service's quote must carry,
    /// made from this node's own report (`veil_attest::peer`). None on a node without
    /// SEV-SNP or TDX, which checks the service's TPM quote alone.
    pub service_hardware: Option<PlatformPolicy>,
    /// In a TD (outside a cloud): this node's own TDX report, for the platform whose
    /// Intel collateral it fetches to check the service's TD quote with.
    pub own_td: Option<veil_attest::Evidence>,
    /// On a cloud's CVM: the cloud's evidence (Azure's HCL report, GCE's certified
    /// AK; on AWS the TPM quote with the SEV-SNP report that binds its AK), presented
    /// instead of the TPM quote. Its own proof names the AK, so the node activates
    /// nothing, and it requires the service's evidence to be like it.
    pub cloud_evidence: Option<Arc<dyn EvidenceIssuer>>,
    /// Replaces the GCE vTPM verifier with Google's pinned root (None on a node: tests
    /// give one trusting a CA that plays Google).
    pub gcp: Option<veil_attest::gcp::GcpVerifier>,
}

impl JoinConfig {
    /// The join configuration under `root`, if the node was given a join endpoint;
    /// the cluster to join comes from `launch`, the launch configuration the node
    /// read once and measures (never read again from fw_cfg, which could differ).
    /// On a cloud the endpoint and role come from `cloud`, the launch settings in the
    /// instance's user data, instead of fw_cfg.
    pub fn discover(
        root: &Path,
        launch: &veil_protocol::launch::LaunchConfig,
        cloud: Option<&veil_protocol::launch::CloudLaunch>,
        platform: &Platform,
    ) -> Result<Option<JoinConfig>> {
        let (endpoint, role) = match cloud {
            Some(cloud) => {
                let Some(endpoint) = &cloud.join_endpoint else {
                    return Ok(None);
                };
                let role = match cloud.role.as_deref() {
                    Some("control-plane") => Role::ControlPlane,
                    _ => Role::Worker,
                };
                (endpoint.clone(), role)
            }
            None => {
                let Ok(raw) = std::fs::read(root.join(FW_CFG_JOIN_ENDPOINT)) else {
                    return Ok(None);
                };
                let endpoint = String::from_utf8(raw)
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty() && s.len() < 256 && !s.contains(char::is_whitespace))
                    .context("the join endpoint in fw_cfg is not a HOST:PORT")?;
                let role = match std::fs::read_to_string(root.join(FW_CFG_ROLE)) {
                    Ok(r) if r.trim() == "control-plane" => Role::ControlPlane,
                    Ok(r) if r.trim() == "worker" => Role::Worker,
                    Ok(r) => bail!(
                        "the role in fw_cfg is '{}', not worker or control-plane",
                        r.trim()
                    ),
                    Err(_) => Role::Worker,
                };
                (endpoint, role)
            }
        };
        let under_root = |p: &str| root.join(p.trim_start_matches('/'));
        let intermediate = under_root(paths::IMAGE_TPM_INTERMEDIATE);
        let trust = EkTrust::from_pem_files(
            &under_root(paths::IMAGE_TPM_CA),
            intermediate.exists().then_some(intermediate.as_path()),
        )
        .context("loading the image's TPM CA")?;
        let cluster_id = launch.cluster_id.map(ClusterId);
        let (service_hardware, own_td) = match service_hardware(root, platform)? {
            Some((policy, own)) => (Some(policy), own),
            None => (None, None),
        };
        Ok(Some(JoinConfig {
            endpoint,
            trust,
            role,
            cluster_id,
            service_hardware,
            own_td,
            cloud_evidence: None,
            gcp: None,
        }))
    }
}

/// What a confidential VM requires of its join service's hardware evidence: what its
/// own report shows (the kind, vendor root, launch measurement, TCB). A node on
/// SEV-SNP or TDX that cannot read its own report does not join at all. In a TD, with
/// its own report (for the platform whose collateral it fetches).
fn service_hardware(
    root: &Path,
    platform: &Platform,
) -> Result<Option<(PlatformPolicy, Option<veil_attest::Evidence>)>> {
    let Some(mut own) = veil_attest::HardwareAttester::for_platform(platform, root) else {
        return Ok(None);
    };
    // Any data will do: only the launch-time fields of this report are used.
    let report = own
        .report(&[0; 32], b"veil joiner: own launch measurement")
        .with_context(|| format!("reading this {} node's own report", platform.kind()))?;
    let policy = veil_attest::peer::policy_like_own(&report)
        .context("deriving what the join service's hardware evidence must show")?;
    tracing::info!(
        accepts = %policy.accepts(),
        "the join service must show hardware evidence like this node's"
    );
    let own_td = match report {
        veil_attest::cvm::HardwareEvidence::Tdx(td) => Some(veil_attest::Evidence::Tdx(td)),
        veil_attest::cvm::HardwareEvidence::SevSnp(_) => None,
    };
    Ok(Some((policy, own_td)))
}

/// What the join service gave.
pub struct Ticket {
    pub disk_key: Zeroizing<Vec<u8>>,
    /// Join only: Rejoin gives the disk key alone (the disk names its cluster).
    pub cluster_id: Option<ClusterId>,
    /// The cluster's integrity setting: how to format a new state disk (Join), what
    /// an existing one must have (Rejoin).
    pub integrity: veil_disk::Integrity,
    /// Join only: the name the cluster gave the node.
    pub node_name: Option<String>,
    /// What `kubeadm join` needs (Join; Rejoin only for a node that never finished it).
    pub kubernetes: Option<KubernetesJoin>,
    /// The node's place on the mesh and its peers.
    pub mesh: crate::mesh::MeshTicket,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

/// Tries to join until the node belongs to a cluster (by this loop or by Init/Recover),
/// then brings up Kubernetes.
pub async fn run(node: Node, config: JoinConfig) {
    println!(
        "veil-join trying endpoint={} role={}",
        config.endpoint,
        config.role.as_str_name()
    );
    for attempt in 1u64.. {
        match try_once(&node, &config).await {
            Ok(Some((how, cluster))) => {
                println!("veil-join ok by={} attempt={attempt}", how.name());
                // A member now: it follows the roster for the rest of this boot.
                let member = JoinConfig {
                    cluster_id: Some(cluster),
                    ..config
                };
                crate::mesh::follow_roster(node.tpm(), &member).await;
                return;
            }
            Ok(None) => {
                println!("veil-join stopped: the node joined a cluster another way");
                return;
            }
            Err(e) => {
                tracing::warn!(attempt, "joining through {} failed: {e:#}", config.endpoint);
                println!("veil-join-failed attempt={attempt} {e:#}");
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

fn status(e: Status) -> anyhow::Error {
    anyhow!("{}", e.message())
}

/// A refused call, with what lies under a bare "transport error": in TLS 1.3 the
/// service checks our evidence after our side of the handshake is done, so its
/// refusal arrives as an alert on the first call.
fn refused(call: &str, s: &Status) -> anyhow::Error {
    let mut text = s.message().to_owned();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    if text.contains("AccessDenied") {
        text.push_str(" (the service refused our evidence; its log says why)");
    } else if text.contains("connection closed") || text.contains("connection reset") {
        // The same refusal when the service's alert loses the race with its close.
        text.push_str(
            " (the service closed the connection on the first call: it refused our \
             evidence or failed; its log says why)",
        );
    }
    anyhow!("the join service refused {call}: {text}")
}

/// One attempt; `None` if the node had joined already.
async fn try_once(node: &Node, config: &JoinConfig) -> Result<Option<(Admission, ClusterId)>> {
    let n = node.clone();
    let located = tokio::task::spawn_blocking(move || {
        let _one = n.lock()?;
        if n.cluster_pcr()? != [0; 32] {
            return Ok(None);
        }
        n.locate().map(Some)
    })
    .await?
    .map_err(status)?;
    let Some((part, contents)) = located else {
        return Ok(None);
    };
    let how = match contents {
        veil_disk::Contents::Blank => Admission::Join,
        veil_disk::Contents::Luks2 { .. } => Admission::Rejoin,
    };
    let wireguard = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
    let name = crate::kube::wanted_name(node.root());
    let ticket = tokio::time::timeout(
        ATTEMPT_TIMEOUT,
        fetch_ticket(node.tpm(), config, how, &part.partuuid, &wireguard, &name),
    )
    .await
    .map_err(|_| {
        anyhow!(
            "no ticket from {} within {} s",
            config.endpoint,
            ATTEMPT_TIMEOUT.as_secs()
        )
    })??;

    let n = node.clone();
    tokio::task::spawn_blocking(move || {
        let _one = n.lock()?;
        if n.cluster_pcr()? != [0; 32] {
            return Ok(None);
        }
        let keep = || {
            let dir = Path::new(paths::CLUSTER_DIR);
            // A member's key is on its disk already; the roster must hold it.
            let keep_mesh = || {
                crate::mesh::keep(dir, &ticket.mesh)
                    .map(|_| ())
                    .map_err(|e| Status::internal(format!("keeping the mesh: {e:#}")))
            };
            if how != Admission::Join {
                return keep_mesh();
            }
            let key = Zeroizing::new(
                base64::engine::general_purpose::STANDARD.encode(wireguard.to_bytes()),
            );
            state::write_synced(&dir.join(paths::WIREGUARD_KEY), key.as_bytes())
                .map_err(|e| Status::internal(format!("keeping the WireGuard key: {e:#}")))?;
            keep_mesh()?;
            let record = NodeRecord {
                name: ticket.node_name.clone().unwrap_or_default(),
                role: NodeRecord::WORKER.into(),
                kubernetes_joined: false,
                pod_subnet: String::new(),
                service_subnet: String::new(),
                partuuid: part.partuuid.clone(),
            };
            crate::kube::write_record(&record)
                .map_err(|e| Status::internal(format!("keeping the node record: {e:#}")))
        };
        let joined = n.admit(
            how,
            &part,
            &ticket.disk_key,
            how == Admission::Join,
            Some(ticket.integrity),
            ticket.cluster_id,
            keep,
        )?;
        crate::mesh::start(Path::new(paths::CLUSTER_DIR), n.segment());
        let stage = |text: String| println!("veil-kube-stage {text}");
        let mut record = crate::kube::read_record()
            .map_err(|e| Status::internal(format!("{e:#}")))?
            .ok_or_else(|| Status::failed_precondition("the state disk holds no node record"))?;
        let start = match &ticket.kubernetes {
            Some(k) if !record.kubernetes_joined => crate::kube::Start::Join(k),
            _ => crate::kube::Start::Restart,
        };
        if let Err(e) = n.start_kubernetes(&mut record, start, &stage) {
            // The node is a member (its disk is open, PCR 15 set): it stays one, and
            // tries Kubernetes again after a reboot (Rejoin gives a new token to a
            // node that never finished kubeadm join).
            println!("veil-kube-failed {}", e.message());
        }
        Ok(Some((how, joined.cluster_id)))
    })
    .await?
    .map_err(status)
}

/// Activation both ways, then the mutual aTLS handshake and the service's check: a
/// channel for Join, Rejoin or (a member's) Watch.
pub async fn connect(tpm: &SharedTpm, config: &JoinConfig) -> Result<tonic::transport::Channel> {
    let ep = config.endpoint.as_str();
    let plain = veil_protocol::client::plain(ep).await?;

    // 1. The service's AK, activated by us; on a cloud, named by the cloud's proof in
    //    evidence like our own.
    let validator: Arc<dyn veil_atls::EvidenceValidator> = match &config.cloud_evidence {
        Some(own) => {
            let mut verifier = PlatformVerifier::new(
                TpmVerifier::new(config.trust.clone()),
                &service_policy_like(own.clone()).await?,
                "this node's policy for its join service (like its own cloud evidence)",
            )
            .context("the join service's cloud policy")?;
            if let Some(gcp) = &config.gcp {
                verifier = verifier.with_gcp(gcp.clone());
            }
            Arc::new(VerifierValidator(verifier))
        }
        None => {
            let mut verifier = TpmVerifier::new(config.trust.clone());
            verifier.add_trusted_ak(activate_peer(plain.clone(), ep, &verifier).await?);
            match &config.service_hardware {
                Some(policy) => {
                    let mut policy = policy.clone();
                    if let Some(own) = &config.own_td {
                        with_own_collateral(own, &mut policy).await?;
                    }
                    Arc::new(VerifierValidator(
                        PlatformVerifier::new(
                            verifier,
                            &policy,
                            "this node's policy for its join service",
                        )
                        .context("the join service's hardware policy")?,
                    ))
                }
                None => Arc::new(VerifierValidator(verifier)),
            }
        }
    };

    // 2. Our AK, activated by the service, unless our cloud's proof names it.
    let own: Arc<dyn EvidenceIssuer> = match &config.cloud_evidence {
        Some(cloud) => cloud.clone(),
        None => {
            activate_own(tpm, plain).await?;
            tpm.clone()
        }
    };

    // 3. Mutual aTLS: the service refuses the handshake unless we match its reference.
    let (channel, service) = veil_protocol::client::atls(ep, Some(own), validator)
        .await
        .with_context(|| format!("attesting to the join service at {ep}"))?;
    check_service(tpm, &service, config.cluster_id.as_ref()).await?;
    Ok(channel)
}

/// What the join service's evidence must show, from our own cloud evidence
/// (`veil_attest::peer::cloud_policy_like_own`): its kind, profile and launch
/// measurement. Any data will do for ours: only its launch-time fields are used. In a
/// TD (Azure's, GCE's), with Intel's collateral for this node's platform unless our
/// evidence brought its own: a service on a platform of another FMSPC is refused,
/// naming both (nodes are launched alike).
async fn service_policy_like(own: Arc<dyn EvidenceIssuer>) -> Result<PlatformPolicy> {
    let encoded = tokio::task::spawn_blocking(move || own.issue(&[0; 32]))
        .await
        .context("the task reading our own evidence")?
        .map_err(|e| anyhow!("our own cloud evidence: {e}"))?;
    let own = veil_attest::Evidence::decode(&encoded).context("our own cloud evidence")?;
    let mut policy = veil_attest::peer::cloud_policy_like_own(&own)
        .context("deriving what the join service's evidence must show")?;
    with_own_collateral(&own, &mut policy).await?;
    tracing::info!(
        accepts = %policy.accepts(),
        "the join service must show cloud evidence like this node's"
    );
    Ok(policy)
}

/// A TD quote is checked with Intel's collateral, which neither side's evidence need
/// carry: where `policy` checks TD quotes like `own`'s and holds none, it is fetched
/// from Intel's PCS for this node's own platform (Intel signs it; the verifier checks
/// it against the pinned root).
async fn with_own_collateral(
    own: &veil_attest::Evidence,
    policy: &mut PlatformPolicy,
) -> Result<()> {
    if policy.missing_tdx_collateral(own).is_none() {
        return Ok(());
    }
    veil_fetch::pcs::PcsClient::intel()
        .context("reaching Intel's PCS for the join service's TD quote")?
        .complete_policy(own, policy)
        .await
        .context(
            "Intel's collateral to check the join service's TD quote with (for this node's own platform)",
        )?;
    Ok(())
}

/// Credential activation of our TPM's AK at the service, over the plain channel.
async fn activate_own(tpm: &SharedTpm, plain: tonic::transport::Channel) -> Result<()> {
    let identity = with_tpm(tpm, |att| Ok(att.identity().clone()))
        .await
        .map_err(status)?;
    let mut activation = JoinActivationClient::new(plain).max_decoding_message_size(MAX_MESSAGE);
    let challenge = activation
        .challenge(veil_protocol::pb::attestation::TpmIdentity::from(identity))
        .await
        .map_err(|s| anyhow!("the join service refused our TPM identity: {}", s.message()))?
        .into_inner();
    let credential: CredentialChallenge = challenge
        .credential
        .context("the join service sent no credential")?
        .into();
    let secret = with_tpm(tpm, move |att| {
        att.activate(&credential)
            .map(|s| s.to_vec())
            .map_err(|e| format!("activating the join service's credential: {e}"))
    })
    .await
    .map_err(status)?;
    activation
        .prove(ProveRequest {
            challenge_id: challenge.challenge_id,
            secret,
        })
        .await
        .map_err(|s| anyhow!("the join service refused our activation: {}", s.message()))?;
    Ok(())
}

/// Activation both ways, the mutual aTLS handshake, the service's check, the call
/// (`how` is Join or Rejoin).
pub async fn fetch_ticket(
    tpm: &SharedTpm,
    config: &JoinConfig,
    how: Admission,
    partuuid: &str,
    wireguard: &x25519_dalek::StaticSecret,
    name: &veil_kube::NodeName,
) -> Result<Ticket> {
    let channel = connect(tpm, config).await?;
    let mut join = JoinClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
    match how {
        Admission::Join => {
            let t = join
                .join(JoinRequest {
                    state_partition_uuid: partuuid.into(),
                    wireguard_public_key: x25519_dalek::PublicKey::from(wireguard)
                        .as_bytes()
                        .to_vec(),
                    role: config.role.into(),
                    node_name: name.to_string(),
                })
                .await
                .map_err(|s| refused("Join", &s))?
                .into_inner();
            let cluster_id = ClusterId(
                t.cluster_id
                    .as_slice()
                    .try_into()
                    .context("the join ticket's cluster id is not 32 bytes")?,
            );
            let node_name = veil_kube::NodeName::new(&t.node_name)
                .map_err(|e| anyhow!("the join ticket's node name: {e}"))?;
            let mut t = t;
            let kubernetes = t
                .kubernetes
                .take()
                .context("the join ticket has nothing for kubeadm join")?;
            let mesh = crate::mesh::MeshTicket::parse(
                t.mesh
                    .take()
                    .context("the join ticket has no mesh configuration")?,
            )
            .context("the join ticket's mesh configuration")?;
            Ok(Ticket {
                disk_key: Zeroizing::new(std::mem::take(&mut t.disk_key)),
                cluster_id: Some(cluster_id),
                integrity: if t.state_disk_integrity {
                    veil_disk::Integrity::HmacSha256
                } else {
                    veil_disk::Integrity::None
                },
                node_name: Some(node_name.to_string()),
                kubernetes: Some(kubernetes),
                mesh,
            })
        }
        _ => {
            let mut t = join
                .rejoin(RejoinRequest {
                    state_partition_uuid: partuuid.into(),
                })
                .await
                .map_err(|s| refused("Rejoin", &s))?
                .into_inner();
            let mesh = crate::mesh::MeshTicket::parse(
                t.mesh
                    .take()
                    .context("the rejoin ticket has no mesh configuration")?,
            )
            .context("the rejoin ticket's mesh configuration")?;
            Ok(Ticket {
                disk_key: Zeroizing::new(std::mem::take(&mut t.disk_key)),
                cluster_id: None,
                integrity: if t.state_disk_integrity {
                    veil_disk::Integrity::HmacSha256
                } else {
                    veil_disk::Integrity::None
                },
                node_name: None,
                kubernetes: t.kubernetes.take(),
                mesh,
            })
        }
    }
}

/// The join service must run our image, booted as ours is, and belong to a cluster:
/// `cluster`, if the node was launched to join that one.
async fn check_service(
    tpm: &SharedTpm,
    service: &Verified,
    cluster: Option<&ClusterId>,
) -> Result<()> {
    let ours = with_tpm(tpm, |att| {
        att.read_pcrs(&SAME_AS_OURS)
            .map_err(|e| format!("reading our PCRs: {e}"))
    })
    .await
    .map_err(status)?;
    for pcr in SAME_AS_OURS {
        let theirs = service.pcrs.get(&pcr);
        if theirs != ours.get(&pcr) {
            bail!(
                "the join service does not run our image as we do: its PCR {pcr} is {}, \
                 ours is {}",
                theirs.map_or_else(|| "not quoted".into(), |v| crate::hex_lower(v)),
                ours.get(&pcr)
                    .map_or_else(|| "unknown".into(), |v| crate::hex_lower(v))
            );
        }
    }
    match (service.pcrs.get(&CLUSTER_PCR), cluster) {
        (Some(v), _) if *v == [0; 32] => {
            bail!("the join service belongs to no cluster (PCR {CLUSTER_PCR} is zero)")
        }
        (None, _) => bail!("the join service did not quote PCR {CLUSTER_PCR}"),
        (Some(v), Some(id)) if *v != id.member_pcr() => bail!(
            "the join service belongs to another cluster: its PCR {CLUSTER_PCR} is {}, \
             cluster {id} (this node's launch configuration) gives {}",
            crate::hex_lower(v),
            crate::hex_lower(&id.member_pcr())
        ),
        _ => Ok(()),
    }
}

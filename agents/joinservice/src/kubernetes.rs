//! What the join service asks of Kubernetes: a bootstrap token for each admitted node
//! (one each, short-lived, deleted once that node has registered), the CA pin and the
//! API server's address for its ticket, whether a name is taken, and each node's pod
//! range for the mesh roster.
//!
//! [`ControlPlane`] does it against the local API server with the admin kubeconfig
//! kubeadm wrote on this node's state disk. Tests give the service another
//! [`Kubernetes`] (a test double: they run no control plane).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use veil_kube::BootstrapToken;
use veil_protocol::paths::KubernetesSettings;
use veil_protocol::pb::join::KubernetesJoin;

/// How long a joiner's token lives: long enough for a slow (emulated) VM's kubeadm
/// join, which retries on its own meanwhile; it is deleted earlier once used.
pub const TOKEN_TTL: Duration = Duration::from_secs(30 * 60);
/// How often the service looks whether a token's node has registered.
pub const REGISTERED_POLL: Duration = Duration::from_secs(5);

#[tonic::async_trait]
pub trait Kubernetes: Send + Sync + 'static {
    /// What `node` needs for `kubeadm join`, with a token made for it alone; or
    /// Unavailable while the control plane is not up.
    async fn join(&self, node: &str) -> Result<KubernetesJoin, Status>;
    /// Whether a Node named `node` is registered.
    async fn registered(&self, node: &str) -> Result<bool, Status>;
    /// Deletes the Node named `node` (a removed member); false if there was none.
    async fn delete_node(&self, node: &str) -> Result<bool, Status>;
    /// Sends every node's pod range (Node name: `spec.podCIDR`) on `ranges` after
    /// each change, for as long as the service runs.
    async fn watch_pod_ranges(&self, ranges: PodRangesSender);
}

/// Each node's pod range by node name, the latest only.
pub type PodRangesSender =
    tokio::sync::watch::Sender<std::collections::BTreeMap<String, ipnet::Ipv4Net>>;

/// The control plane on this node.
pub struct ControlPlane {
    pub admin_kubeconfig: PathBuf,
    pub ca_cert: PathBuf,
    pub settings: KubernetesSettings,
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the control plane is not up yet ({e}); try again"))
}

impl ControlPlane {
    pub fn on_this_node(settings: KubernetesSettings) -> Arc<ControlPlane> {
        Arc::new(ControlPlane {
            admin_kubeconfig: veil_kube::ADMIN_KUBECONFIG.into(),
            ca_cert: veil_kube::CA_CERT.into(),
            settings,
        })
    }

    async fn client(&self) -> Result<kube::Client, Status> {
        if !self.admin_kubeconfig.exists() {
            return Err(unavailable(format!(
                "no {}",
                self.admin_kubeconfig.display()
            )));
        }
        let client = veil_kube::api::client(&self.admin_kubeconfig)
            .await
            .map_err(unavailable)?;
        if !veil_kube::api::reachable(&client).await {
            return Err(unavailable("the API server does not answer"));
        }
        Ok(client)
    }
}

#[tonic::async_trait]
impl Kubernetes for ControlPlane {
    async fn join(&self, node: &str) -> Result<KubernetesJoin, Status> {
        let client = self.client().await?;
        let ca = std::fs::read_to_string(&self.ca_cert)
            .map_err(|e| Status::internal(format!("reading {}: {e}", self.ca_cert.display())))?;
        let ca_cert_hash =
            veil_kube::token::ca_cert_hash(&ca).map_err(|e| Status::internal(e.to_string()))?;
        let server = veil_kube::api::server(&self.admin_kubeconfig)
            .map_err(|e| Status::internal(e.to_string()))?;
        let api_server_endpoint = server
            .strip_prefix("https://")
            .unwrap_or(&server)
            .trim_end_matches('/')
            .to_owned();
        let network = veil_kube::Network::from_settings(
            &self.settings.pod_subnet,
            &self.settings.service_subnet,
        )
        .map_err(|e| Status::internal(e.to_string()))?;
        let token = BootstrapToken::generate();
        veil_kube::api::create_token(
            &client,
            &token,
            &format!("Veil join service: for node {node}, once"),
            TOKEN_TTL,
        )
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(node, token = token.id(), "made a bootstrap token");
        tokio::spawn(delete_when_registered(
            client,
            node.to_owned(),
            token.id().to_owned(),
        ));
        Ok(KubernetesJoin {
            api_server_endpoint,
            bootstrap_token: token.expose().to_string(),
            ca_cert_hash,
            pod_subnet: network.pods.to_string(),
            service_subnet: network.services.to_string(),
            registry_cas: self.settings.registry_cas.clone().into_iter().collect(),
        })
    }

    async fn registered(&self, node: &str) -> Result<bool, Status> {
        let client = self.client().await?;
        veil_kube::api::node_exists(&client, node)
            .await
            .map_err(|e| Status::internal(e.to_string()))
    }

    async fn delete_node(&self, node: &str) -> Result<bool, Status> {
        let client = self.client().await?;
        veil_kube::api::delete_node(&client, node)
            .await
            .map_err(|e| Status::internal(e.to_string()))
    }

    async fn watch_pod_ranges(&self, ranges: PodRangesSender) {
        loop {
            // Until kubeadm init has finished, there is no control plane to ask.
            if let Ok(client) = self.client().await {
                veil_kube::api::watch_pod_cidrs(client, |cidrs| {
                    let by_name = cidrs
                        .iter()
                        .map(|(name, c)| (name.as_str().to_owned(), (*c).into()))
                        .collect();
                    ranges.send_replace(by_name);
                })
                .await;
            }
            tokio::time::sleep(WATCH_AGAIN_AFTER).await;
        }
    }
}

/// How long the pod-range watch waits for the control plane, and before watching
/// again.
const WATCH_AGAIN_AFTER: Duration = Duration::from_secs(5);

/// Deletes token `id` once `node` has registered (its kubelet has its own
/// credentials then), or when it expires: a token serves one join only.
async fn delete_when_registered(client: kube::Client, node: String, id: String) {
    let deadline = tokio::time::Instant::now() + TOKEN_TTL;
    loop {
        match veil_kube::api::node_exists(&client, &node).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(node, "looking for the node: {e}"),
        }
        if tokio::time::Instant::now() > deadline {
            tracing::warn!(
                node,
                token = id,
                "the node never registered; its token expired"
            );
            break;
        }
        tokio::time::sleep(REGISTERED_POLL).await;
    }
    match veil_kube::api::delete_token(&client, &id).await {
        Ok(()) => {
            tracing::info!(node, token = id, "bootstrap token deleted");
            println!("veil-joinservice-token-deleted node={node} id={id}");
        }
        Err(e) => tracing::error!(node, token = id, "deleting the bootstrap token: {e}"),
    }
}

//! Where the agents on one node find each other's files: the bootstrapper writes
//! them when the node joins a cluster, the join service reads them; and how a file
//! there is replaced ([`replace_file`]).

/// Replaces `path` whole with `contents`, mode 0600, synced (file and directory)
/// before it returns: a crash or a cloud's reset leaves the old file or the new one,
/// never half of either, and nothing reported written is still in the page cache.
pub fn replace_file(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok(())
}

/// The TPM CA the image trusts for other nodes' TPMs (a joiner's, a join service's):
/// the cloud's vTPM endorsement roots, or here the local CA of ci/boot-node.
pub const IMAGE_TPM_CA: &str = "/usr/lib/veil/tpm-ca/root.pem";
/// Intermediate CA certificates under [`IMAGE_TPM_CA`], if the image has any.
pub const IMAGE_TPM_INTERMEDIATE: &str = "/usr/lib/veil/tpm-ca/intermediate.pem";

/// The node's state disk, mounted once it is unlocked (encrypted, never in the clear).
pub const STATE_MOUNT: &str = "/var/lib/veil/state";
/// The cluster's files on the state disk.
pub const CLUSTER_DIR: &str = "/var/lib/veil/state/veil";
/// In [`CLUSTER_DIR`]: the master secret (control-plane nodes only), mode 0600.
pub const MASTER_SECRET: &str = "master-secret.json";
/// In [`CLUSTER_DIR`]: the cluster's settings ([`ClusterSettings`]).
pub const SETTINGS: &str = "settings.json";
/// In [`CLUSTER_DIR`]: the reference measurements joiners must match.
pub const REFERENCE: &str = "reference.json";
/// In [`CLUSTER_DIR`]: the platform policy joiners must satisfy (absent: TPM only).
pub const PLATFORM_POLICY: &str = "platform-policy.json";
/// In [`CLUSTER_DIR`]: the id of the cluster the disk was created for (hex).
pub const CLUSTER_ID: &str = "cluster";
/// In [`CLUSTER_DIR`]: the node's WireGuard private key (base64), mode 0600.
pub const WIREGUARD_KEY: &str = "wireguard.key";

/// In [`CLUSTER_DIR`]: this node's Kubernetes name and role ([`NodeRecord`]).
pub const NODE: &str = "node.json";
/// In [`CLUSTER_DIR`]: the node's place on the mesh and its peers (veil-mesh), the
/// mesh secret included, mode 0600.
pub const MESH: &str = "mesh.json";
/// In [`CLUSTER_DIR`] of a control-plane node: the members the join service admitted.
pub const ROSTER: &str = "roster.json";

/// The cluster's settings, as kept in [`SETTINGS`] on a control-plane node.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSettings {
    /// State disks are LUKS2 with dm-integrity (HMAC-SHA256), not only encrypted.
    #[serde(default)]
    pub state_disk_integrity: bool,
    #[serde(default)]
    pub kubernetes: KubernetesSettings,
    /// The WireGuard mesh's subnet (CIDR); empty: veil-mesh's default.
    #[serde(default)]
    pub mesh_subnet: String,
}

/// Kubernetes settings of the cluster (`veil init`); empty: the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesSettings {
    #[serde(default)]
    pub pod_subnet: String,
    #[serde(default)]
    pub service_subnet: String,
    /// More names and addresses for the API server's certificate.
    #[serde(default)]
    pub api_server_cert_sans: Vec<String>,
    /// Private registries' CA certificates (PEM) by `host[:port]`.
    #[serde(default)]
    pub registry_cas: std::collections::BTreeMap<String, String>,
}

impl ClusterSettings {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    pub fn from_json(text: &str) -> serde_json::Result<ClusterSettings> {
        serde_json::from_str(text)
    }
}

/// What a node keeps about itself as a Kubernetes node ([`NODE`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRecord {
    /// Its Kubernetes node name (and host name): chosen once, kept for good.
    pub name: String,
    /// `control-plane` or `worker`.
    pub role: String,
    /// kubeadm init or join finished: kubelet has its credentials on this disk.
    #[serde(default)]
    pub kubernetes_joined: bool,
    /// The cluster's pod network (NAT for pods' traffic out of it).
    #[serde(default)]
    pub pod_subnet: String,
    /// The cluster's Service network (never routed off the node untranslated).
    #[serde(default)]
    pub service_subnet: String,
    /// Its state partition's UUID (a control-plane node's join service refuses it to
    /// joiners).
    #[serde(default)]
    pub partuuid: String,
}

impl NodeRecord {
    pub const CONTROL_PLANE: &'static str = "control-plane";
    pub const WORKER: &'static str = "worker";

    pub fn is_control_plane(&self) -> bool {
        self.role == Self::CONTROL_PLANE
    }
}

//! Where the agents on one node find each other's files: the bootstrapper writes
//! them when the node joins a cluster, the join service reads them.

/// The node's state disk, mounted once it is unlocked (encrypted, never in the clear).
pub const STATE_MOUNT: &str = "/var/lib/veil/state";
/// The cluster's files on the state disk.
pub const CLUSTER_DIR: &str = "/var/lib/veil/state/veil";
/// In [`CLUSTER_DIR`]: the master secret (control-plane nodes only), mode 0600.
pub const MASTER_SECRET: &str = "master-secret.json";
/// In [`CLUSTER_DIR`]: the reference measurements joiners must match.
pub const REFERENCE: &str = "reference.json";
/// In [`CLUSTER_DIR`]: the id of the cluster the disk was created for (hex).
pub const CLUSTER_ID: &str = "cluster";
/// In [`CLUSTER_DIR`]: the node's WireGuard private key (base64), mode 0600.
pub const WIREGUARD_KEY: &str = "wireguard.key";

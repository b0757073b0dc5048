//! Kubernetes on a Veil node: everything between "the state disk is open" and "kubelet
//! runs and the node is Ready".
//!
//! Nothing here is downloaded: kubelet, kubeadm, the control plane, etcd, containerd
//! and CoreDNS are one multicall binary in the measured root (`kubernetes/`, built by
//! `ci/build-kubernetes`), and the images kubeadm asks for are an OCI archive beside it
//! that [`runtime::import_system_images`] loads into containerd at boot. Their only
//! layer is an empty root: the pods mount the node's own dm-verity `/usr`
//! ([`config::patches`]), so `veil verify` covers every binary the node runs.
//!
//! - [`config`]: kubeadm's `v1beta4` configuration and patches;
//! - [`network`]: the pod and Service networks;
//! - [`token`]: bootstrap tokens and the CA pin a joiner gets in its attested ticket;
//! - [`runtime`]: containerd, its baked images, kubelet (systemd units);
//! - [`kubeadm`]: running kubeadm, its progress as stages;
//! - [`cni`]: the node's bridge network for its pod CIDR;
//! - [`api`]: the few API calls the agents make (tokens, nodes, the nodes' pod CIDRs).
//!
//! Everything that holds cluster state is on the encrypted state disk (the
//! bootstrapper binds `/var/lib/{containerd,kubelet,etcd}` and `/etc/kubernetes` into
//! it); what kubeadm reads as input (which may hold a bootstrap token) is written to
//! `/run` only.

pub mod api;
pub mod cni;
pub mod config;
pub mod kubeadm;
pub mod network;
pub mod runtime;
pub mod token;

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

pub use config::NodeIdentity;
pub use network::{Cidr, Network};
pub use token::BootstrapToken;

/// Where kubeadm's images are named from (as `kubeadm config images list` prints).
pub const IMAGE_REPOSITORY: &str = "registry.k8s.io";
/// The pinned versions the image was built with (`ci/build-kubernetes`).
pub const VERSIONS_FILE: &str = "/usr/lib/veil/kubernetes/versions.env";
/// The system images' OCI archive, and the list of their names.
pub const SYSTEM_IMAGES: &str = "/usr/lib/veil/kubernetes/system-images.tar";
pub const SYSTEM_IMAGE_LIST: &str = "/usr/lib/veil/kubernetes/images.txt";
/// kubeadm's inputs (tmpfs: a join configuration holds a bootstrap token).
pub const KUBEADM_RUN_DIR: &str = "/run/veil/kubeadm";
/// The cluster administrator's kubeconfig kubeadm writes on the first node.
pub const ADMIN_KUBECONFIG: &str = "/etc/kubernetes/admin.conf";
/// kubelet's own kubeconfig (its node credentials), on every node.
pub const KUBELET_KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";
/// The cluster CA certificate.
pub const CA_CERT: &str = "/etc/kubernetes/pki/ca.crt";

#[derive(Debug, Error)]
pub enum KubeError {
    #[error("'{text}' is not a network: {reason}")]
    Cidr { text: String, reason: String },
    #[error("{0}")]
    Network(String),
    #[error("'{name}' cannot be a node name: {reason}")]
    NodeName { name: String, reason: String },
    #[error("'{0}' cannot be in the API server's certificate (a DNS name or an IP address)")]
    San(String),
    #[error("{0}")]
    Token(String),
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is malformed: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("{what} did not happen within {secs} s")]
    Timeout { what: String, secs: u64 },
    #[error("the Kubernetes API: {0}")]
    Api(String),
}

/// A Kubernetes node name: a DNS label (lower-case letters, digits and '-', at most
/// 63), so it can be the host name too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    pub fn new(name: &str) -> Result<NodeName, KubeError> {
        let bad = |reason: &str| KubeError::NodeName {
            name: name.chars().take(80).collect(),
            reason: reason.to_owned(),
        };
        if name.is_empty() || name.len() > 63 {
            return Err(bad("it must have 1 to 63 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad("only a-z, 0-9 and '-' are allowed"));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(bad("it must start and end with a letter or digit"));
        }
        Ok(NodeName(name.to_owned()))
    }

    /// A name for a node nobody named: `veil-` and 8 random hex digits.
    pub fn generate() -> NodeName {
        use rand_core::RngCore;
        let mut bytes = [0u8; 4];
        rand_core::OsRng.fill_bytes(&mut bytes);
        NodeName(format!(
            "veil-{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subject alternative name for the API server's certificate: an IP address or a
/// DNS name.
pub fn check_san(san: &str) -> Result<(), KubeError> {
    if san.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if san.len() <= 253 && san.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(KubeError::San(san.to_owned()))
    }
}

/// The versions of the image's Kubernetes components ([`VERSIONS_FILE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    pub kubernetes: String,
    pub etcd: String,
    pub containerd: String,
    pub coredns: String,
}

impl Versions {
    pub fn read(path: &std::path::Path) -> Result<Versions, KubeError> {
        let text = std::fs::read_to_string(path).map_err(|source| KubeError::Read {
            path: path.to_owned(),
            source,
        })?;
        Versions::parse(&text).map_err(|reason| KubeError::Malformed {
            path: path.to_owned(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Versions, String> {
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("no {key}"))
        };
        Ok(Versions {
            kubernetes: get("KUBERNETES_VERSION")?,
            etcd: get("ETCD_VERSION")?,
            containerd: get("CONTAINERD_VERSION")?,
            coredns: get("COREDNS_VERSION")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_dns_labels() {
        assert!(NodeName::new("node0").is_ok());
        assert!(NodeName::new("veil-0a1b2c3d").is_ok());
        for (bad, says) in [
            ("", "1 to 63"),
            ("Node0", "a-z, 0-9"),
            ("node_0", "a-z, 0-9"),
            ("-node", "start and end"),
            ("node.example", "a-z, 0-9"),
        ] {
            let err = NodeName::new(bad).expect_err(bad);
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
        let long = "a".repeat(64);
        assert!(NodeName::new(&long).is_err());
        let generated = NodeName::generate();
        assert!(NodeName::new(generated.as_str()).is_ok(), "{generated}");
        assert_ne!(generated, NodeName::generate());
    }

    #[test]
    fn sans_are_addresses_or_dns_names() {
        for ok in ["127.0.0.1", "::1", "api.example.com", "localhost"] {
            check_san(ok).expect(ok);
        }
        for bad in ["", "a..b", "has space", "-x.com", "x_y"] {
            assert!(check_san(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_file_names_what_is_missing() {
        let v = Versions::parse(
            "KUBERNETES_VERSION=v1.37.2\nETCD_VERSION=v3.7.0\nCONTAINERD_VERSION=v2.4.2\nCOREDNS_VERSION=v1.14.6\n",
        )
        .expect("versions");
        assert_eq!(v.kubernetes, "v1.37.2");
        let err = Versions::parse("KUBERNETES_VERSION=v1.37.2\n").expect_err("partial");
        assert_eq!(err, "no ETCD_VERSION");
    }
}

//! kubeadm's configuration for a Veil node (API `kubeadm.k8s.io/v1beta4`), and the
//! patches that make the control plane, kube-proxy and CoreDNS run the node's own
//! measured binaries.
//!
//! Every document is written as JSON, which is YAML too: no YAML emitter to trust,
//! and `kubeadm config validate` reads it as it reads its own examples.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::{Value, json};

use crate::network::{Cidr, Network};
use crate::{KubeError, NodeName};

pub const KUBEADM_API: &str = "kubeadm.k8s.io/v1beta4";
/// containerd's CRI socket (`units/containerd/config.toml`).
pub const CRI_SOCKET: &str = "unix:///run/containerd/containerd.sock";
/// The API server's port on every control-plane node.
pub const API_SERVER_PORT: u16 = 6443;
/// The resolver configuration kubelet gives pods with `dnsPolicy: Default` (CoreDNS):
/// systemd-resolved's list of the network's servers, not its local stub.
pub const RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";
/// What the control-plane containers mount from the node: its dm-verity `/usr`.
const HOST_USR: &str = "veil-usr";

/// How long kubeadm waits for each step. Its defaults (4 minutes for the control
/// plane) assume native speed; a confidential VM's first boot, or an emulated one,
/// is slower, and giving up half-way leaves a node to reset. Waiting longer costs
/// nothing when things go well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub control_plane: u32,
    pub kubelet: u32,
    pub api_call: u32,
    pub etcd_call: u32,
    pub tls_bootstrap: u32,
    pub discovery: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            control_plane: 30 * 60,
            kubelet: 15 * 60,
            // Also how long kubeadm init waits for the API server's first answer.
            api_call: 30 * 60,
            etcd_call: 5 * 60,
            tls_bootstrap: 20 * 60,
            discovery: 20 * 60,
        }
    }
}

impl Timeouts {
    fn to_json(&self) -> Value {
        let d = |s: u32| format!("{s}s");
        json!({
            "controlPlaneComponentHealthCheck": d(self.control_plane),
            "kubeletHealthCheck": d(self.kubelet),
            "kubernetesAPICall": d(self.api_call),
            "etcdAPICall": d(self.etcd_call),
            "tlsBootstrap": d(self.tls_bootstrap),
            "discovery": d(self.discovery),
        })
    }
}

/// The node itself: its Kubernetes name and the address other nodes reach it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub name: NodeName,
    pub ip: Ipv4Addr,
}

/// `kubeadm init` on the cluster's first node.
#[derive(Debug, Clone)]
pub struct InitParams<'a> {
    /// The release the image carries (`v1.37.2`): given, so kubeadm asks no release site.
    pub kubernetes_version: &'a str,
    pub node: &'a NodeIdentity,
    pub network: &'a Network,
    /// More names and addresses the API server's certificate must hold (how the
    /// operator reaches it, e.g. a forwarded `127.0.0.1`).
    pub cert_sans: &'a [String],
    pub patches_dir: &'a Path,
    pub timeouts: Timeouts,
}

/// `kubeadm join` of a worker.
#[derive(Debug, Clone)]
pub struct JoinParams<'a> {
    pub node: &'a NodeIdentity,
    /// `HOST:PORT` of a control-plane node's API server.
    pub api_server: &'a str,
    /// The bootstrap token, `<id>.<secret>`.
    pub token: &'a str,
    /// The cluster CA's public key hash (`sha256:<hex>`), as the join ticket gave it.
    pub ca_cert_hash: &'a str,
    pub patches_dir: &'a Path,
    pub timeouts: Timeouts,
}

fn node_registration(node: &NodeIdentity, taint_control_plane: bool) -> Value {
    let mut registration = json!({
        "name": node.name.as_str(),
        "criSocket": CRI_SOCKET,
        // Every system image is in the node's root; nothing is ever pulled.
        "imagePullPolicy": "Never",
        "kubeletExtraArgs": [{"name": "node-ip", "value": node.ip.to_string()}],
    });
    if !taint_control_plane {
        registration["taints"] = json!([]);
    }
    registration
}

fn leader_election() -> Value {
    json!([
        {"name": "leader-elect-lease-duration", "value": "60s"},
        {"name": "leader-elect-renew-deadline", "value": "45s"},
        {"name": "leader-elect-retry-period", "value": "5s"},
    ])
}

fn kubelet_configuration() -> Value {
    json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "systemd",
        "containerRuntimeEndpoint": CRI_SOCKET,
        "resolvConf": RESOLV_CONF,
        "rotateCertificates": true,
    })
}

fn kube_proxy_configuration(pods: &Cidr) -> Value {
    json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        // nftables: the image carries nft, not iptables.
        "mode": "nftables",
        "clusterCIDR": pods.to_string(),
    })
}

fn documents(docs: &[Value]) -> String {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        // serde_json cannot fail on a Value.
        out.push_str(&serde_json::to_string_pretty(doc).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// The configuration of `kubeadm init --config`: InitConfiguration,
/// ClusterConfiguration, KubeletConfiguration, KubeProxyConfiguration.
pub fn init_documents(p: &InitParams<'_>) -> Result<String, KubeError> {
    p.network.check()?;
    let endpoint = format!("{}:{API_SERVER_PORT}", p.node.ip);
    let mut sans: Vec<String> = vec![p.node.ip.to_string(), p.node.name.as_str().to_owned()];
    for san in p.cert_sans {
        crate::check_san(san)?;
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    let init = json!({
        "apiVersion": KUBEADM_API,
        "kind": "InitConfiguration",
        // kubeadm always makes a token at init (it must, to sign the cluster-info
        // ConfigMap); this one expires a minute after it is made and is never printed
        // (`--skip-token-print`). Joiners get their own from the join service, one each.
        "bootstrapTokens": [{
            "description": "kubeadm init's own; joiners get theirs from the Veil join service",
            "ttl": "60s",
        }],
        "nodeRegistration": node_registration(p.node, true),
        "localAPIEndpoint": {"advertiseAddress": p.node.ip.to_string(), "bindPort": API_SERVER_PORT},
        "patches": {"directory": p.patches_dir.display().to_string()},
        "timeouts": p.timeouts.to_json(),
    });
    let cluster = json!({
        "apiVersion": KUBEADM_API,
        "kind": "ClusterConfiguration",
        "kubernetesVersion": p.kubernetes_version,
        "clusterName": "veil",
        "controlPlaneEndpoint": endpoint,
        "imageRepository": crate::IMAGE_REPOSITORY,
        // ECDSA keys: as strong as RSA-2048 and far cheaper to make in a slow VM.
        "encryptionAlgorithm": "ECDSA-P256",
        "networking": {
            "podSubnet": p.network.pods.to_string(),
            "serviceSubnet": p.network.services.to_string(),
            "dnsDomain": "cluster.local",
        },
        "apiServer": {"certSANs": sans},
        // A busy or emulated VM can stall an API call for more than the 10 s renewal
        // deadline; losing the lease restarts the component for nothing.
        "controllerManager": {"extraArgs": leader_election()},
        "scheduler": {"extraArgs": leader_election()},
        "etcd": {"local": {"dataDir": "/var/lib/etcd"}},
    });
    Ok(documents(&[
        init,
        cluster,
        kubelet_configuration(),
        kube_proxy_configuration(&p.network.pods),
    ]))
}

/// The configuration of `kubeadm join --config` for a worker.
pub fn join_documents(p: &JoinParams<'_>) -> Result<String, KubeError> {
    crate::token::check_token(p.token)?;
    crate::token::check_ca_hash(p.ca_cert_hash)?;
    let join = json!({
        "apiVersion": KUBEADM_API,
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "token": p.token,
                "apiServerEndpoint": p.api_server,
                // The CA is pinned by the hash the attested join ticket carried.
                "caCertHashes": [p.ca_cert_hash],
            },
        },
        "nodeRegistration": node_registration(p.node, false),
        "patches": {"directory": p.patches_dir.display().to_string()},
        "timeouts": p.timeouts.to_json(),
    });
    Ok(documents(&[join]))
}

/// A container of a control-plane static pod (or an add-on) that runs the node's
/// binaries: `/usr` from the node, read-only; probes patient enough for slow VMs.
fn usr_container(name: &str, liveness: bool) -> Value {
    let mut c = json!({
        "name": name,
        "volumeMounts": [{"name": HOST_USR, "mountPath": "/usr", "readOnly": true}],
    });
    if liveness {
        // kubeadm's probes allow 80 s of failures; a loaded emulated node can stall
        // longer than that without anything being wrong.
        c["livenessProbe"] =
            json!({"timeoutSeconds": 30, "periodSeconds": 20, "failureThreshold": 15});
    }
    c
}

fn usr_volume() -> Value {
    json!([{"name": HOST_USR, "hostPath": {"path": "/usr", "type": "Directory"}}])
}

/// kubeadm's patches (strategic merge, `<target>+strategic.json`): file name and
/// contents. The system images hold no binaries (ci/build-system-images): each pod
/// mounts the node's dm-verity `/usr` over its empty one and runs what the node's
/// measurement covers. And `node`'s kubelet serves on its node IP (the mesh address)
/// only, not on every address: on a cloud, where the node may not know its segment,
/// its NIC's address would otherwise reach kubelet from the cloud's network.
pub fn patches(node: &NodeIdentity) -> Vec<(String, String)> {
    let mut out = vec![(
        "kubeletconfiguration+strategic.json".to_owned(),
        json!({"address": node.ip.to_string()}).to_string(),
    )];
    for pod in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        let patch =
            json!({"spec": {"containers": [usr_container(pod, true)], "volumes": usr_volume()}});
        out.push((format!("{pod}+strategic.json"), patch.to_string()));
    }
    for (target, container) in [
        ("kubeproxydaemonset", "kube-proxy"),
        ("corednsdeployment", "coredns"),
    ] {
        let patch = json!({"spec": {"template": {"spec": {
            "containers": [usr_container(container, false)],
            "volumes": usr_volume(),
        }}}});
        out.push((format!("{target}+strategic.json"), patch.to_string()));
    }
    out
}

/// kubelet's configuration, as kubeadm wrote it at init or join (on the state disk).
pub const KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";

/// `text` (kubelet's configuration) with its top-level `address` set to `ip`, added if
/// absent. kubeadm's patches apply only at init or join, so a node that joined before
/// kubelet was held to the mesh address kept `address: 0.0.0.0`; this brings such a
/// node in line each time kubelet starts. Top-level YAML keys start their line, so
/// nested keys of the same name are left alone.
pub fn kubelet_config_with_address(text: &str, ip: Ipv4Addr) -> String {
    let want = format!("address: {ip}");
    let mut found = false;
    let mut out: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.starts_with("address:") {
            if !found {
                out.push(&want);
            }
            found = true;
        } else {
            out.push(line);
        }
    }
    if !found {
        out.push(&want);
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// Holds kubelet to `ip` in the configuration at `path` (see
/// [`kubelet_config_with_address`]); returns whether the file changed.
pub fn pin_kubelet_address(path: &Path, ip: Ipv4Addr) -> Result<bool, KubeError> {
    let text = std::fs::read_to_string(path).map_err(|source| KubeError::Read {
        path: path.to_owned(),
        source,
    })?;
    let pinned = kubelet_config_with_address(&text, ip);
    if pinned == text {
        return Ok(false);
    }
    // Written beside and renamed over: a crash leaves the old file or the new one.
    let tmp = path.with_extension("yaml.veil-new");
    std::fs::write(&tmp, &pinned)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| KubeError::Write {
            path: path.to_owned(),
            source,
        })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_is_held_to_the_mesh_address_whatever_kubeadm_wrote() {
        let ip = Ipv4Addr::new(10, 76, 0, 11);
        let old = "apiVersion: kubelet.config.k8s.io/v1beta1\naddress: 0.0.0.0\nauthentication:\n  x509:\n    address: keep\nkind: KubeletConfiguration\n";
        let new = kubelet_config_with_address(old, ip);
        assert_eq!(
            new,
            "apiVersion: kubelet.config.k8s.io/v1beta1\naddress: 10.76.0.11\nauthentication:\n  x509:\n    address: keep\nkind: KubeletConfiguration\n"
        );
        // Already pinned: unchanged. Absent: added (kubelet's default is every address).
        assert_eq!(kubelet_config_with_address(&new, ip), new);
        let absent = "kind: KubeletConfiguration\n";
        assert_eq!(
            kubelet_config_with_address(absent, ip),
            "kind: KubeletConfiguration\naddress: 10.76.0.11\n"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, old).expect("write");
        assert!(pin_kubelet_address(&path, ip).expect("pins"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), new);
        assert!(!pin_kubelet_address(&path, ip).expect("already pinned"));
        let e = pin_kubelet_address(&dir.path().join("none.yaml"), ip).expect_err("no file");
        assert!(e.to_string().contains("none.yaml"), "{e}");
    }

    fn node() -> NodeIdentity {
        NodeIdentity {
            name: NodeName::new("node0").expect("name"),
            ip: Ipv4Addr::new(10, 76, 0, 10),
        }
    }

    fn docs(text: &str) -> Vec<Value> {
        text.split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_json::from_str(d).expect("each document is JSON"))
            .collect()
    }

    #[test]
    fn init_pins_version_images_and_addresses() {
        let network = Network::default();
        let n = node();
        let text = init_documents(&InitParams {
            kubernetes_version: "v1.37.2",
            node: &n,
            network: &network,
            cert_sans: &["127.0.0.1".into()],
            patches_dir: Path::new("/run/veil/kubeadm/patches"),
            timeouts: Timeouts::default(),
        })
        .expect("config");
        let d = docs(&text);
        let kinds: Vec<&str> = d.iter().map(|x| x["kind"].as_str().unwrap_or("")).collect();
        assert_eq!(
            kinds,
            [
                "InitConfiguration",
                "ClusterConfiguration",
                "KubeletConfiguration",
                "KubeProxyConfiguration"
            ]
        );
        assert_eq!(d[0]["nodeRegistration"]["imagePullPolicy"], "Never");
        assert_eq!(d[0]["nodeRegistration"]["name"], "node0");
        assert_eq!(d[0]["localAPIEndpoint"]["advertiseAddress"], "10.76.0.10");
        assert_eq!(d[0]["bootstrapTokens"][0]["ttl"], "60s");
        assert_eq!(d[1]["kubernetesVersion"], "v1.37.2");
        assert_eq!(d[1]["networking"]["podSubnet"], "10.244.0.0/16");
        assert_eq!(
            d[1]["apiServer"]["certSANs"],
            json!(["10.76.0.10", "node0", "127.0.0.1"])
        );
        assert_eq!(d[2]["cgroupDriver"], "systemd");
        assert_eq!(d[3]["mode"], "nftables");
    }

    #[test]
    fn init_refuses_overlapping_networks_and_bad_sans() {
        let n = node();
        let overlapping = Network {
            pods: "10.96.0.0/16".parse().expect("cidr"),
            services: "10.96.0.0/12".parse().expect("cidr"),
        };
        let params = |network, sans| InitParams {
            kubernetes_version: "v1.37.2",
            node: &n,
            network,
            cert_sans: sans,
            patches_dir: Path::new("/p"),
            timeouts: Timeouts::default(),
        };
        let err = init_documents(&params(&overlapping, &[])).expect_err("overlap");
        assert!(err.to_string().contains("overlap"), "{err}");
        let bad = ["has space".to_owned()];
        let err = init_documents(&params(&Network::default(), &bad)).expect_err("bad SAN");
        assert!(err.to_string().contains("has space"), "{err}");
    }

    #[test]
    fn join_pins_the_ca_and_refuses_malformed_tokens() {
        let n = node();
        let hash = format!("sha256:{}", "ab".repeat(32));
        let params = |token| JoinParams {
            node: &n,
            api_server: "10.76.0.10:6443",
            token,
            ca_cert_hash: &hash,
            patches_dir: Path::new("/p"),
            timeouts: Timeouts::default(),
        };
        let text = join_documents(&params("abcdef.0123456789abcdef")).expect("join");
        let d = docs(&text);
        assert_eq!(
            d[0]["discovery"]["bootstrapToken"]["caCertHashes"],
            json!([hash])
        );
        assert!(d[0]["discovery"]["bootstrapToken"]["unsafeSkipCAVerification"].is_null());
        assert_eq!(d[0]["nodeRegistration"]["taints"], json!([]));
        let err = join_documents(&params("abcdef.short")).expect_err("malformed");
        assert!(err.to_string().contains("bootstrap token"), "{err}");
        // The error names the token's id, never its secret.
        assert!(!err.to_string().contains("short"), "{err}");
    }

    #[test]
    fn every_patch_mounts_the_nodes_usr_read_only() {
        let patches = patches(&node());
        assert_eq!(patches.len(), 7);
        for (name, text) in patches.into_iter().skip(1) {
            assert!(name.ends_with("+strategic.json"), "{name}");
            let v: Value = serde_json::from_str(&text).expect("JSON");
            let spec = if name.starts_with("kube-") || name.starts_with("etcd") {
                &v["spec"]
            } else {
                &v["spec"]["template"]["spec"]
            };
            assert_eq!(spec["volumes"][0]["hostPath"]["path"], "/usr", "{name}");
            assert_eq!(
                spec["containers"][0]["volumeMounts"][0],
                json!({"name": HOST_USR, "mountPath": "/usr", "readOnly": true}),
                "{name}"
            );
        }
    }

    #[test]
    fn kubelet_serves_on_the_node_ip_only() {
        let patches = patches(&node());
        let (name, text) = &patches[0];
        assert_eq!(name, "kubeletconfiguration+strategic.json");
        let v: Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(v, json!({"address": "10.76.0.10"}));
    }
}

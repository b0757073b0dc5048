//! Kubernetes on this node, once its state disk is open (veil-kube does the work;
//! this module decides what to do and when).
//!
//! - Init: the first control-plane node runs `kubeadm init`;
//! - Join: a new worker runs `kubeadm join` with the token its attested ticket held;
//! - a node that has run either before (Recover, Rejoin) starts kubelet from its state
//!   disk, and kubelet brings back its static pods and their data;
//! - a control-plane node whose `kubeadm init` never finished runs it again (after
//!   `kubeadm reset`) when `veil recover` asks.
//!
//! Then every node keeps its pod network: the CNI bridge for the slice of the pod
//! network the controller manager gave it, NAT for traffic leaving the pod network,
//! and the rest of the pod network routed into the mesh (`wg0`), where each peer's
//! allowed IPs hold its slice. Stages go to the console (`veil-kube-stage …`) and to
//! whoever waits (`veil init`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use veil_kube::config::{self, InitParams, JoinParams, Timeouts};
use veil_kube::{Cidr, Network, NodeIdentity, NodeName, Versions, cni, kubeadm, runtime};
use veil_protocol::paths::{self, ClusterSettings, NodeRecord};
use veil_protocol::pb::join::KubernetesJoin;

/// Where QEMU gives a node its name (`-fw_cfg name=opt/veil/name,…`); a cloud's
/// instance metadata elsewhere. Unmeasured and only a wish: the join service refuses
/// a name that is taken, and the name chosen at the first admission is kept.
pub const FW_CFG_NAME: &str = "sys/firmware/qemu_fw_cfg/by_name/opt/veil/name/raw";
/// kubeadm's binary (a link to the multicall binary).
pub const KUBEADM: &str = "/usr/bin/kubeadm";
/// Where registries' CAs go for containerd (`hosts.toml` per registry).
pub const REGISTRY_DIR: &str = "/var/lib/containerd/certs.d";

/// What the node's Kubernetes is doing in this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeStatus {
    Down,
    Starting,
    Up,
    Failed(String),
}

/// Shared between Init/Recover and the join loop.
pub type SharedStatus = Arc<Mutex<KubeStatus>>;

/// Reports a stage: to the console, and to the caller waiting for it.
pub type Stage<'a> = &'a (dyn Fn(String) + Sync);

/// What brings Kubernetes up on this node.
pub enum Start<'a> {
    /// `kubeadm init` (the cluster's first node).
    Init(&'a ClusterSettings),
    /// `kubeadm join` with the ticket's token.
    Join(&'a KubernetesJoin),
    /// kubelet from the state disk (it ran kubeadm before).
    Restart,
}

/// The name this node asks for at its first admission: fw_cfg's, if it is a valid
/// node name, else a random one.
pub fn wanted_name(root: &Path) -> NodeName {
    std::fs::read_to_string(root.join(FW_CFG_NAME))
        .ok()
        .and_then(|n| NodeName::new(n.trim()).ok())
        .unwrap_or_else(NodeName::generate)
}

fn record_path() -> PathBuf {
    Path::new(paths::CLUSTER_DIR).join(paths::NODE)
}

/// The node's record from its state disk, if it has one.
pub fn read_record() -> Result<Option<NodeRecord>> {
    let path = record_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not a node record", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the node's record (replacing it whole, synced).
pub fn write_record(record: &NodeRecord) -> Result<()> {
    crate::state::replace_synced(&record_path(), serde_json::to_string(record)?.as_bytes())
}

/// Kernel settings and modules a Kubernetes node needs, and its host name.
fn prepare_host(name: &NodeName) -> Result<()> {
    for module in ["overlay", "br_netfilter"] {
        runtime::run(std::process::Command::new("modprobe").arg(module))
            .with_context(|| format!("loading the {module} module"))?;
    }
    for (key, value) in [
        // Routing between pods on different nodes (and kubeadm checks it).
        ("net/ipv4/ip_forward", "1"),
        // Pods on one bridge reaching a Service whose endpoint is on the same bridge:
        // the reply must pass the same NAT as the request.
        ("net/bridge/bridge-nf-call-iptables", "1"),
    ] {
        let path = Path::new("/proc/sys").join(key);
        std::fs::write(&path, value).with_context(|| format!("setting {}", path.display()))?;
    }
    nix::unistd::sethostname(name.as_str())
        .with_context(|| format!("setting the host name to {name}"))?;
    Ok(())
}

/// containerd, with the baked system images and the cluster's registry CAs.
fn start_runtime(
    registry_cas: &std::collections::BTreeMap<String, String>,
    stage: Stage,
) -> Result<()> {
    write_registry_cas(Path::new(REGISTRY_DIR), registry_cas)?;
    let started = Instant::now();
    runtime::start_containerd(Duration::from_secs(120)).context("starting containerd")?;
    stage(format!(
        "containerd is up ({} ms)",
        started.elapsed().as_millis()
    ));
    let started = Instant::now();
    let images = runtime::import_system_images().context("importing the system images")?;
    stage(format!(
        "{} system images imported from the root ({} ms): nothing is pulled",
        images.len(),
        started.elapsed().as_millis()
    ));
    Ok(())
}

/// containerd's per-registry settings for private registries: each CA, and a
/// `hosts.toml` that trusts it for that registry only.
pub fn write_registry_cas(
    dir: &Path,
    cas: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    for (host, pem) in cas {
        let valid = !host.is_empty()
            && host.len() < 256
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            && !host.contains("..");
        if !valid {
            bail!("'{host}' is not a registry host[:port]");
        }
        let d = dir.join(host);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        std::fs::write(d.join("ca.crt"), pem)
            .with_context(|| format!("writing {}/ca.crt", d.display()))?;
        let hosts = format!(
            "server = \"https://{host}\"\n\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{}\"\n",
            d.join("ca.crt").display()
        );
        std::fs::write(d.join("hosts.toml"), hosts)
            .with_context(|| format!("writing {}/hosts.toml", d.display()))?;
    }
    Ok(())
}

fn forward_kubeadm<'a>(stage: Stage<'a>) -> impl FnMut(&str) + 'a {
    move |line: &str| stage(format!("kubeadm: {line}"))
}

/// Brings Kubernetes up as `start` says, then records that kubeadm finished.
/// Returns the cluster's networks.
pub fn bring_up(
    record: &mut NodeRecord,
    ip: Ipv4Addr,
    start: Start<'_>,
    stage: Stage,
) -> Result<Network> {
    let name = NodeName::new(&record.name).map_err(|e| anyhow!("the node record: {e}"))?;
    prepare_host(&name)?;
    let node = NodeIdentity { name, ip };
    let patches = config::patches(&node);
    let dir = Path::new(veil_kube::KUBEADM_RUN_DIR);
    let network = match start {
        Start::Init(settings) => {
            let k = &settings.kubernetes;
            let network = Network::from_settings(&k.pod_subnet, &k.service_subnet)?;
            start_runtime(&k.registry_cas, stage)?;
            let versions = Versions::read(Path::new(veil_kube::VERSIONS_FILE))?;
            if record.kubernetes_joined {
                start_kubelet(&node, stage)?;
            } else {
                // A kubeadm init that failed half-way (an earlier Init in this boot,
                // or before a reboot) left files behind: clear them first.
                if Path::new("/etc/kubernetes/manifests").exists()
                    || Path::new("/var/lib/kubelet/config.yaml").exists()
                {
                    stage("an earlier kubeadm init did not finish: kubeadm reset".into());
                    kubeadm::reset(Path::new(KUBEADM), forward_kubeadm(stage))?;
                }
                let text = config::init_documents(&InitParams {
                    kubernetes_version: &versions.kubernetes,
                    node: &node,
                    network: &network,
                    cert_sans: &k.api_server_cert_sans,
                    patches_dir: &kubeadm::patches_dir(&dir.join("init")),
                    timeouts: Timeouts::default(),
                })?;
                let path = kubeadm::write_inputs(&dir.join("init"), &text, &patches)?;
                stage(format!(
                    "kubeadm init: Kubernetes {} as {} at {ip}",
                    versions.kubernetes, node.name
                ));
                kubeadm::init(Path::new(KUBEADM), &path, forward_kubeadm(stage))?;
                record.pod_subnet = network.pods.to_string();
                record.service_subnet = network.services.to_string();
                finished(record)?;
            }
            network
        }
        Start::Join(ticket) => {
            let network = Network::from_settings(&ticket.pod_subnet, &ticket.service_subnet)
                .context("the join ticket's networks")?;
            let cas = ticket.registry_cas.clone().into_iter().collect();
            start_runtime(&cas, stage)?;
            let text = config::join_documents(&JoinParams {
                node: &node,
                api_server: &ticket.api_server_endpoint,
                token: &ticket.bootstrap_token,
                ca_cert_hash: &ticket.ca_cert_hash,
                patches_dir: &kubeadm::patches_dir(&dir.join("join")),
                timeouts: Timeouts::default(),
            })?;
            let path = kubeadm::write_inputs(&dir.join("join"), &text, &patches)?;
            stage(format!(
                "kubeadm join: {} through {}",
                node.name, ticket.api_server_endpoint
            ));
            let joined = kubeadm::join(Path::new(KUBEADM), &path, forward_kubeadm(stage));
            // The token is single-use and is deleted once the node registers.
            let _ = std::fs::remove_file(&path);
            joined?;
            record.pod_subnet = network.pods.to_string();
            record.service_subnet = network.services.to_string();
            finished(record)?;
            network
        }
        Start::Restart => {
            if !record.kubernetes_joined {
                bail!("this node never finished joining Kubernetes, and has no token to try again");
            }
            let network = Network::from_settings(&record.pod_subnet, &record.service_subnet)
                .context("the node record's networks")?;
            start_runtime(&Default::default(), stage)?;
            start_kubelet(&node, stage)?;
            network
        }
    };
    cni::apply_rules(&network, crate::mesh::INTERFACE)?;
    cni::route_pods_through(&network, crate::mesh::INTERFACE)?;
    stage(format!(
        "the pod network {} goes through {}: each node's slice to that node, the rest nowhere",
        network.pods,
        crate::mesh::INTERFACE
    ));
    Ok(network)
}

/// The node has no shell: when Kubernetes fails, the end of kubelet's and
/// containerd's logs and the containers' states go to the console (`veil-kube-log`),
/// for the operator to read.
pub fn report_logs() {
    let journal = std::process::Command::new("journalctl")
        .args([
            "-u",
            "kubelet",
            "-u",
            "containerd",
            "-n",
            "80",
            "--no-pager",
            "-o",
            "cat",
        ])
        .output();
    let containers = std::process::Command::new("ctr")
        .args([
            "--address",
            runtime::CONTAINERD_SOCKET,
            "-n",
            "k8s.io",
            "tasks",
            "list",
        ])
        .output();
    for out in [journal, containers].into_iter().flatten() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("veil-kube-log {line}");
        }
    }
}

fn finished(record: &mut NodeRecord) -> Result<()> {
    record.kubernetes_joined = true;
    write_record(record).context("recording that kubeadm finished")
}

fn start_kubelet(node: &NodeIdentity, stage: Stage) -> Result<()> {
    if config::pin_kubelet_address(Path::new(config::KUBELET_CONFIG), node.ip)? {
        stage(format!(
            "kubelet now serves on {} only (its configuration predates that)",
            node.ip
        ));
    }
    runtime::start_unit("kubelet.service").context("starting kubelet")?;
    stage("kubelet started with its credentials from the state disk".into());
    Ok(())
}

/// Waits until this node has its slice of the pod network and writes its CNI
/// configuration (then containerd reports the network ready and the node turns
/// Ready); its pods get `wg0`'s MTU. `ready` is called once the configuration is
/// written. (Other nodes' slices are the mesh's: their routes are `wg0`'s peers.)
pub async fn pod_network(name: NodeName, ready: impl FnOnce(Result<Cidr>) + Send) {
    let client = match wait_client(Duration::from_secs(600)).await {
        Ok(c) => c,
        Err(e) => return ready(Err(e)),
    };
    let mine = match wait_pod_cidr(&client, &name, Duration::from_secs(1800)).await {
        Ok(c) => c,
        Err(e) => return ready(Err(e)),
    };
    let mtu = match crate::network::interface_mtu(crate::mesh::INTERFACE) {
        Ok(m) => m,
        Err(e) => return ready(Err(e)),
    };
    if let Err(e) = cni::write_conflist(Path::new(cni::CONF_DIR), &mine, mtu) {
        return ready(Err(e.into()));
    }
    println!("veil-kube-podcidr {name} {mine} mtu={mtu}");
    ready(Ok(mine));
    report_memory().await;
}

/// Processes whose memory the node reports (`veil-rss`, for ci/bench-kube).
const REPORTED: [&str; 10] = [
    "veil-bootstrapp",
    "veil-joinservic",
    "kubelet",
    "containerd",
    "etcd",
    "kube-apiserver",
    "kube-controller",
    "kube-scheduler",
    "kube-proxy",
    "coredns",
];

/// The resident memory (MiB) of each process named in [`REPORTED`] (the kernel's
/// 15-character `comm`), summed per name, from `proc`.
pub fn resident_memory(proc: &Path) -> Vec<(String, u64)> {
    let mut sums: std::collections::BTreeMap<String, u64> = Default::default();
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        if !REPORTED.contains(&comm) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        *sums.entry(comm.to_owned()).or_default() += kib;
    }
    sums.into_iter().map(|(n, kib)| (n, kib / 1024)).collect()
}

/// Reports memory on the console a while after Kubernetes is up, then now and again.
async fn report_memory() {
    let mut wait = Duration::from_secs(120);
    loop {
        tokio::time::sleep(wait).await;
        let line: Vec<String> = resident_memory(Path::new("/proc"))
            .into_iter()
            .map(|(n, mib)| format!("{n}={mib}"))
            .collect();
        println!("veil-rss-mib {}", line.join(" "));
        wait = Duration::from_secs(600);
    }
}

/// A client with the node's kubelet credentials, once kubelet has them.
async fn wait_client(timeout: Duration) -> Result<kube::Client> {
    let path = Path::new(veil_kube::KUBELET_KUBECONFIG);
    let deadline = Instant::now() + timeout;
    loop {
        if path.exists() {
            match veil_kube::api::client(path).await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                Err(e) => tracing::info!("kubelet's kubeconfig is not usable yet: {e}"),
            }
        }
        if Instant::now() > deadline {
            bail!("no {} after {} s", path.display(), timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn wait_pod_cidr(client: &kube::Client, name: &NodeName, timeout: Duration) -> Result<Cidr> {
    use k8s_openapi::api::core::v1::Node;
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        match nodes.get_opt(name.as_str()).await {
            Ok(Some(node)) => {
                if let Some(cidr) = node.spec.and_then(|s| s.pod_cidr) {
                    return cidr
                        .parse()
                        .map_err(|e| anyhow!("node {name}'s pod CIDR: {e}"));
                }
            }
            Ok(None) => {}
            Err(e) => tracing::info!("reading node {name}: {e}"),
        }
        if Instant::now() > deadline {
            bail!("node {name} got no pod CIDR within {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_sums_the_named_processes() {
        let proc = tempfile::tempdir().expect("tempdir");
        for (pid, comm, kib) in [
            (1, "systemd", 9000),
            (10, "kubelet", 81920),
            (11, "containerd", 30720),
            (12, "containerd", 10240),
        ] {
            let d = proc.path().join(pid.to_string());
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("comm"), format!("{comm}\n")).expect("comm");
            std::fs::write(
                d.join("status"),
                format!("Name:\t{comm}\nVmRSS:\t  {kib} kB\n"),
            )
            .expect("status");
        }
        assert_eq!(
            resident_memory(proc.path()),
            [("containerd".to_owned(), 40), ("kubelet".to_owned(), 80)]
        );
    }

    #[test]
    fn registry_cas_get_a_hosts_file_each_and_bad_hosts_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cas = [("10.0.2.2:5443".to_owned(), "PEM".to_owned())].into();
        write_registry_cas(dir.path(), &cas).expect("write");
        let hosts = std::fs::read_to_string(dir.path().join("10.0.2.2:5443/hosts.toml"))
            .expect("hosts.toml");
        assert!(
            hosts.contains("server = \"https://10.0.2.2:5443\""),
            "{hosts}"
        );
        assert!(hosts.contains("ca = "), "{hosts}");
        for bad in ["../etc", "a/b", "", "x y"] {
            let cas = [(bad.to_owned(), "PEM".to_owned())].into();
            assert!(write_registry_cas(dir.path(), &cas).is_err(), "{bad}");
        }
    }
}

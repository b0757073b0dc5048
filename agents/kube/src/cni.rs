//! The node's pod network: a Linux bridge (`cni0`) with the node's slice of the pod
//! network (`spec.podCIDR`, given by the controller manager), and the rest of the pod
//! network routed into the WireGuard mesh ([`route_pods_through`]): `wg0` hands each
//! packet to the peer whose allowed IPs hold its address (the roster's pod range for
//! that node) and drops it when none does. No route comes from the Kubernetes API.
//!
//! The rules are nftables' (the image has no iptables): pods' traffic to anything
//! outside the pod network leaves with the node's address, between pods it keeps pod
//! addresses; nothing addressed to the pod network leaves but by the bridge or the
//! mesh (fail-closed: without `wg0`, or with a route gone, a packet for another
//! node's pods is dropped, never sent on the cloud's network in the clear); and
//! nothing addressed to the Service network is forwarded as it is: kube-proxy
//! translates it to an endpoint first, and until it has (or if it never does) the
//! packet is dropped rather than sent to the cloud's network, where anyone could
//! answer for a Service address. Inbound, pod addresses (and the bridge's own) take
//! traffic only from the bridge and the mesh, what kube-proxy translated (a NodePort)
//! and replies to what the pods opened (answers to their masqueraded traffic): Linux
//! would otherwise route a packet the cloud's host addresses to a pod straight from
//! the cloud's network, in the clear, past every peer check.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::KubeError;
use crate::network::{Cidr, Network};
use crate::runtime::run;

/// Where containerd reads CNI configurations (bound to the state disk).
pub const CONF_DIR: &str = "/etc/cni/net.d";
pub const CONF_FILE: &str = "10-veil.conflist";
pub const BRIDGE: &str = "cni0";
/// The routing protocol number Veil's pod route carries, so it can be told from
/// every other route.
pub const ROUTE_PROTO: &str = "76";

/// The CNI configuration list for a node whose pods live in `pod_cidr`; their
/// interfaces get `mtu`, the mesh's, so that what they send fits in `wg0` whole.
pub fn conflist(pod_cidr: &Cidr, mtu: u32) -> String {
    json!({
        "cniVersion": "1.0.0",
        "name": "veil",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "mtu": mtu,
                "isGateway": true,
                "hairpinMode": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr.to_string()}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "backend": "nftables", "capabilities": {"portMappings": true}},
        ],
    })
    .to_string()
}

/// Writes the node's CNI configuration (once the controller manager gave it a pod
/// CIDR); containerd picks it up and the node becomes Ready.
pub fn write_conflist(dir: &Path, pod_cidr: &Cidr, mtu: u32) -> Result<(), KubeError> {
    std::fs::create_dir_all(dir).map_err(|source| KubeError::Write {
        path: dir.to_owned(),
        source,
    })?;
    // Written aside and renamed: containerd watches the directory and must never
    // read half a file.
    let tmp = dir.join(format!(".{CONF_FILE}.tmp"));
    std::fs::write(&tmp, conflist(pod_cidr, mtu)).map_err(|source| KubeError::Write {
        path: tmp.clone(),
        source,
    })?;
    let path = dir.join(CONF_FILE);
    std::fs::rename(&tmp, &path).map_err(|source| KubeError::Write { path, source })
}

/// The nftables rules for pod traffic (see the module's docs); `tunnel` is the mesh
/// interface.
pub fn rules(network: &Network, tunnel: &str) -> String {
    let (pods, services) = (network.pods, network.services);
    format!(
        "table ip veil-pods\n\
         delete table ip veil-pods\n\
         table ip veil-pods {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {pods} ip daddr != {pods} masquerade\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tip daddr {pods} iifname != {{ \"{BRIDGE}\", \"{tunnel}\", \"lo\" }} counter drop\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tip daddr {services} drop\n\
         \t\tip daddr {pods} oifname != {{ \"{BRIDGE}\", \"{tunnel}\" }} counter drop\n\
         \t\tip daddr {pods} iifname != {{ \"{BRIDGE}\", \"{tunnel}\" }} ct status ! dnat ct state != {{ established, related }} counter drop\n\
         \t}}\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority filter; policy accept;\n\
         \t\tip daddr {services} drop\n\
         \t\tip daddr {pods} oifname != {{ \"{BRIDGE}\", \"{tunnel}\", \"lo\" }} counter drop\n\
         \t}}\n\
         }}\n"
    )
}

/// Applies [`rules`] (atomically: nft replaces the table in one transaction).
pub fn apply_rules(network: &Network, tunnel: &str) -> Result<(), KubeError> {
    crate::runtime::nft(&rules(network, tunnel), "the pod network's rules")
}

/// Routes the whole pod network into `tunnel` (the node's own slice is on the
/// bridge, a longer prefix, and stays there). Idempotent.
pub fn route_pods_through(network: &Network, tunnel: &str) -> Result<(), KubeError> {
    run(Command::new("ip").args([
        "-4",
        "route",
        "replace",
        &network.pods.to_string(),
        "dev",
        tunnel,
        "proto",
        ROUTE_PROTO,
    ]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("cidr")
    }

    #[test]
    fn conflist_uses_the_nodes_slice_and_no_iptables() {
        let text = conflist(&cidr("10.244.1.0/24"), 1420);
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.1.0/24"
        );
        assert_eq!(v["plugins"][0]["ipMasq"], false);
        assert_eq!(v["plugins"][0]["mtu"], 1420);
        assert_eq!(v["plugins"][1]["backend"], "nftables");
    }

    #[test]
    fn conflist_is_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_conflist(dir.path(), &cidr("10.244.1.0/24"), 1420).expect("write");
        write_conflist(dir.path(), &cidr("10.244.2.0/24"), 1420).expect("rewrite");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [CONF_FILE]);
        let text = std::fs::read_to_string(dir.path().join(CONF_FILE)).expect("read");
        assert!(text.contains("10.244.2.0/24"));
    }

    #[test]
    fn rules_masquerade_what_leaves_and_never_send_service_addresses_out() {
        let rules = rules(&Network::default(), "wg0");
        assert!(rules.contains("ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade"));
        assert!(rules.contains("delete table ip veil-pods"));
        // Both forwarded (pods) and local (host network) traffic to an untranslated
        // Service address stays on the node.
        assert_eq!(rules.matches("ip daddr 10.96.0.0/12 drop").count(), 2);
        // Pod addresses leave by the bridge or the mesh, or not at all.
        assert!(
            rules.contains("ip daddr 10.244.0.0/16 oifname != { \"cni0\", \"wg0\" } counter drop")
        );
        assert!(rules.contains(
            "ip daddr 10.244.0.0/16 oifname != { \"cni0\", \"wg0\", \"lo\" } counter drop"
        ));
    }

    #[test]
    fn pod_addresses_take_traffic_only_from_the_bridge_and_the_mesh() {
        let rules = rules(&Network::default(), "wg0");
        let chain = |name: &str| {
            let at = rules.find(&format!("chain {name} {{")).expect(name);
            let end = rules[at..].find("\t}").expect("chain end");
            rules[at..at + end].to_owned()
        };
        // Forwarded to a pod from a NIC: only what kube-proxy translated (a NodePort)
        // and replies to what pods opened (their masqueraded traffic's answers).
        assert!(chain("forward").contains(
            "ip daddr 10.244.0.0/16 iifname != { \"cni0\", \"wg0\" } ct status ! dnat ct state != { established, related } counter drop"
        ));
        // The node's own address on the bridge is no way in either.
        assert!(chain("input").contains(
            "ip daddr 10.244.0.0/16 iifname != { \"cni0\", \"wg0\", \"lo\" } counter drop"
        ));
    }

    /// nft itself reads the rules (in a network namespace of its own, so the host's
    /// tables are never touched; ci/host.packages installs nft).
    #[test]
    fn nft_accepts_the_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pods.nft");
        let text = rules(&Network::default(), "wg0");
        std::fs::write(&file, &text).expect("write");
        let out = Command::new("unshare")
            .args(["-n", "nft", "-c", "-f"])
            .arg(&file)
            .output()
            .expect("run unshare -n nft (ci/setup-host installs nftables)");
        assert!(
            out.status.success(),
            "nft refuses the rules: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

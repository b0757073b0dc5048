//! The node's pod network: a Linux bridge (`cni0`) with the node's slice of the pod
//! network (`spec.podCIDR`, given by the controller manager), and routes to every other
//! node's slice through that node ([`sync_routes`]). The WireGuard mesh will carry
//! those routes; the bridge stays as it is.
//!
//! The rules are nftables' (the image has no iptables): pods' traffic to anything
//! outside the pod network leaves with the node's address, between pods it keeps pod
//! addresses; and nothing addressed to the Service network is forwarded as it is:
//! kube-proxy translates it to an endpoint first, and until it has (or if it never
//! does) the packet is dropped rather than sent to the cloud's network, where
//! anyone could answer for a Service address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::network::{Cidr, Network};
use crate::runtime::run;
use crate::{KubeError, NodeName};

/// Where containerd reads CNI configurations (bound to the state disk).
pub const CONF_DIR: &str = "/etc/cni/net.d";
pub const CONF_FILE: &str = "10-veil.conflist";
pub const BRIDGE: &str = "cni0";
/// The routing protocol number Veil's pod routes carry, so they can be told from
/// every other route and removed when their node goes.
pub const ROUTE_PROTO: &str = "76";

/// The CNI configuration list for a node whose pods live in `pod_cidr`.
pub fn conflist(pod_cidr: &Cidr) -> String {
    json!({
        "cniVersion": "1.0.0",
        "name": "veil",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
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
pub fn write_conflist(dir: &Path, pod_cidr: &Cidr) -> Result<(), KubeError> {
    std::fs::create_dir_all(dir).map_err(|source| KubeError::Write {
        path: dir.to_owned(),
        source,
    })?;
    // Written aside and renamed: containerd watches the directory and must never
    // read half a file.
    let tmp = dir.join(format!(".{CONF_FILE}.tmp"));
    std::fs::write(&tmp, conflist(pod_cidr)).map_err(|source| KubeError::Write {
        path: tmp.clone(),
        source,
    })?;
    let path = dir.join(CONF_FILE);
    std::fs::rename(&tmp, &path).map_err(|source| KubeError::Write { path, source })
}

/// The nftables rules for pod traffic (see the module's docs).
pub fn rules(network: &Network) -> String {
    let (pods, services) = (network.pods, network.services);
    format!(
        "table ip veil-pods\n\
         delete table ip veil-pods\n\
         table ip veil-pods {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {pods} ip daddr != {pods} masquerade\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tip daddr {services} drop\n\
         \t}}\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority filter; policy accept;\n\
         \t\tip daddr {services} drop\n\
         \t}}\n\
         }}\n"
    )
}

/// Applies [`rules`] (atomically: nft replaces the table in one transaction).
pub fn apply_rules(network: &Network) -> Result<(), KubeError> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| KubeError::Spawn {
            command: "nft -f -".into(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules(network).as_bytes())
            .map_err(|source| KubeError::Spawn {
                command: "nft -f -".into(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| KubeError::Spawn {
            command: "nft -f -".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(KubeError::Command {
            command: "nft -f - (the pod network's rules)".into(),
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Another node's pod slice and the address it is reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRoute {
    pub pod_cidr: Cidr,
    pub via: Ipv4Addr,
}

/// The routes this node needs: one per other node that has a pod CIDR and an
/// address, never one into the node's own slice or through itself.
pub fn wanted_routes(
    nodes: &BTreeMap<NodeName, PodRoute>,
    me: &NodeName,
    my_ip: Ipv4Addr,
) -> BTreeMap<Cidr, Ipv4Addr> {
    nodes
        .iter()
        .filter(|(name, r)| *name != me && r.via != my_ip)
        .map(|(_, r)| (r.pod_cidr, r.via))
        .collect()
}

/// The pod routes in the kernel now (those with [`ROUTE_PROTO`]).
pub fn current_routes() -> Result<BTreeMap<Cidr, Ipv4Addr>, KubeError> {
    let text = run(Command::new("ip").args(["-4", "route", "show", "proto", ROUTE_PROTO]))?;
    Ok(parse_routes(&text))
}

/// `ip route show` lines: `10.244.1.0/24 via 10.76.0.11 dev enp0s5 …`.
pub fn parse_routes(text: &str) -> BTreeMap<Cidr, Ipv4Addr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let dst: Cidr = words.next()?.parse().ok()?;
            let via = words.skip_while(|w| *w != "via").nth(1)?.parse().ok()?;
            Some((dst, via))
        })
        .collect()
}

/// Makes the kernel's pod routes exactly `wanted`: adds and changes with `ip route
/// replace`, removes those whose node is gone. Returns how many changed.
pub fn sync_routes(wanted: &BTreeMap<Cidr, Ipv4Addr>) -> Result<usize, KubeError> {
    let current = current_routes()?;
    let mut changed = 0;
    for (dst, via) in wanted {
        if current.get(dst) != Some(via) {
            run(Command::new("ip").args([
                "-4",
                "route",
                "replace",
                &dst.to_string(),
                "via",
                &via.to_string(),
                "proto",
                ROUTE_PROTO,
            ]))?;
            tracing::info!(%dst, %via, "pod route set");
            changed += 1;
        }
    }
    for dst in current.keys().filter(|d| !wanted.contains_key(d)) {
        run(Command::new("ip").args([
            "-4",
            "route",
            "delete",
            &dst.to_string(),
            "proto",
            ROUTE_PROTO,
        ]))?;
        tracing::info!(%dst, "pod route removed");
        changed += 1;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("cidr")
    }

    #[test]
    fn conflist_uses_the_nodes_slice_and_no_iptables() {
        let text = conflist(&cidr("10.244.1.0/24"));
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.1.0/24"
        );
        assert_eq!(v["plugins"][0]["ipMasq"], false);
        assert_eq!(v["plugins"][1]["backend"], "nftables");
    }

    #[test]
    fn conflist_is_replaced_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_conflist(dir.path(), &cidr("10.244.1.0/24")).expect("write");
        write_conflist(dir.path(), &cidr("10.244.2.0/24")).expect("rewrite");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [CONF_FILE]);
        let text = std::fs::read_to_string(dir.path().join(CONF_FILE)).expect("read");
        assert!(text.contains("10.244.2.0/24"));
    }

    #[test]
    fn routes_go_to_other_nodes_only() {
        let name = |s: &str| NodeName::new(s).expect("name");
        let mut nodes = BTreeMap::new();
        let me = Ipv4Addr::new(10, 76, 0, 10);
        nodes.insert(
            name("node0"),
            PodRoute {
                pod_cidr: cidr("10.244.0.0/24"),
                via: me,
            },
        );
        nodes.insert(
            name("node1"),
            PodRoute {
                pod_cidr: cidr("10.244.1.0/24"),
                via: Ipv4Addr::new(10, 76, 0, 11),
            },
        );
        let wanted = wanted_routes(&nodes, &name("node0"), me);
        assert_eq!(
            wanted.into_iter().collect::<Vec<_>>(),
            [(cidr("10.244.1.0/24"), Ipv4Addr::new(10, 76, 0, 11))]
        );
    }

    #[test]
    fn kernel_routes_parse() {
        let text = "10.244.1.0/24 via 10.76.0.11 dev enp0s5 proto 76 \n\
                    10.244.2.0/24 via 10.76.0.12 dev enp0s5 proto 76 onlink\n\
                    garbage line\n";
        let r = parse_routes(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[&cidr("10.244.2.0/24")], Ipv4Addr::new(10, 76, 0, 12));
    }

    #[test]
    fn rules_masquerade_what_leaves_and_never_send_service_addresses_out() {
        let rules = rules(&Network::default());
        assert!(rules.contains("ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade"));
        assert!(rules.contains("delete table ip veil-pods"));
        // Both forwarded (pods) and local (host network) traffic to an untranslated
        // Service address stays on the node.
        assert_eq!(rules.matches("ip daddr 10.96.0.0/12 drop").count(), 2);
    }
}

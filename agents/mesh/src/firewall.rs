//! The mesh's fail-closed rules (nftables, table `inet veil-mesh`): between nodes,
//! only WireGuard and the attested-TLS ports cross the underlay; everything else
//! between nodes goes through `wg0` or nowhere.
//!
//! The underlay is the cloud's network the nodes share: the node segment when the node
//! knows it (a local QEMU node's, from fw_cfg), and every peer's WireGuard endpoint;
//! and over IPv6 the whole link-local range, `fe80::/10`. Veil uses no IPv6: the
//! image's network configuration gives the NICs no IPv6 address at all (no link-local
//! one, nothing from router advertisements). These rules are the second line, should
//! one appear: any service listening on `::` would otherwise be reachable in the clear
//! by whatever shares the link (the cloud's host, another VM). Of IPv6 on the link
//! only what configures a NIC (neighbour discovery, router advertisements, DHCPv6's
//! client exchange) would pass besides WireGuard and aTLS; none of it carries the
//! node's data.
//!
//! With it the rules
//!
//! - accept from the underlay only WireGuard (UDP to [`LISTEN_PORT`]), the given TCP
//!   ports (the agent and join ports: aTLS, each peer attested before anything is
//!   released) and replies to what the node itself opened;
//! - send to the underlay only WireGuard (from [`LISTEN_PORT`]), connections to those
//!   ports and those replies: a node that is not in the roster (a changed image, the
//!   cloud's own machine) gets nothing else, in particular nothing in the clear;
//! - forward nothing between pods and the underlay;
//! - send nothing addressed to the mesh subnet but through `wg0` (if `wg0` is gone,
//!   such traffic is dropped instead of following the default route out);
//! - take nothing addressed to a mesh address but from `wg0`, the loopback and the
//!   node's own pod bridge: Linux takes a packet for any of its addresses on any NIC,
//!   so without this, whoever can route to the node (the cloud's host, from any
//!   source address outside the underlay) would reach etcd, the API server and
//!   kubelet on the mesh address in the clear.
//!
//! Traffic to anywhere else (the operator's forwarded ports, a registry, the
//! Internet, over IPv4 or IPv6) is not the mesh's business and passes. (In an `inet`
//! table an `ip …` match implies IPv4 and an `ip6 …` match IPv6: each family's
//! "not the underlay" rule lets only its own packets through.)

use std::fmt::Write;

use ipnet::Ipv4Net;

use crate::wg::LISTEN_PORT;

/// The nftables table the rules live in (family `inet`: IPv4 and IPv6).
pub const TABLE: &str = "veil-mesh";

/// IPv6's underlay: the link-local range, which every NIC on the link has.
pub const LINK_LOCAL6: &str = "fe80::/10";

/// What the rules are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firewall<'a> {
    /// The mesh interface (`wg0`).
    pub interface: &'a str,
    /// The mesh subnet, once the node is in a cluster.
    pub mesh_subnet: Option<Ipv4Net>,
    /// The underlay: the node segment and each peer's endpoint address.
    pub underlay: Vec<Ipv4Net>,
    /// TCP ports open between nodes on the underlay (aTLS only).
    pub tcp_ports: &'a [u16],
    /// Interfaces inside the node (the pod bridge) from which mesh addresses may be
    /// reached, besides `lo` and the mesh interface.
    pub inner_interfaces: &'a [&'a str],
}

impl Firewall<'_> {
    /// The ruleset, replacing the table whole (one `nft -f` transaction).
    pub fn rules(&self) -> String {
        let mut underlay = self.underlay.clone();
        underlay.sort();
        underlay.dedup();
        // nft refuses an interval set's overlapping elements: keep the widest.
        let underlay = Ipv4Net::aggregate(&underlay);
        let ports = self
            .tcp_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let wg = self.interface;
        let mut r = String::new();
        // `table` then `delete table`: works whether or not the table exists.
        let _ = writeln!(
            r,
            "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{"
        );
        let _ = writeln!(r, "\tset underlay {{\n\t\ttype ipv4_addr; flags interval;");
        if !underlay.is_empty() {
            let elements: Vec<String> = underlay.iter().map(|n| n.to_string()).collect();
            let _ = writeln!(r, "\t\telements = {{ {} }}", elements.join(", "));
        }
        let _ = writeln!(r, "\t}}");
        let _ = writeln!(
            r,
            "\tset underlay6 {{\n\t\ttype ipv6_addr; flags interval;\n\t\telements = {{ {LINK_LOCAL6} }}\n\t}}"
        );
        let mesh_only = self
            .mesh_subnet
            .map(|m| format!("\t\tip daddr {m} oifname != \"{wg}\" counter drop\n"))
            .unwrap_or_default();
        // `lo` is accepted before this rule.
        let inside: Vec<String> = [wg]
            .iter()
            .chain(self.inner_interfaces)
            .map(|i| format!("\"{i}\""))
            .collect();
        let mesh_from_inside = self
            .mesh_subnet
            .map(|m| {
                format!(
                    "\t\tip daddr {m} iifname != {{ {} }} counter drop\n",
                    inside.join(", ")
                )
            })
            .unwrap_or_default();
        let _ = write!(
            r,
            "\tchain input {{\n\
             \t\ttype filter hook input priority filter; policy accept;\n\
             \t\tiifname \"lo\" accept\n\
             {mesh_from_inside}\
             \t\tip saddr != @underlay accept\n\
             \t\tip6 saddr != @underlay6 accept\n\
             \t\tct state established,related accept\n\
             \t\ticmpv6 type {{ nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert }} accept\n\
             \t\tudp sport 547 udp dport 546 accept\n\
             \t\tudp dport {LISTEN_PORT} accept\n\
             \t\ttcp dport {{ {ports} }} accept\n\
             \t\tcounter drop\n\
             \t}}\n\
             \tchain output {{\n\
             \t\ttype filter hook output priority filter; policy accept;\n\
             \t\toifname \"lo\" accept\n\
             {mesh_only}\
             \t\tip daddr != @underlay accept\n\
             \t\tip6 daddr != @underlay6 accept\n\
             \t\tct state established,related accept\n\
             \t\ticmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }} accept\n\
             \t\tudp sport 546 udp dport 547 accept\n\
             \t\tudp sport {LISTEN_PORT} accept\n\
             \t\ttcp dport {{ {ports} }} accept\n\
             \t\tcounter drop\n\
             \t}}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             {mesh_only}\
             \t\tip daddr @underlay counter drop\n\
             \t\tip saddr @underlay counter drop\n\
             \t\tip6 daddr @underlay6 counter drop\n\
             \t\tip6 saddr @underlay6 counter drop\n\
             \t}}\n\
             }}\n"
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("net")
    }

    /// Every rule of `rules` is in `chain`, in that order.
    fn in_order(chain: &str, rules: &[&str]) {
        let at: Vec<usize> = rules
            .iter()
            .map(|rule| {
                chain
                    .find(rule)
                    .unwrap_or_else(|| panic!("{rule} in {chain}"))
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{chain}");
    }

    fn firewall(underlay: &[&str], mesh: Option<&str>) -> String {
        Firewall {
            interface: "wg0",
            mesh_subnet: mesh.map(net),
            underlay: underlay.iter().map(|s| net(s)).collect(),
            tcp_ports: &[7443, 7444],
            inner_interfaces: &["cni0"],
        }
        .rules()
    }

    #[test]
    fn mesh_addresses_take_traffic_only_from_inside_the_node_and_the_mesh() {
        let r = firewall(&["10.76.0.0/24"], Some("10.90.0.0/16"));
        let input = &r[r.find("chain input").expect("input")..r.find("chain output").expect("out")];
        // Before anything that accepts by source: a packet for a mesh address from a
        // source outside the underlay, on a NIC, is dropped too.
        in_order(
            input,
            &[
                "iifname \"lo\" accept",
                "ip daddr 10.90.0.0/16 iifname != { \"wg0\", \"cni0\" } counter drop",
                "ip saddr != @underlay accept",
            ],
        );
        // No mesh yet, no such rule (and nothing to name).
        assert!(!firewall(&["10.76.0.0/24"], None).contains("iifname !="));
    }

    #[test]
    fn only_wireguard_and_atls_cross_the_underlay() {
        let r = firewall(&["10.76.0.0/24", "192.168.7.9/32"], Some("10.90.0.0/16"));
        assert!(
            r.contains("elements = { 10.76.0.0/24, 192.168.7.9/32 }"),
            "{r}"
        );
        // In: WireGuard, aTLS, replies; the rest from the underlay is dropped.
        let input = &r[r.find("chain input").expect("input")..r.find("chain output").expect("out")];
        in_order(
            input,
            &[
                "ip saddr != @underlay accept",
                "ct state established,related accept",
                "udp dport 51820 accept",
                "tcp dport { 7443, 7444 } accept",
                "\t\tcounter drop\n",
            ],
        );
        // Out: the same, from WireGuard's port.
        let output =
            &r[r.find("chain output").expect("out")..r.find("chain forward").expect("fwd")];
        assert!(output.contains("udp sport 51820 accept"), "{output}");
        assert!(
            output.contains("tcp dport { 7443, 7444 } accept"),
            "{output}"
        );
        assert!(output.contains("\t\tcounter drop\n"), "{output}");
        // Mesh addresses leave by wg0 or not at all, forwarded or local.
        assert_eq!(
            r.matches("ip daddr 10.90.0.0/16 oifname != \"wg0\" counter drop")
                .count(),
            2
        );
        // Pods never talk to the underlay.
        assert!(r.contains("ip daddr @underlay counter drop"));
        assert!(r.contains("ip saddr @underlay counter drop"));
    }

    #[test]
    fn overlapping_underlay_entries_are_merged_and_an_empty_set_has_no_elements() {
        let r = firewall(&["10.76.0.11/32", "10.76.0.0/24", "10.76.0.0/24"], None);
        assert!(r.contains("elements = { 10.76.0.0/24 }"), "{r}");
        let r = firewall(&[], None);
        assert!(
            r.contains("type ipv4_addr; flags interval;\n\t}"),
            "an IPv4 set with no elements: {r}"
        );
        assert_eq!(r.matches("elements").count(), 1, "IPv6's only: {r}");
        assert!(!r.contains("10.90."), "{r}");
        assert!(r.starts_with("table inet veil-mesh\ndelete table inet veil-mesh\n"));
        // Link-local IPv6 is underlay from the start, before any peer is known.
        assert!(
            r.contains("type ipv6_addr; flags interval;\n\t\telements = { fe80::/10 }"),
            "{r}"
        );
    }

    #[test]
    fn link_local_ipv6_gets_only_wireguard_atls_and_what_configures_the_nic() {
        let r = firewall(&["10.76.0.0/24"], Some("10.90.0.0/16"));
        let input = &r[r.find("chain input").expect("input")..r.find("chain output").expect("out")];
        // IPv6 from elsewhere passes, as IPv4 from elsewhere does; from the link it
        // meets the same WireGuard/aTLS rules and the same drop.
        in_order(
            input,
            &[
                "ip saddr != @underlay accept",
                "ip6 saddr != @underlay6 accept",
                "ct state established,related accept",
                "icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept",
                "udp sport 547 udp dport 546 accept",
                "udp dport 51820 accept",
                "\t\tcounter drop\n",
            ],
        );
        let output =
            &r[r.find("chain output").expect("out")..r.find("chain forward").expect("fwd")];
        assert!(
            output.contains("ip6 daddr != @underlay6 accept"),
            "{output}"
        );
        assert!(
            output.contains("udp sport 546 udp dport 547 accept"),
            "{output}"
        );
        // No ICMPv6 echo either way: only neighbour discovery's types.
        assert!(!r.contains("echo"), "{r}");
        let forward = &r[r.find("chain forward").expect("fwd")..];
        assert!(
            forward.contains("ip6 daddr @underlay6 counter drop"),
            "{forward}"
        );
        assert!(
            forward.contains("ip6 saddr @underlay6 counter drop"),
            "{forward}"
        );
    }

    /// The ruleset as nft itself reads it (ci/host.packages installs nft): a rule nft
    /// refused would leave a node without the table.
    #[test]
    fn nft_accepts_the_ruleset() {
        let dir = std::env::temp_dir().join(format!("veil-nft-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tempdir");
        // Before the node is in a cluster (no peers yet), and once it is.
        for (i, rules) in [
            firewall(&[], None),
            firewall(&["10.76.0.0/24", "192.168.7.9/32"], Some("10.90.0.0/16")),
        ]
        .iter()
        .enumerate()
        {
            let file = dir.join(format!("mesh-{i}.nft"));
            std::fs::write(&file, rules).expect("write");
            // A network namespace of its own: checking never touches the host's tables.
            let out = std::process::Command::new("unshare")
                .args(["-n", "nft", "-c", "-f"])
                .arg(&file)
                .output()
                .expect("run unshare -n nft (ci/setup-host installs nftables)");
            assert!(
                out.status.success(),
                "nft refuses the rules: {}\n{rules}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

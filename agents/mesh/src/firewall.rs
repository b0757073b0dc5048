//! The mesh's fail-closed rules (nftables, table `ip veil-mesh`): between nodes,
//! only WireGuard and the attested-TLS ports cross the underlay; everything else
//! between nodes goes through `wg0` or nowhere.
//!
//! The underlay is the cloud's network the nodes share: the node segment when the node
//! knows it (a local QEMU node's, from fw_cfg), and every peer's WireGuard endpoint.
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
//!   such traffic is dropped instead of following the default route out).
//!
//! Traffic to anywhere else (the operator's forwarded ports, a registry, the
//! Internet) is not the mesh's business and passes.

use std::fmt::Write;

use ipnet::Ipv4Net;

use crate::wg::LISTEN_PORT;

/// The nftables table the rules live in.
pub const TABLE: &str = "veil-mesh";

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
            "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{"
        );
        let _ = writeln!(r, "\tset underlay {{\n\t\ttype ipv4_addr; flags interval;");
        if !underlay.is_empty() {
            let elements: Vec<String> = underlay.iter().map(|n| n.to_string()).collect();
            let _ = writeln!(r, "\t\telements = {{ {} }}", elements.join(", "));
        }
        let _ = writeln!(r, "\t}}");
        let mesh_only = self
            .mesh_subnet
            .map(|m| format!("\t\tip daddr {m} oifname != \"{wg}\" counter drop\n"))
            .unwrap_or_default();
        let _ = write!(
            r,
            "\tchain input {{\n\
             \t\ttype filter hook input priority filter; policy accept;\n\
             \t\tiifname \"lo\" accept\n\
             \t\tip saddr != @underlay accept\n\
             \t\tct state established,related accept\n\
             \t\tudp dport {LISTEN_PORT} accept\n\
             \t\ttcp dport {{ {ports} }} accept\n\
             \t\tcounter drop\n\
             \t}}\n\
             \tchain output {{\n\
             \t\ttype filter hook output priority filter; policy accept;\n\
             \t\toifname \"lo\" accept\n\
             {mesh_only}\
             \t\tip daddr != @underlay accept\n\
             \t\tct state established,related accept\n\
             \t\tudp sport {LISTEN_PORT} accept\n\
             \t\ttcp dport {{ {ports} }} accept\n\
             \t\tcounter drop\n\
             \t}}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             {mesh_only}\
             \t\tip daddr @underlay counter drop\n\
             \t\tip saddr @underlay counter drop\n\
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

    fn firewall(underlay: &[&str], mesh: Option<&str>) -> String {
        Firewall {
            interface: "wg0",
            mesh_subnet: mesh.map(net),
            underlay: underlay.iter().map(|s| net(s)).collect(),
            tcp_ports: &[7443, 7444],
        }
        .rules()
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
        let order: Vec<usize> = [
            "ip saddr != @underlay accept",
            "ct state established,related accept",
            "udp dport 51820 accept",
            "tcp dport { 7443, 7444 } accept",
            "counter drop",
        ]
        .iter()
        .map(|rule| {
            input
                .find(rule)
                .unwrap_or_else(|| panic!("{rule} in {input}"))
        })
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{input}");
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
        assert!(!r.contains("elements"), "{r}");
        assert!(!r.contains("10.90."), "{r}");
        assert!(r.starts_with("table ip veil-mesh\ndelete table ip veil-mesh\n"));
    }
}

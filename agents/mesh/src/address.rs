//! Mesh addresses: one per node from the cluster's mesh subnet (a setting of `veil
//! init`), handed out in order and never reused, so that an address a removed node
//! had can never route to a newcomer while some peer still has the old entry.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::MeshError;

/// The default mesh subnet: clear of kubeadm's pod (10.244.0.0/16) and Service
/// (10.96.0.0/12) defaults, QEMU's user network (10.0.2.0/24) and Veil's test segment
/// (10.76.0.0/24).
pub const DEFAULT_MESH_SUBNET: &str = "10.90.0.0/16";

/// The smallest subnet accepted: 62 nodes.
pub const MAX_PREFIX: u8 = 26;

/// The cluster's mesh subnet, checked against the ranges it must not touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshPlan {
    subnet: Ipv4Net,
}

impl MeshPlan {
    /// `subnet` must be a network address (no host bits), at most a /[`MAX_PREFIX`],
    /// and overlap none of `avoid` (each named: "pod network", "Service network", …).
    pub fn new(subnet: Ipv4Net, avoid: &[(&str, Ipv4Net)]) -> Result<MeshPlan, MeshError> {
        if subnet.prefix_len() > MAX_PREFIX || subnet.network() != subnet.addr() {
            return Err(MeshError::SubnetTooSmall {
                subnet: subnet.to_string(),
                max_prefix: MAX_PREFIX,
            });
        }
        for (what, other) in avoid {
            if subnet.contains(&other.network()) || other.contains(&subnet.network()) {
                return Err(MeshError::Overlap {
                    subnet: subnet.to_string(),
                    what: (*what).to_owned(),
                    other: other.to_string(),
                });
            }
        }
        Ok(MeshPlan { subnet })
    }

    /// The plan for the cluster setting `subnet` (empty: [`DEFAULT_MESH_SUBNET`]),
    /// clear of `avoid` (the cluster's pod and Service networks).
    pub fn from_setting(subnet: &str, avoid: &[(&str, Ipv4Net)]) -> Result<MeshPlan, MeshError> {
        let text = if subnet.is_empty() {
            DEFAULT_MESH_SUBNET
        } else {
            subnet
        };
        let net: Ipv4Net = text.parse().map_err(|e| MeshError::BadSubnet {
            text: text.to_owned(),
            reason: format!("{e}"),
        })?;
        MeshPlan::new(net, avoid)
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// Whether `ip` is a host address of the subnet (not its network or broadcast).
    pub fn holds(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(&ip) && ip != self.subnet.network() && ip != self.subnet.broadcast()
    }

    /// Host addresses in the subnet.
    pub fn hosts(&self) -> u32 {
        (1u32 << (32 - u32::from(self.subnet.prefix_len()))) - 2
    }
}

/// Hands out mesh addresses in order; its state (the next index) is kept with the
/// roster on the join service's encrypted disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocator {
    plan: MeshPlan,
    /// The next host index to hand out (1 is the subnet's first host).
    next: u32,
}

impl Allocator {
    pub fn new(plan: MeshPlan) -> Allocator {
        Allocator { plan, next: 1 }
    }

    pub fn plan(&self) -> &MeshPlan {
        &self.plan
    }

    /// The next address never handed out before.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, MeshError> {
        if self.next > self.plan.hosts() {
            return Err(MeshError::Exhausted {
                subnet: self.plan.subnet.to_string(),
                hosts: self.plan.hosts(),
            });
        }
        let ip = Ipv4Addr::from(u32::from(self.plan.subnet.network()) + self.next);
        self.next += 1;
        Ok(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("test CIDR")
    }

    fn kube() -> [(&'static str, Ipv4Net); 3] {
        [
            ("pod network", net("10.244.0.0/16")),
            ("Service network", net("10.96.0.0/12")),
            ("node segment", net("10.76.0.0/24")),
        ]
    }

    #[test]
    fn the_default_plan_is_clear_of_the_default_networks() {
        let plan = MeshPlan::new(net(DEFAULT_MESH_SUBNET), &kube()).expect("default");
        assert_eq!(plan.hosts(), 65534);
    }

    #[test]
    fn a_subnet_over_the_pods_services_or_underlay_is_refused_by_name() {
        for (subnet, what) in [
            ("10.244.8.0/24", "pod network"),
            ("10.0.0.0/8", "pod network"),
            ("10.100.0.0/16", "Service network"),
            ("10.76.0.0/16", "node segment"),
        ] {
            let e = MeshPlan::new(net(subnet), &kube()).expect_err(subnet);
            assert!(
                matches!(&e, MeshError::Overlap { what: w, .. } if w == what),
                "{subnet}: {e}"
            );
            assert!(e.to_string().contains(subnet), "{e}");
        }
        let e = MeshPlan::new(net("10.90.0.0/28"), &kube()).expect_err("a /28");
        assert!(matches!(e, MeshError::SubnetTooSmall { .. }), "{e}");
        let e = MeshPlan::new(net("10.90.0.5/24"), &kube()).expect_err("host bits");
        assert!(matches!(e, MeshError::SubnetTooSmall { .. }), "{e}");
    }

    #[test]
    fn the_setting_defaults_and_a_garbled_one_is_named() {
        let plan = MeshPlan::from_setting("", &kube()).expect("default");
        assert_eq!(plan.subnet().to_string(), DEFAULT_MESH_SUBNET);
        let e = MeshPlan::from_setting("10.90.0.0/33", &kube()).expect_err("garbled");
        assert!(e.to_string().contains("'10.90.0.0/33'"), "{e}");
        let e = MeshPlan::from_setting("10.96.0.0/16", &kube()).expect_err("services");
        assert!(e.to_string().contains("Service network"), "{e}");
    }

    #[test]
    fn addresses_are_handed_out_once_and_then_run_out_clearly() {
        let plan = MeshPlan::new(net("10.90.0.0/26"), &kube()).expect("plan");
        let mut a = Allocator::new(plan);
        let all: Vec<Ipv4Addr> = (0..plan.hosts())
            .map(|_| a.allocate().expect("address"))
            .collect();
        assert_eq!(all.first(), Some(&Ipv4Addr::new(10, 90, 0, 1)));
        assert_eq!(all.last(), Some(&Ipv4Addr::new(10, 90, 0, 62)));
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len(), "no address twice");
        assert!(all.iter().all(|ip| plan.holds(*ip)));
        let e = a.allocate().expect_err("exhausted");
        assert_eq!(
            e,
            MeshError::Exhausted {
                subnet: "10.90.0.0/26".into(),
                hosts: 62
            }
        );
    }

    #[test]
    fn the_allocator_resumes_where_it_stopped_after_a_restart() {
        let plan = MeshPlan::new(net(DEFAULT_MESH_SUBNET), &kube()).expect("plan");
        let mut a = Allocator::new(plan);
        let first = a.allocate().expect("first");
        // Kept as JSON beside the roster and read back by the restarted service.
        let kept = serde_json::to_string(&a).expect("json");
        let mut b: Allocator = serde_json::from_str(&kept).expect("read back");
        let second = b.allocate().expect("second");
        assert_ne!(first, second, "an address handed out before is not reused");
    }
}

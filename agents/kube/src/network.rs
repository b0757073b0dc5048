//! The cluster's address plan: the pod network (each node gets a slice of it from the
//! controller manager, `spec.podCIDR`) and the Service network. IPv4 for now.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::KubeError;

/// An IPv4 network, `a.b.c.d/n`, with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Cidr, KubeError> {
        let bad = |reason: &str| KubeError::Cidr {
            text: format!("{addr}/{prefix}"),
            reason: reason.to_owned(),
        };
        if prefix > 32 {
            return Err(bad("the prefix length is over 32"));
        }
        if u32::from(addr) & !mask(prefix) != 0 {
            return Err(bad("host bits are set (give the network's first address)"));
        }
        Ok(Cidr { addr, prefix })
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// Whether the two share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl From<Cidr> for ipnet::Ipv4Net {
    fn from(c: Cidr) -> ipnet::Ipv4Net {
        // A Cidr is a checked network address and a prefix of at most 32.
        ipnet::Ipv4Net::new(c.addr, c.prefix).unwrap_or_default()
    }
}

impl FromStr for Cidr {
    type Err = KubeError;

    fn from_str(text: &str) -> Result<Cidr, KubeError> {
        let bad = |reason: &str| KubeError::Cidr {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| bad("no '/' and prefix length"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("the prefix length is not a number"))?;
        Cidr::new(addr, prefix)
    }
}

/// The cluster's networks (a setting of `veil init`, the same on every node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// All pods; the controller manager gives each node a /24 of it.
    pub pods: Cidr,
    /// ClusterIP Services.
    pub services: Cidr,
}

/// kubeadm's and flannel's usual ranges: operators know them, and they stay clear of
/// the 10.0.2.0/24 of QEMU's user network and of Veil's node segment.
pub const DEFAULT_POD_SUBNET: &str = "10.244.0.0/16";
pub const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";
/// Each node's slice of the pod network (the controller manager's default).
pub const NODE_POD_PREFIX: u8 = 24;

impl Default for Network {
    fn default() -> Self {
        Network {
            pods: Cidr {
                addr: Ipv4Addr::new(10, 244, 0, 0),
                prefix: 16,
            },
            services: Cidr {
                addr: Ipv4Addr::new(10, 96, 0, 0),
                prefix: 12,
            },
        }
    }
}

impl Network {
    /// Parses the two settings (empty: the default), then [`Network::check`]s them.
    pub fn from_settings(pods: &str, services: &str) -> Result<Network, KubeError> {
        let d = Network::default();
        let network = Network {
            pods: if pods.is_empty() {
                d.pods
            } else {
                pods.parse()?
            },
            services: if services.is_empty() {
                d.services
            } else {
                services.parse()?
            },
        };
        network.check()?;
        Ok(network)
    }

    /// The two ranges by name, for what must stay clear of them (the mesh subnet).
    pub fn ranges(&self) -> [(&'static str, ipnet::Ipv4Net); 2] {
        [
            ("pod network", self.pods.into()),
            ("Service network", self.services.into()),
        ]
    }

    /// The pod network must hold node slices and not overlap the Services.
    pub fn check(&self) -> Result<(), KubeError> {
        if self.pods.overlaps(&self.services) {
            return Err(KubeError::Network(format!(
                "the pod network {} and the Service network {} overlap",
                self.pods, self.services
            )));
        }
        if self.pods.prefix() > NODE_POD_PREFIX - 4 {
            return Err(KubeError::Network(format!(
                "the pod network {} is too small: it must hold at least 16 node slices of /{NODE_POD_PREFIX}",
                self.pods
            )));
        }
        if self.services.prefix() < 12 || self.services.prefix() > 28 {
            return Err(KubeError::Network(format!(
                "the Service network {} must be between /12 and /28 (the API server allocates from it)",
                self.services
            )));
        }
        Ok(())
    }

    /// Whether `other` (a node segment, say) shares addresses with either network.
    pub fn collides_with(&self, other: &Cidr) -> bool {
        self.pods.overlaps(other) || self.services.overlaps(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_mistakes() {
        let c: Cidr = "10.244.0.0/16".parse().expect("cidr");
        assert!(c.contains(Ipv4Addr::new(10, 244, 7, 1)));
        assert_eq!(ipnet::Ipv4Net::from(c).to_string(), "10.244.0.0/16");
        assert!(!c.contains(Ipv4Addr::new(10, 245, 0, 1)));
        for (text, says) in [
            ("10.244.0.1/16", "host bits"),
            ("10.244.0.0", "no '/'"),
            ("10.244.0.0/33", "over 32"),
            ("fd00::/8", "not an IPv4"),
            ("10.0.0.0/x", "not a number"),
        ] {
            let err = text.parse::<Cidr>().expect_err(text);
            assert!(err.to_string().contains(says), "{text}: {err}");
            assert!(err.to_string().contains(text), "{text}: {err}");
        }
    }

    #[test]
    fn networks_must_not_overlap_and_must_have_room() {
        assert!(Network::from_settings("", "").is_ok());
        let err = Network::from_settings("10.96.0.0/16", "").expect_err("overlap");
        assert!(err.to_string().contains("overlap"), "{err}");
        let err = Network::from_settings("10.244.0.0/22", "").expect_err("small");
        assert!(err.to_string().contains("too small"), "{err}");
        let err = Network::from_settings("", "172.0.0.0/8").expect_err("services");
        assert!(err.to_string().contains("between /12 and /28"), "{err}");
        let n = Network::default();
        assert!(n.collides_with(&"10.244.3.0/24".parse().expect("cidr")));
        assert!(!n.collides_with(&"10.76.0.0/24".parse().expect("cidr")));
    }
}

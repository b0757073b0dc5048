//! The node on the underlay, the cloud's network between nodes, which carries only
//! WireGuard and aTLS (Kubernetes rides the mesh: crate::mesh).
//!
//! On a cloud that is the NIC that carries the default route (the VPC's DHCP gave
//! it). A local QEMU node has two NICs: the user-mode one (the operator's forwarded
//! ports, the way out) and one on a segment shared with the other nodes, like a VPC,
//! whose address QEMU's fw_cfg gives (`opt/veil/segment`: the NIC's MAC and its
//! address). Neither source is trusted for anything but reachability: whatever
//! answers at an address is attested before it gets anything.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use veil_kube::runtime::run;

pub const FW_CFG_SEGMENT: &str = "sys/firmware/qemu_fw_cfg/by_name/opt/veil/segment/raw";
/// systemd-networkd's runtime configuration for the segment NIC (sorts before the
/// image's DHCP-for-every-NIC file, so it wins for that NIC).
pub const SEGMENT_NETWORK: &str = "/run/systemd/network/10-veil-segment.network";

/// The segment NIC's MAC and address, as fw_cfg gives them: `MAC ADDRESS/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub mac: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

impl Segment {
    pub fn parse(text: &str) -> Result<Segment> {
        let mut words = text.split_whitespace();
        let (Some(mac), Some(addr), None) = (words.next(), words.next(), words.next()) else {
            bail!("'{}' is not 'MAC ADDRESS/PREFIX'", text.trim());
        };
        let mac_ok = mac.len() == 17
            && mac.split(':').count() == 6
            && mac
                .split(':')
                .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
        if !mac_ok {
            bail!("'{mac}' is not a MAC address");
        }
        let (ip, prefix) = addr
            .split_once('/')
            .with_context(|| format!("'{addr}' has no /prefix"))?;
        let address: Ipv4Addr = ip
            .parse()
            .with_context(|| format!("'{ip}' is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .with_context(|| format!("'{prefix}' is not a prefix length from 8 to 30"))?;
        Ok(Segment {
            mac: mac.to_ascii_lowercase(),
            address,
            prefix,
        })
    }

    pub fn network(&self) -> String {
        format!(
            "[Match]\nMACAddress={}\n\n[Network]\nAddress={}/{}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
            self.mac, self.address, self.prefix
        )
    }

    /// The segment's network (`10.76.0.0/24`).
    pub fn net(&self) -> Option<ipnet::Ipv4Net> {
        ipnet::Ipv4Net::new(self.address, self.prefix)
            .ok()
            .map(|n| n.trunc())
    }
}

/// Configures the segment NIC if fw_cfg names one; returns it.
pub fn configure_segment(root: &Path) -> Result<Option<Segment>> {
    let Ok(raw) = std::fs::read_to_string(root.join(FW_CFG_SEGMENT)) else {
        return Ok(None);
    };
    let segment = Segment::parse(&raw).context("the node segment in fw_cfg (opt/veil/segment)")?;
    let path = Path::new(SEGMENT_NETWORK);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, segment.network())
        .with_context(|| format!("writing {}", path.display()))?;
    run(Command::new("networkctl").arg("reload")).context("reloading systemd-networkd")?;
    Ok(Some(segment))
}

/// The MTU of interface `name`.
pub fn interface_mtu(name: &str) -> Result<u32> {
    let path = Path::new("/sys/class/net").join(name).join("mtu");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: '{}' is not an MTU", path.display(), text.trim()))
}

/// Waits until `ip` is on one of the node's interfaces (networkd applies the segment
/// configuration asynchronously).
pub fn wait_for_address(ip: Ipv4Addr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = run(Command::new("ip").args(["-4", "-o", "addr", "show"]))?;
        if out
            .split_whitespace()
            .any(|w| w.split('/').next() == Some(&ip.to_string()))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{ip} is on no interface after {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_from_fw_cfg() {
        let s = Segment::parse("52:54:00:76:00:0B 10.76.0.11/24\n").expect("segment");
        assert_eq!(s.mac, "52:54:00:76:00:0b");
        assert_eq!(s.address, Ipv4Addr::new(10, 76, 0, 11));
        assert!(s.network().contains("MACAddress=52:54:00:76:00:0b"));
        assert!(s.network().contains("Address=10.76.0.11/24"));
        assert_eq!(s.net().map(|c| c.to_string()), Some("10.76.0.0/24".into()));
        for (bad, says) in [
            ("52:54:00:76:00:0b", "not 'MAC ADDRESS/PREFIX'"),
            ("52:54:00:76:00 10.76.0.11/24", "not a MAC"),
            ("52:54:00:76:00:zz 10.76.0.11/24", "not a MAC"),
            ("52:54:00:76:00:0b 10.76.0.11", "no /prefix"),
            ("52:54:00:76:00:0b 10.76.0.300/24", "not an IPv4"),
            ("52:54:00:76:00:0b 10.76.0.11/31", "prefix length"),
            (
                "52:54:00:76:00:0b 10.76.0.11/24 extra",
                "not 'MAC ADDRESS/PREFIX'",
            ),
        ] {
            let err = Segment::parse(bad).expect_err(bad);
            assert!(format!("{err:#}").contains(says), "{bad}: {err:#}");
        }
    }
}

//! The peer table on a WireGuard interface, through `wireguard-control`: netlink to
//! the kernel's WireGuard on a node, the UAPI socket of `wireguard-go` in host tests.
//! wireguard-control sets no address, MTU or link state: [`WgInterface::create_kernel`]
//! does those with iproute2's `ip`, which every node has.
//!
//! Every peer gets its pair's preshared key ([`crate::psk`]), its endpoint, a
//! keepalive (so a peer behind the cloud's NAT stays reachable), and exactly the
//! allowed IPs the roster gives it ([`Peer::allowed_ips`]), replacing any others.

use wireguard_control::{Backend, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder};
use zeroize::Zeroizing;

use crate::MeshError;
use crate::peers::{Peer, PeerChanges, PeerTable, WgKey};
use crate::psk::MeshSecret;

/// WireGuard's usual port; the same on every node.
pub const LISTEN_PORT: u16 = 51820;
/// Seconds between keepalives: under the 30 s or more that NAT mappings last.
pub const KEEPALIVE_SECONDS: u16 = 25;

/// A WireGuard interface that exists (made by systemd-networkd or `ip link` on a node,
/// by `wireguard-go` on the host).
pub struct WgInterface {
    name: InterfaceName,
    backend: Backend,
}

impl WgInterface {
    /// The kernel's WireGuard interface `name`.
    pub fn kernel(name: &str) -> Result<WgInterface, MeshError> {
        Self::new(name, Backend::Kernel)
    }

    /// Makes the kernel WireGuard interface `name` if it is missing (the module loads
    /// on demand), gives it `address` (the node's mesh address, with the mesh
    /// subnet's prefix: the route to every peer's mesh address) and `mtu`, and sets
    /// it up.
    pub fn create_kernel(
        name: &str,
        address: ipnet::Ipv4Net,
        mtu: u32,
    ) -> Result<WgInterface, MeshError> {
        let wg = Self::kernel(name)?;
        let exists = std::path::Path::new("/sys/class/net").join(name).exists();
        if !exists {
            wg.ip(&["link", "add", name, "type", "wireguard"])?;
        }
        wg.ip(&["address", "replace", &address.to_string(), "dev", name])?;
        wg.ip(&["link", "set", name, "mtu", &mtu.to_string(), "up"])?;
        Ok(wg)
    }

    fn ip(&self, args: &[&str]) -> Result<(), MeshError> {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| self.failed(&format!("running ip {}", args.join(" ")), e))?;
        if !out.status.success() {
            return Err(self.failed(
                &format!("ip {}", args.join(" ")),
                String::from_utf8_lossy(&out.stderr).trim(),
            ));
        }
        Ok(())
    }

    /// A `wireguard-go` interface, configured through its UAPI socket.
    pub fn userspace(name: &str) -> Result<WgInterface, MeshError> {
        Self::new(name, Backend::Userspace)
    }

    fn new(name: &str, backend: Backend) -> Result<WgInterface, MeshError> {
        let name = name.parse().map_err(|e| MeshError::Device {
            interface: name.to_owned(),
            reason: format!("not an interface name: {e}"),
        })?;
        Ok(WgInterface { name, backend })
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) -> MeshError {
        MeshError::Device {
            interface: self.name.to_string(),
            reason: format!("{what}: {e}"),
        }
    }

    /// Sets the node's private key and port and replaces every peer with `table`'s:
    /// what a node does at boot, and after anything it cannot apply as a change.
    pub fn configure(
        &self,
        private_key: &Zeroizing<[u8; 32]>,
        table: &PeerTable,
        secret: &MeshSecret,
    ) -> Result<(), MeshError> {
        let mut update = DeviceUpdate::new()
            .set_private_key(Key(**private_key))
            .set_listen_port(LISTEN_PORT)
            .replace_peers();
        for peer in table.peers() {
            update = update.add_peer(peer_config(table.own_key(), peer, secret)?);
        }
        update
            .apply(&self.name, self.backend)
            .map_err(|e| self.failed("configuring the key and every peer", e))
    }

    /// Applies what a roster update changed.
    pub fn apply(
        &self,
        own_key: &WgKey,
        changes: &PeerChanges,
        secret: &MeshSecret,
    ) -> Result<(), MeshError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut update = DeviceUpdate::new();
        for key in &changes.removed {
            update = update.remove_peer_by_key(&Key(*key.as_bytes()));
        }
        for peer in changes.added.iter().chain(&changes.changed) {
            update = update.add_peer(peer_config(own_key, peer, secret)?);
        }
        update.apply(&self.name, self.backend).map_err(|e| {
            self.failed(
                &format!(
                    "applying {} added, {} changed, {} removed peers",
                    changes.added.len(),
                    changes.changed.len(),
                    changes.removed.len()
                ),
                e,
            )
        })
    }
}

fn peer_config(
    own_key: &WgKey,
    peer: &Peer,
    secret: &MeshSecret,
) -> Result<PeerConfigBuilder, MeshError> {
    let psk = secret.pair_psk(own_key, &peer.public_key)?;
    let mut config = PeerConfigBuilder::new(&Key(*peer.public_key.as_bytes()))
        .set_endpoint(peer.endpoint)
        // wireguard-control keeps its own copy of the key until the update is sent.
        .set_preshared_key(Key(*psk))
        .set_persistent_keepalive_interval(KEEPALIVE_SECONDS)
        .replace_allowed_ips();
    for net in peer.allowed_ips() {
        config = config.add_allowed_ip(net.addr().into(), net.prefix_len());
    }
    Ok(config)
}

//! The node's place on the WireGuard mesh: what its Join or Rejoin ticket says (its
//! mesh address, the mesh secret, the roster), checked whole before it is kept on the
//! state disk ([`paths::MESH`], mode 0600; it holds the mesh secret).
//!
//! The ticket comes from an attested join service over mutual aTLS, so it is trusted
//! for what it says; the checks catch a service bug before it reaches `wg0`: every key,
//! name and address once, addresses in the subnet, and this node's own entry with its
//! own key and the address the ticket gives it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use veil_mesh::address::MeshPlan;
use veil_mesh::peers::{Peer, PeerTable, RosterView, WgKey};
use veil_protocol::paths::{self, ClusterSettings};
use veil_protocol::pb::join::MeshConfig;
use zeroize::Zeroizing;

/// The cluster's mesh plan: its mesh subnet setting, clear of its pod and Service
/// networks (checked at Init, before anything is touched).
pub fn plan(settings: &ClusterSettings) -> Result<MeshPlan> {
    let k = &settings.kubernetes;
    let network = veil_kube::Network::from_settings(&k.pod_subnet, &k.service_subnet)?;
    Ok(MeshPlan::from_setting(
        &settings.mesh_subnet,
        &network.ranges(),
    )?)
}

/// A ticket's mesh part, parsed.
pub struct MeshTicket {
    pub plan: MeshPlan,
    pub address: Ipv4Addr,
    secret: Zeroizing<[u8; 32]>,
    pub roster: RosterView,
}

impl std::fmt::Debug for MeshTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTicket")
            .field("subnet", &self.plan.subnet())
            .field("address", &self.address)
            .field("roster", &self.roster)
            .finish_non_exhaustive()
    }
}

impl MeshTicket {
    /// Parses the ticket's mesh configuration; each malformed field is named.
    pub fn parse(mut config: MeshConfig) -> Result<MeshTicket> {
        let subnet = config
            .subnet
            .parse()
            .map_err(|e| anyhow!("the mesh subnet '{}': {e}", config.subnet))?;
        let plan = MeshPlan::new(subnet, &[])?;
        let address: Ipv4Addr = config
            .address
            .parse()
            .map_err(|e| anyhow!("the mesh address '{}': {e}", config.address))?;
        if !plan.holds(address) {
            bail!("the mesh address {address} is not in the mesh subnet {subnet}");
        }
        let secret = Zeroizing::new(std::mem::take(&mut config.mesh_secret));
        let secret: [u8; 32] = secret
            .as_slice()
            .try_into()
            .map_err(|_| anyhow!("the mesh secret has {} bytes, not 32", secret.len()))?;
        let roster = config.roster.context("no roster")?;
        let peers = roster
            .peers
            .into_iter()
            .map(|p| {
                let what = |field: &str| format!("roster entry '{}': its {field}", p.name);
                let key: [u8; 32] = p.public_key.as_slice().try_into().map_err(|_| {
                    anyhow!("{}: {} bytes, not 32", what("key"), p.public_key.len())
                })?;
                Ok(Peer {
                    public_key: WgKey::from_bytes(key),
                    endpoint: p
                        .endpoint
                        .parse::<SocketAddr>()
                        .with_context(|| format!("{} '{}'", what("endpoint"), p.endpoint))?,
                    mesh_ip: p
                        .mesh_ip
                        .parse()
                        .with_context(|| format!("{} '{}'", what("mesh address"), p.mesh_ip))?,
                    pod_cidr: match p.pod_cidr.as_str() {
                        "" => None,
                        c => Some(
                            c.parse()
                                .with_context(|| format!("{} '{c}'", what("pod range")))?,
                        ),
                    },
                    name: p.name,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MeshTicket {
            plan,
            address,
            secret: Zeroizing::new(secret),
            roster: RosterView {
                version: roster.version,
                peers,
            },
        })
    }

    /// The node's peer table from this ticket, once the roster holds this node with
    /// its own key at its own address, and passes every roster check.
    pub fn peers(&self, own: &WgKey) -> Result<PeerTable> {
        match self.roster.peers.iter().find(|p| p.public_key == *own) {
            None => bail!(
                "the roster (version {}) does not hold this node's WireGuard key {own}",
                self.roster.version
            ),
            Some(p) if p.mesh_ip != self.address => bail!(
                "the roster gives this node's key the address {}, the ticket {}",
                p.mesh_ip,
                self.address
            ),
            Some(_) => {}
        }
        let mut table = PeerTable::new(*own, self.plan);
        table.apply(self.roster.clone())?;
        Ok(table)
    }

    pub fn secret(&self) -> &Zeroizing<[u8; 32]> {
        &self.secret
    }
}

/// What the state disk keeps of the mesh.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Kept<'a> {
    subnet: String,
    address: Ipv4Addr,
    /// Base64; the file is on the encrypted state disk, mode 0600.
    mesh_secret: &'a str,
    roster: &'a RosterView,
}

/// Checks `ticket` against this node's key (`dir`/[`paths::WIREGUARD_KEY`]) and keeps
/// it in `dir`/[`paths::MESH`], replacing what was there.
pub fn keep(dir: &Path, ticket: &MeshTicket) -> Result<PeerTable> {
    use base64::Engine;
    let path = dir.join(paths::WIREGUARD_KEY);
    let text = Zeroizing::new(
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    );
    let own = veil_mesh::key::PrivateKey::parse(&path.display().to_string(), &text)?.public();
    let table = ticket.peers(&own).context("the ticket's mesh roster")?;
    let secret =
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(ticket.secret.as_ref()));
    let kept = Kept {
        subnet: ticket.plan.subnet().to_string(),
        address: ticket.address,
        mesh_secret: &secret,
        roster: &ticket.roster,
    };
    let json = Zeroizing::new(serde_json::to_vec(&kept)?);
    crate::state::replace_synced(&dir.join(paths::MESH), &json)?;
    Ok(table)
}

//! The node on the WireGuard mesh.
//!
//! A ticket's mesh part (its mesh address, the mesh secret, the roster) is checked
//! whole, then kept on the state disk ([`paths::MESH`], mode 0600: it holds the mesh
//! secret). The ticket comes from an attested join service over mutual aTLS, so it is
//! trusted for what it says; the checks catch a service bug before it reaches `wg0`:
//! every key, name and address once, addresses in the subnet, and this node's own
//! entry with its own key and the address the ticket gives it.
//!
//! The follower ([`start`]) keeps `wg0` as that file says: at boot once the state disk
//! is open, and whenever the file changes (a worker's Rejoin; on the control-plane
//! node, its join service after each admission).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use veil_mesh::address::MeshPlan;
use veil_mesh::peers::{Peer, PeerTable, RosterView, WgKey};
use veil_mesh::psk::MeshSecret;
use veil_mesh::state::MeshState;
use veil_mesh::wg::WgInterface;
use veil_protocol::paths::{self, ClusterSettings};
use veil_protocol::pb::join::{MeshConfig, MeshRoster};
use zeroize::Zeroizing;

/// The mesh's interface on every node.
pub const INTERFACE: &str = "wg0";
/// How often the follower looks at the mesh file (a stat; reads it only on change).
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

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
#[derive(Debug)]
pub struct MeshTicket(pub MeshState);

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
        let roster = roster_view(config.roster.context("no roster")?)?;
        Ok(MeshTicket(MeshState {
            plan,
            address,
            secret: MeshSecret::new(Zeroizing::new(secret)),
            roster,
        }))
    }

    /// The node's peer table from this ticket, once the roster holds this node with
    /// its own key at its own address, and passes every roster check.
    pub fn peers(&self, own: &WgKey) -> Result<PeerTable> {
        let state = &self.0;
        match state.roster.peers.iter().find(|p| p.public_key == *own) {
            None => bail!(
                "the roster (version {}) does not hold this node's WireGuard key {own}",
                state.roster.version
            ),
            Some(p) if p.mesh_ip != state.address => bail!(
                "the roster gives this node's key the address {}, the ticket {}",
                p.mesh_ip,
                state.address
            ),
            Some(_) => {}
        }
        let mut table = PeerTable::new(*own, state.plan);
        table.apply(state.roster.clone())?;
        Ok(table)
    }
}

/// A roster off the wire; each malformed entry is named.
pub fn roster_view(roster: MeshRoster) -> Result<RosterView> {
    let peers = roster
        .peers
        .into_iter()
        .map(|p| {
            let what = |field: &str| format!("roster entry '{}': its {field}", p.name);
            let key: [u8; 32] =
                p.public_key.as_slice().try_into().map_err(|_| {
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
    Ok(RosterView {
        version: roster.version,
        peers,
    })
}

/// How long a member waits before it watches the roster again after losing it.
const WATCH_AGAIN_AFTER: Duration = Duration::from_secs(5);

/// A member follows the join service's roster for the rest of the boot: a watch over
/// mutual aTLS (the service requires PCR 15 to hold this cluster's id, this node
/// requires the service to run its image in the same cluster); each newer roster is
/// checked whole and kept in the mesh file, which the follower applies to `wg0`.
/// A lost watch is opened again.
pub async fn follow_roster(tpm: &crate::attestation::SharedTpm, config: &crate::join::JoinConfig) {
    let dir = Path::new(paths::CLUSTER_DIR);
    loop {
        if let Err(e) = watch_once(tpm, config, dir).await {
            println!("veil-mesh-watch-lost {e:#}");
        }
        tokio::time::sleep(WATCH_AGAIN_AFTER).await;
    }
}

async fn watch_once(
    tpm: &crate::attestation::SharedTpm,
    config: &crate::join::JoinConfig,
    dir: &Path,
) -> Result<()> {
    let have = MeshState::read(&dir.join(paths::MESH))?.roster.version;
    let mut stream = watch(tpm, config, have).await?;
    println!("veil-mesh-watch open have={have}");
    while let Some(roster) = stream.message().await.context("the roster watch")? {
        let kept = keep_roster(dir, roster)?;
        println!("veil-mesh-watch version={kept}");
    }
    bail!("the join service ended the roster watch")
}

/// Opens a member's roster watch at `config`'s join service.
pub async fn watch(
    tpm: &crate::attestation::SharedTpm,
    config: &crate::join::JoinConfig,
    have_version: u64,
) -> Result<tonic::Streaming<MeshRoster>> {
    let channel = crate::join::connect(tpm, config).await?;
    let mut client = veil_protocol::pb::join::mesh_client::MeshClient::new(channel)
        .max_decoding_message_size(veil_protocol::MAX_MESSAGE);
    Ok(client
        .watch(veil_protocol::pb::join::WatchRequest { have_version })
        .await
        .map_err(|s| anyhow!("the join service refused the roster watch: {}", s.message()))?
        .into_inner())
}

/// Checks `roster` whole against the node's mesh file in `dir` (newer, this node in
/// it with its own key and address) and keeps it there; returns its version.
pub fn keep_roster(dir: &Path, roster: MeshRoster) -> Result<u64> {
    let now = MeshState::read(&dir.join(paths::MESH))?;
    let roster = roster_view(roster)?;
    if roster.version <= now.roster.version {
        return Err(veil_mesh::MeshError::StaleRoster {
            got: roster.version,
            have: now.roster.version,
        }
        .into());
    }
    let next = MeshTicket(MeshState { roster, ..now });
    keep(dir, &next)?;
    Ok(next.0.roster.version)
}

/// The node's WireGuard private key from `dir`.
fn private_key(dir: &Path) -> Result<veil_mesh::key::PrivateKey> {
    let path = dir.join(paths::WIREGUARD_KEY);
    let text = Zeroizing::new(
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    );
    Ok(veil_mesh::key::PrivateKey::parse(
        &path.display().to_string(),
        &text,
    )?)
}

/// Checks `ticket` against this node's key (`dir`/[`paths::WIREGUARD_KEY`]) and keeps
/// it in `dir`/[`paths::MESH`], replacing what was there.
pub fn keep(dir: &Path, ticket: &MeshTicket) -> Result<()> {
    let own = private_key(dir)?.public();
    ticket.peers(&own).context("the ticket's mesh roster")?;
    crate::state::replace_synced(&dir.join(paths::MESH), &ticket.0.to_json())
}

/// Starts the follower once per boot (a thread; it lives as long as the node);
/// `segment` is the node segment, if the node knows it (part of the underlay).
pub fn start(dir: &Path, segment: Option<ipnet::Ipv4Net>) {
    static STARTED: std::sync::Once = std::sync::Once::new();
    let dir = dir.to_owned();
    STARTED.call_once(move || {
        let spawned = std::thread::Builder::new()
            .name("veil-mesh".into())
            .spawn(move || follow(&dir, segment));
        if let Err(e) = spawned {
            println!("veil-mesh-failed starting the follower: {e}");
        }
    });
}

/// What the follower has put on `wg0`.
struct Applied {
    wg: WgInterface,
    plan: MeshPlan,
    table: PeerTable,
}

fn follow(dir: &Path, segment: Option<ipnet::Ipv4Net>) {
    let path = dir.join(paths::MESH);
    let mut seen: Option<(SystemTime, u64)> = None;
    let mut applied: Option<Applied> = None;
    loop {
        let stamp = std::fs::metadata(&path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp.is_some() && stamp != seen {
            match sync(dir, &path, &mut applied) {
                Ok(()) => {
                    seen = stamp;
                    if let Some(a) = &applied {
                        apply_firewall(segment, Some((a.plan, &a.table)));
                    }
                }
                // Tried again at the next look: a device that failed may come right.
                Err(e) => println!("veil-mesh-failed {e:#}"),
            }
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

/// Brings `wg0` to what `path` says: the interface, key and every peer the first
/// time, the difference afterwards.
fn sync(dir: &Path, path: &Path, applied: &mut Option<Applied>) -> Result<()> {
    let state = MeshState::read(path)?;
    let key = private_key(dir)?;
    match applied {
        None => {
            let mut table = PeerTable::new(key.public(), state.plan);
            table.apply(state.roster.clone())?;
            let mtu =
                veil_mesh::mesh_mtu(underlay_mtu(table.peers().next().map(|p| p.endpoint.ip())));
            let address = ipnet::Ipv4Net::new(state.address, state.plan.subnet().prefix_len())
                .context("the mesh address's prefix")?;
            let wg = WgInterface::create_kernel(INTERFACE, address, mtu)?;
            wg.configure(&key.to_bytes(), &table, &state.secret)?;
            println!(
                "veil-mesh up interface={INTERFACE} address={address} mtu={mtu} version={} pods={} peers={}",
                table.version(),
                pod_ranges(&table),
                peer_names(&table)
            );
            *applied = Some(Applied {
                wg,
                plan: state.plan,
                table,
            });
        }
        Some(now) => {
            if state.roster.version == now.table.version() {
                return Ok(());
            }
            let changes = now.table.apply(state.roster.clone())?;
            now.wg.apply(&key.public(), &changes, &state.secret)?;
            println!(
                "veil-mesh peers version={} pods={} added={} changed={} removed={} peers={}",
                now.table.version(),
                pod_ranges(&now.table),
                changes.added.len(),
                changes.changed.len(),
                changes.removed.len(),
                peer_names(&now.table)
            );
        }
    }
    Ok(())
}

/// Loads the mesh's fail-closed rules ([`veil_mesh::firewall`]): the underlay is
/// `segment` and, once the node is on the mesh, every peer's endpoint. A failure is
/// reported on the console; the follower tries again at the next change.
pub fn apply_firewall(segment: Option<ipnet::Ipv4Net>, mesh: Option<(MeshPlan, &PeerTable)>) {
    let mut underlay: Vec<ipnet::Ipv4Net> = segment.into_iter().collect();
    if let Some((_, table)) = mesh {
        underlay.extend(table.peers().filter_map(|p| match p.endpoint.ip() {
            IpAddr::V4(ip) => Some(ipnet::Ipv4Net::from(ip)),
            IpAddr::V6(_) => None,
        }));
    }
    let firewall = veil_mesh::firewall::Firewall {
        interface: INTERFACE,
        mesh_subnet: mesh.map(|(plan, _)| plan.subnet()),
        underlay,
        tcp_ports: &[veil_protocol::AGENT_PORT, veil_protocol::JOIN_PORT],
        inner_interfaces: &[veil_kube::cni::BRIDGE],
    };
    match veil_kube::runtime::nft(&firewall.rules(), "the mesh's rules") {
        Ok(()) => println!(
            "veil-mesh-firewall underlay={} mesh={}",
            firewall
                .underlay
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
            firewall
                .mesh_subnet
                .map_or("none".into(), |m| m.to_string())
        ),
        Err(e) => println!("veil-mesh-failed {e}"),
    }
}

/// Waits until the mesh file in `dir` exists and `wg0` holds the address it gives
/// (the follower applies it within seconds); returns that address.
pub fn wait_address(dir: &Path, timeout: Duration) -> Result<Ipv4Addr> {
    let path = dir.join(paths::MESH);
    let deadline = std::time::Instant::now() + timeout;
    let state = loop {
        match MeshState::read(&path) {
            Ok(state) => break state,
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(e).with_context(|| format!("no mesh after {} s", timeout.as_secs()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    crate::network::wait_for_address(state.address, left.max(Duration::from_secs(10)))
        .with_context(|| format!("the mesh address {} on {INTERFACE}", state.address))?;
    Ok(state.address)
}

/// Each peer's pod range (`NAME:CIDR,…`), what `wg0` routes to it besides its
/// mesh address.
fn pod_ranges(table: &PeerTable) -> String {
    let ranges: Vec<String> = table
        .peers()
        .filter_map(|p| Some(format!("{}:{}", p.name, p.pod_cidr?)))
        .collect();
    if ranges.is_empty() {
        "none".into()
    } else {
        ranges.join(",")
    }
}

fn peer_names(table: &PeerTable) -> String {
    let names: Vec<String> = table
        .peers()
        .map(|p| format!("{}@{}", p.name, p.mesh_ip))
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// The MTU of the interface that reaches `toward` (a peer's endpoint; none yet: the
/// default route's), 1500 if it cannot be told.
fn underlay_mtu(toward: Option<IpAddr>) -> u32 {
    let dest = toward.map_or("192.0.2.1".to_owned(), |ip| ip.to_string());
    let out = std::process::Command::new("ip")
        .args(["-o", "route", "get", &dest])
        .output();
    let dev = out.ok().and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.split_whitespace()
            .skip_while(|w| *w != "dev")
            .nth(1)
            .map(str::to_owned)
    });
    dev.and_then(|d| crate::network::interface_mtu(&d).ok())
        .unwrap_or(1500)
}

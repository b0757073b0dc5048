//! A node's WireGuard peers, kept in step with the join service's roster.
//!
//! The roster is the only source of peers. An update is checked whole before it
//! changes anything: its version must be newer than the one applied (a replayed or
//! reordered update is refused), every key, mesh address and pod range must belong to
//! one node, addresses must lie in the mesh subnet. What it yields is the difference
//! to apply to `wg0`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::MeshError;
use crate::address::MeshPlan;

/// A WireGuard (X25519) public key; base64 in text, as `wg` writes it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WgKey([u8; 32]);

impl WgKey {
    pub fn from_bytes(bytes: [u8; 32]) -> WgKey {
        WgKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn parse(text: &str) -> Result<WgKey, MeshError> {
        let bad = |reason: String| MeshError::BadKey {
            text: text.chars().take(64).collect(),
            reason,
        };
        let bytes = B64.decode(text.trim()).map_err(|e| bad(e.to_string()))?;
        Self::checked(&bytes).map_err(bad)
    }

    /// A key as raw bytes (off the wire); refused unless 32 bytes and not all zero.
    pub fn from_slice(bytes: &[u8]) -> Result<WgKey, MeshError> {
        Self::checked(bytes).map_err(|reason| MeshError::BadKey {
            text: B64.encode(&bytes[..bytes.len().min(48)]),
            reason,
        })
    }

    fn checked(bytes: &[u8]) -> Result<WgKey, String> {
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("{} bytes", bytes.len()))?;
        if key == [0; 32] {
            return Err("the all-zero key".into());
        }
        Ok(WgKey(key))
    }
}

impl fmt::Display for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&B64.encode(self.0))
    }
}

impl fmt::Debug for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgKey({self})")
    }
}

impl Serialize for WgKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for WgKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        WgKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One attested node as the roster names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peer {
    pub name: String,
    pub public_key: WgKey,
    /// Where its WireGuard listens on the underlay (the cloud's network).
    pub endpoint: SocketAddr,
    pub mesh_ip: Ipv4Addr,
    /// Its slice of the pod network, once Kubernetes has allocated one.
    #[serde(default)]
    pub pod_cidr: Option<Ipv4Net>,
}

impl Peer {
    /// What `wg0` accepts from the peer and routes to it: its mesh address and its
    /// pods. Nothing else: a peer cannot claim another's addresses.
    pub fn allowed_ips(&self) -> Vec<Ipv4Net> {
        let mut ips = vec![Ipv4Net::from(self.mesh_ip)];
        ips.extend(self.pod_cidr);
        ips
    }
}

/// The roster as the join service sends it: every member, at a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RosterView {
    pub version: u64,
    pub peers: Vec<Peer>,
}

/// What an applied update changes on `wg0`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PeerChanges {
    pub added: Vec<Peer>,
    /// Same key, another endpoint, address or pod range.
    pub changed: Vec<Peer>,
    pub removed: Vec<WgKey>,
}

impl PeerChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// A node's view of its peers (itself excluded).
#[derive(Debug)]
pub struct PeerTable {
    own_key: WgKey,
    plan: MeshPlan,
    version: u64,
    peers: BTreeMap<WgKey, Peer>,
}

impl PeerTable {
    /// A node with no peers yet (version 0: any roster is newer).
    pub fn new(own_key: WgKey, plan: MeshPlan) -> PeerTable {
        PeerTable {
            own_key,
            plan,
            version: 0,
            peers: BTreeMap::new(),
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn own_key(&self) -> &WgKey {
        &self.own_key
    }

    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// Checks `view` whole and, only if it passes, takes it; returns what changed.
    pub fn apply(&mut self, view: RosterView) -> Result<PeerChanges, MeshError> {
        if view.version <= self.version {
            return Err(MeshError::StaleRoster {
                got: view.version,
                have: self.version,
            });
        }
        check(&view, &self.plan)?;
        let next: BTreeMap<WgKey, Peer> = view
            .peers
            .into_iter()
            .filter(|p| p.public_key != self.own_key)
            .map(|p| (p.public_key, p))
            .collect();
        let mut changes = PeerChanges::default();
        for (key, peer) in &next {
            match self.peers.get(key) {
                None => changes.added.push(peer.clone()),
                Some(old) if old != peer => changes.changed.push(peer.clone()),
                Some(_) => {}
            }
        }
        changes.removed = self
            .peers
            .keys()
            .filter(|k| !next.contains_key(k))
            .copied()
            .collect();
        self.peers = next;
        self.version = view.version;
        Ok(changes)
    }
}

/// Every key, name, mesh address and pod range belongs to one node; addresses lie in
/// the mesh subnet.
fn check(view: &RosterView, plan: &MeshPlan) -> Result<(), MeshError> {
    let bad = |reason: String| MeshError::BadRoster {
        version: view.version,
        reason,
    };
    let mut keys = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut ips = BTreeSet::new();
    let mut pods: Vec<(&str, Ipv4Net)> = Vec::new();
    for p in &view.peers {
        if p.name.is_empty() {
            return Err(bad(format!("a peer with key {} has no name", p.public_key)));
        }
        if !keys.insert(p.public_key) {
            return Err(bad(format!(
                "the key {} is named twice (again for '{}')",
                p.public_key, p.name
            )));
        }
        if !names.insert(p.name.as_str()) {
            return Err(bad(format!("the name '{}' is used twice", p.name)));
        }
        if !plan.holds(p.mesh_ip) {
            return Err(bad(format!(
                "'{}' has mesh address {}, outside the mesh subnet {}",
                p.name,
                p.mesh_ip,
                plan.subnet()
            )));
        }
        if !ips.insert(p.mesh_ip) {
            return Err(bad(format!(
                "the mesh address {} is given twice (again to '{}')",
                p.mesh_ip, p.name
            )));
        }
        if let Some(cidr) = p.pod_cidr {
            if cidr.contains(&plan.subnet().network()) || plan.subnet().contains(&cidr.network()) {
                return Err(bad(format!(
                    "'{}' has pod range {cidr}, which overlaps the mesh subnet",
                    p.name
                )));
            }
            if let Some((other, _)) = pods
                .iter()
                .find(|(_, c)| c.contains(&cidr.network()) || cidr.contains(&c.network()))
            {
                return Err(bad(format!(
                    "'{}' has pod range {cidr}, which overlaps '{other}''s",
                    p.name
                )));
            }
            pods.push((&p.name, cidr));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> MeshPlan {
        MeshPlan::new("10.90.0.0/16".parse().expect("cidr"), &[]).expect("plan")
    }

    fn key(b: u8) -> WgKey {
        WgKey::from_bytes([b; 32])
    }

    fn peer(b: u8) -> Peer {
        Peer {
            name: format!("node{b}"),
            public_key: key(b),
            endpoint: format!("10.76.0.{}:51820", 10 + b).parse().expect("addr"),
            mesh_ip: Ipv4Addr::new(10, 90, 0, b),
            pod_cidr: Some(format!("10.244.{b}.0/24").parse().expect("cidr")),
        }
    }

    fn view(version: u64, peers: Vec<Peer>) -> RosterView {
        RosterView { version, peers }
    }

    #[test]
    fn updates_yield_what_to_add_change_and_remove_and_skip_the_node_itself() {
        let mut t = PeerTable::new(key(1), plan());
        let c = t
            .apply(view(1, vec![peer(1), peer(2), peer(3)]))
            .expect("first roster");
        assert_eq!(c.added, vec![peer(2), peer(3)], "not itself");
        assert!(c.changed.is_empty() && c.removed.is_empty());

        let mut moved = peer(3);
        moved.endpoint = "10.76.0.99:51820".parse().expect("addr");
        let c = t
            .apply(view(2, vec![peer(1), moved.clone(), peer(4)]))
            .expect("second");
        assert_eq!(c.added, vec![peer(4)]);
        assert_eq!(c.changed, vec![moved]);
        assert_eq!(c.removed, vec![key(2)]);
        assert_eq!(t.version(), 2);
        assert_eq!(t.peers().count(), 2);
    }

    #[test]
    fn a_stale_or_replayed_roster_is_refused_and_changes_nothing() {
        let mut t = PeerTable::new(key(1), plan());
        t.apply(view(5, vec![peer(2)])).expect("v5");
        for old in [5, 4, 0] {
            let e = t.apply(view(old, vec![])).expect_err("stale");
            assert_eq!(e, MeshError::StaleRoster { got: old, have: 5 });
        }
        assert_eq!(t.peers().cloned().collect::<Vec<_>>(), vec![peer(2)]);
    }

    #[test]
    fn a_roster_that_gives_one_nodes_key_address_or_pods_to_another_is_refused() {
        let mut dup_key = peer(3);
        dup_key.public_key = key(2);
        let mut dup_ip = peer(3);
        dup_ip.mesh_ip = peer(2).mesh_ip;
        let mut dup_pods = peer(3);
        dup_pods.pod_cidr = Some("10.244.2.128/25".parse().expect("cidr"));
        let mut outside = peer(3);
        outside.mesh_ip = Ipv4Addr::new(10, 91, 0, 3);
        let mut broadcast = peer(3);
        broadcast.mesh_ip = Ipv4Addr::new(10, 90, 255, 255);
        let mut dup_name = peer(3);
        dup_name.name = "node2".into();
        for (bad, says) in [
            (dup_key, "is named twice"),
            (dup_ip, "given twice"),
            (dup_pods, "overlaps 'node2''s"),
            (outside, "outside the mesh subnet"),
            (broadcast, "outside the mesh subnet"),
            (dup_name, "used twice"),
        ] {
            let mut t = PeerTable::new(key(1), plan());
            t.apply(view(1, vec![peer(2)])).expect("v1");
            let e = t.apply(view(2, vec![peer(2), bad])).expect_err(says);
            assert!(e.to_string().contains(says), "{says}: {e}");
            assert!(e.to_string().contains("nothing was changed"), "{e}");
            assert_eq!(t.version(), 1, "{says}");
            assert_eq!(t.peers().count(), 1, "{says}");
        }
    }

    #[test]
    fn a_malformed_key_in_a_roster_is_named() {
        for (text, says) in [
            ("not base64!", "not a WireGuard public key"),
            ("AAAA", "3 bytes"),
            (&B64.encode([0u8; 32])[..], "all-zero"),
        ] {
            let json = format!(
                r#"{{"version":1,"peers":[{{"name":"n","publicKey":"{text}","endpoint":"10.76.0.1:51820","meshIp":"10.90.0.1"}}]}}"#
            );
            let e = serde_json::from_str::<RosterView>(&json).expect_err(text);
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
        let k = key(9).to_string();
        assert_eq!(WgKey::parse(&k).expect("round trip"), key(9));
        // Raw bytes off the wire pass the same checks.
        assert_eq!(WgKey::from_slice(&[9; 32]).expect("raw"), key(9));
        for (raw, says) in [(&[9u8; 31][..], "31 bytes"), (&[0u8; 32][..], "all-zero")] {
            let e = WgKey::from_slice(raw).expect_err(says);
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn a_peer_is_allowed_its_mesh_address_and_its_pods_only() {
        let ips: Vec<String> = peer(2)
            .allowed_ips()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(ips, ["10.90.0.2/32", "10.244.2.0/24"]);
        let mut fresh = peer(2);
        fresh.pod_cidr = None;
        assert_eq!(fresh.allowed_ips().len(), 1);
    }
}

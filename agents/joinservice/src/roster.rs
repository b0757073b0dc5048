//! The members the join service admitted, kept on the encrypted state disk
//! ([`paths::ROSTER`]): each one's name, state partition, TPM and WireGuard key. Names
//! are unique: a second node cannot take a member's name (its Kubernetes identity).
//!
//! A disk key goes only to the node that joined with that disk: each member is bound
//! to its TPM ([`veil_attest::Machine`]: the SHA-256 of the EK its attestation key was
//! activated against, or on a cloud of the vTPM AK the cloud's own proof names), and
//! a member that reboots is known by its partition *and* that TPM (Rejoin). So an
//! attested node cannot ask for another member's partition (by Join or Rejoin), nor
//! for the control-plane node's own, and a copy of a member's disk attached to a
//! fresh VM (another vTPM) stays locked. What it costs: a member whose vTPM is lost
//! (a VM recreated rather than rebooted) cannot Rejoin and must join anew with a
//! new disk. It does not stop the same VM from being booted with an older copy of
//! its own disk (same TPM); that rollback is not covered here.
//!
//! The roster is also the WireGuard mesh's only source of peers: each member's public
//! key, underlay endpoint and mesh address (handed out once by the allocator kept
//! here, never reused), at a version that grows with every change. The control-plane
//! node is a member too ([`Roster::own`]), so joiners get it as their first peer.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use veil_mesh::address::{Allocator, MeshPlan};
use veil_mesh::peers::{Peer, RosterView, WgKey};
use veil_protocol::paths;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Member {
    pub name: String,
    pub partuuid: String,
    pub role: String,
    /// The X25519 public key the member made (base64 in the file).
    pub wireguard_public_key: WgKey,
    /// Its TPM, as [`veil_attest::Machine`] writes it: hex SHA-256 of the EK public
    /// area, or `PLATFORM-ak:HEX` for a cloud vTPM's AK (empty for the control-plane
    /// node itself, which never rejoins: it recovers).
    pub tpm: String,
    /// Its mesh address: handed out at its first Join and kept for good.
    #[serde(default)]
    pub mesh_ip: Option<Ipv4Addr>,
    /// Where its WireGuard listens: the address it last joined from. None for the
    /// control-plane node, which joiners reach where they reached its join service.
    #[serde(default)]
    pub endpoint: Option<SocketAddr>,
    /// Its slice of the pod network as the controller manager allocated it (its
    /// Node's `spec.podCIDR` on this node's API server); none until then. Peers put
    /// it in its allowed IPs: pod traffic to it goes to it alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<Ipv4Net>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Stored {
    /// Grows with every change; nodes refuse a roster that is not newer.
    #[serde(default)]
    version: u64,
    /// None until the first address is handed out.
    #[serde(default)]
    allocator: Option<Allocator>,
    members: Vec<Member>,
    /// Members `veil remove` dropped: their partitions, TPMs' claims on them and keys
    /// are never accepted again.
    #[serde(default)]
    removed: Vec<Member>,
}

/// The roster as nodes get it: every member on the mesh, at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub version: u64,
    pub members: Vec<Member>,
}

impl Member {
    /// The member as a mesh peer, reached at its recorded endpoint or else (this
    /// node) at `own_endpoint`. None without a mesh address or an endpoint.
    pub fn peer(&self, own_endpoint: Option<SocketAddr>) -> Option<Peer> {
        Some(Peer {
            name: self.name.clone(),
            public_key: self.wireguard_public_key,
            endpoint: self.endpoint.or(own_endpoint)?,
            mesh_ip: self.mesh_ip?,
            pod_cidr: self.pod_cidr,
        })
    }
}

impl Snapshot {
    /// The roster as a mesh view: every member but `except` (see [`Member::peer`]).
    pub fn view(&self, own_endpoint: Option<SocketAddr>, except: Option<&WgKey>) -> RosterView {
        RosterView {
            version: self.version,
            peers: self
                .members
                .iter()
                .filter_map(|m| m.peer(own_endpoint))
                .filter(|p| Some(&p.public_key) != except)
                .collect(),
        }
    }
}

#[derive(Debug, Error)]
pub enum RosterError {
    #[error(
        "the name '{name}' belongs to another member of the cluster (state partition {partuuid})"
    )]
    NameTaken { name: String, partuuid: String },
    #[error(
        "state partition {partuuid} belongs to {owner}, not to this node's TPM: a disk key goes only to the node that joined with that disk"
    )]
    PartitionTaken { partuuid: String, owner: String },
    #[error(
        "no member has state partition {partuuid}: a node with a new disk joins with Join, not Rejoin"
    )]
    NotMember { partuuid: String },
    #[error(
        "state partition {partuuid} belonged to '{name}', which was removed from the cluster: its disk key is not given again"
    )]
    Removed { partuuid: String, name: String },
    #[error("no member is named '{name}'")]
    NoSuchMember { name: String },
    #[error("'{name}' is the control-plane node this join service runs on: it cannot be removed")]
    OwnNode { name: String },
    #[error("the WireGuard key {key} belongs to member '{owner}': every node makes its own")]
    KeyTaken { key: String, owner: String },
    #[error("the roster {}: {source}", path.display())]
    Mesh {
        path: PathBuf,
        #[source]
        source: veil_mesh::MeshError,
    },
    #[error("reading the roster {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the roster {} does not parse: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing the roster {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct Roster {
    path: PathBuf,
    /// Names that are taken though no joiner holds them (the control-plane node's).
    reserved: Vec<String>,
    /// State partitions no joiner may name (the control-plane node's own).
    reserved_partitions: Vec<String>,
    stored: Mutex<Stored>,
    /// The version after each write, for watches.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Roster {
    /// The roster in `dir` (empty if there is none yet); `reserved` names are the
    /// cluster's own nodes that never joined (the first control-plane node). Mesh
    /// addresses come from `plan` (the cluster's setting), or from the plan the
    /// roster was started with, which must be the same.
    pub fn load(dir: &Path, reserved: Vec<String>, plan: MeshPlan) -> Result<Roster, RosterError> {
        let path = dir.join(paths::ROSTER);
        let stored = match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str::<Stored>(&text).map_err(|source| RosterError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored {
                version: 0,
                allocator: None,
                members: Vec::new(),
                removed: Vec::new(),
            },
            Err(source) => return Err(RosterError::Read { path, source }),
        };
        let mut stored = stored;
        match &stored.allocator {
            Some(a) if *a.plan() != plan => {
                return Err(RosterError::Mesh {
                    path,
                    source: veil_mesh::MeshError::BadRoster {
                        version: stored.version,
                        reason: format!(
                            "its mesh subnet {} is not the cluster's {}",
                            a.plan().subnet(),
                            plan.subnet()
                        ),
                    },
                });
            }
            Some(_) => {}
            None => stored.allocator = Some(Allocator::new(plan)),
        }
        Ok(Roster {
            path,
            reserved,
            reserved_partitions: Vec::new(),
            changes: tokio::sync::watch::Sender::new(stored.version),
            stored: Mutex::new(stored),
        })
    }

    /// Puts the control-plane node this service runs on into the roster (once: it
    /// keeps its mesh address), so joiners get it as a peer.
    pub fn own(&self, name: &str, partuuid: &str, key: &WgKey) -> Result<Member, RosterError> {
        let mut stored = self.stored();
        if let Some(m) = stored
            .members
            .iter()
            .find(|m| m.partuuid == partuuid && m.wireguard_public_key == *key)
        {
            return Ok(m.clone());
        }
        let mut next = stored.clone_state();
        let member = next
            .place(Member {
                name: name.to_owned(),
                partuuid: partuuid.to_owned(),
                role: paths::NodeRecord::CONTROL_PLANE.into(),
                wireguard_public_key: *key,
                tpm: String::new(),
                mesh_ip: None,
                endpoint: None,
                pod_cidr: None,
            })
            .map_err(|e| self.placement_error(e))?;
        self.write(&next)?;
        *stored = next;
        Ok(member)
    }

    /// Also refuses `partuuid` to every joiner (the control-plane node's own disk).
    pub fn reserve_partition(mut self, partuuid: &str) -> Roster {
        if !partuuid.is_empty() {
            self.reserved_partitions.push(partuuid.to_ascii_lowercase());
        }
        self
    }

    /// Refuses `partuuid` to a joiner with TPM `tpm` unless it is new or already that
    /// TPM's (a member whose disk was made new joins again).
    pub fn check_partition(&self, partuuid: &str, tpm: &str) -> Result<(), RosterError> {
        let uuid = partuuid.to_ascii_lowercase();
        if self.reserved_partitions.contains(&uuid) {
            return Err(RosterError::PartitionTaken {
                partuuid: partuuid.into(),
                owner: "the control-plane node".into(),
            });
        }
        self.check_not_removed(partuuid)?;
        match self
            .stored()
            .members
            .iter()
            .find(|m| m.partuuid.eq_ignore_ascii_case(partuuid))
        {
            Some(m) if m.tpm != tpm => Err(RosterError::PartitionTaken {
                partuuid: partuuid.into(),
                owner: format!("member '{}'", m.name),
            }),
            _ => Ok(()),
        }
    }

    fn check_not_removed(&self, partuuid: &str) -> Result<(), RosterError> {
        match self
            .stored()
            .removed
            .iter()
            .find(|m| m.partuuid.eq_ignore_ascii_case(partuuid))
        {
            Some(m) => Err(RosterError::Removed {
                partuuid: partuuid.into(),
                name: m.name.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Whether the TPM `tpm` (hex SHA-256 of its EK) is a current member's.
    pub fn has_member_tpm(&self, tpm: &str) -> bool {
        !tpm.is_empty() && self.stored().members.iter().any(|m| m.tpm == tpm)
    }

    /// Drops the member `name` for good (`veil remove`): it leaves the mesh, and its
    /// partition and key are refused from now on. The control-plane node this
    /// service runs on cannot be removed. Returns the member as it was.
    pub fn remove(&self, name: &str) -> Result<Member, RosterError> {
        let mut stored = self.stored();
        let Some(i) = stored.members.iter().position(|m| m.name == name) else {
            return Err(RosterError::NoSuchMember { name: name.into() });
        };
        if self
            .reserved_partitions
            .contains(&stored.members[i].partuuid.to_ascii_lowercase())
            || self.reserved.iter().any(|r| r == name)
        {
            return Err(RosterError::OwnNode { name: name.into() });
        }
        let mut next = stored.clone_state();
        let gone = next.members.remove(i);
        next.removed.push(gone.clone());
        next.version += 1;
        self.write(&next)?;
        *stored = next;
        Ok(gone)
    }

    /// The member a rebooted node with TPM `tpm` and state partition `partuuid` is.
    pub fn rejoiner(&self, partuuid: &str, tpm: &str) -> Result<Member, RosterError> {
        self.check_not_removed(partuuid)?;
        let member = self
            .stored()
            .members
            .iter()
            .find(|m| m.partuuid.eq_ignore_ascii_case(partuuid))
            .cloned()
            .ok_or_else(|| RosterError::NotMember {
                partuuid: partuuid.into(),
            })?;
        if member.tpm != tpm {
            return Err(RosterError::PartitionTaken {
                partuuid: partuuid.into(),
                owner: format!("member '{}'", member.name),
            });
        }
        Ok(member)
    }

    fn stored(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.stored.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn placement_error(&self, p: Placement) -> RosterError {
        match p {
            Placement::KeyTaken { key, owner } => RosterError::KeyTaken { key, owner },
            Placement::Mesh(source) => RosterError::Mesh {
                path: self.path.clone(),
                source,
            },
        }
    }

    /// Every member and the version, as nodes get them.
    pub fn snapshot(&self) -> Snapshot {
        let stored = self.stored();
        Snapshot {
            version: stored.version,
            members: stored.members.clone(),
        }
    }

    /// The member whose state partition this is.
    pub fn by_partuuid(&self, partuuid: &str) -> Option<Member> {
        self.stored()
            .members
            .iter()
            .find(|m| m.partuuid == partuuid)
            .cloned()
    }

    /// Refuses `name` if another member (or a reserved node) has it.
    pub fn check_name(&self, name: &str, partuuid: &str) -> Result<(), RosterError> {
        if self.reserved.iter().any(|r| r == name) {
            return Err(RosterError::NameTaken {
                name: name.into(),
                partuuid: "the control-plane node's".into(),
            });
        }
        match self
            .stored()
            .members
            .iter()
            .find(|m| m.name == name && m.partuuid != partuuid)
        {
            Some(m) => Err(RosterError::NameTaken {
                name: name.into(),
                partuuid: m.partuuid.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Adds `member` (replacing one with its partition: a disk made new joins anew,
    /// and keeps its mesh address) and writes the roster through (synced) before it
    /// counts. Returns the member as admitted, with its mesh address.
    pub fn admit(&self, member: Member) -> Result<Member, RosterError> {
        self.check_name(&member.name, &member.partuuid)?;
        self.check_partition(&member.partuuid, &member.tpm)?;
        let mut stored = self.stored();
        let mut next = stored.clone_state();
        let admitted = next.place(member).map_err(|e| self.placement_error(e))?;
        self.write(&next)?;
        *stored = next;
        Ok(admitted)
    }

    /// A rebooted member may come from another underlay address: its peers must
    /// send there now.
    pub fn moved(&self, partuuid: &str, endpoint: SocketAddr) -> Result<(), RosterError> {
        let mut stored = self.stored();
        let Some(i) = stored.members.iter().position(|m| m.partuuid == partuuid) else {
            return Err(RosterError::NotMember {
                partuuid: partuuid.into(),
            });
        };
        if stored.members[i].endpoint == Some(endpoint) {
            return Ok(());
        }
        let mut next = stored.clone_state();
        next.members[i].endpoint = Some(endpoint);
        next.version += 1;
        self.write(&next)?;
        *stored = next;
        Ok(())
    }

    /// Gives each member the pod range `ranges` names for it (by node name), and
    /// takes it from a member `ranges` does not name (its Node is gone). A range
    /// outside `pods` (the cluster's pod network), inside the mesh subnet, or
    /// overlapping a range given to another member is refused: that member gets
    /// none, and the refusal is in what this returns. Writes (a new version) only if
    /// something changed.
    pub fn set_pod_ranges(
        &self,
        ranges: &std::collections::BTreeMap<String, Ipv4Net>,
        pods: Ipv4Net,
    ) -> Result<PodRanges, RosterError> {
        let mut stored = self.stored();
        let mut next = stored.clone_state();
        let mesh = next.allocator.as_ref().map(|a| a.plan().subnet());
        let mut refused = Vec::new();
        let mut given: Vec<(String, Ipv4Net)> = Vec::new();
        for m in &mut next.members {
            let Some(&cidr) = ranges.get(&m.name) else {
                m.pod_cidr = None;
                continue;
            };
            let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(b) || b.contains(a);
            let why = if !pods.contains(&cidr) {
                Some(format!("it is outside the pod network {pods}"))
            } else if let Some(mesh) = mesh.filter(|s| overlaps(s, &cidr)) {
                Some(format!("it overlaps the mesh subnet {mesh}"))
            } else {
                given
                    .iter()
                    .find(|(_, c)| overlaps(c, &cidr))
                    .map(|(other, c)| format!("it overlaps {c}, '{other}''s"))
            };
            match why {
                Some(why) => {
                    refused.push(format!("'{}': pod range {cidr} refused: {why}", m.name));
                    m.pod_cidr = None;
                }
                None => {
                    given.push((m.name.clone(), cidr));
                    m.pod_cidr = Some(cidr);
                }
            }
        }
        let changed = next.members != stored.members;
        if changed {
            next.version += 1;
            self.write(&next)?;
            *stored = next;
        }
        Ok(PodRanges {
            changed,
            version: stored.version,
            given,
            refused,
        })
    }

    /// Wakes every watch when the roster changes (after it is on disk).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn write(&self, stored: &Stored) -> Result<(), RosterError> {
        let err = |source| RosterError::Write {
            path: self.path.clone(),
            source,
        };
        let text =
            serde_json::to_string_pretty(stored).map_err(|e| err(std::io::Error::other(e)))?;
        paths::replace_file(&self.path, text.as_bytes()).map_err(err)?;
        self.changes.send_replace(stored.version);
        Ok(())
    }
}

/// What [`Roster::set_pod_ranges`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRanges {
    /// Whether the roster changed (and was written at a new version).
    pub changed: bool,
    pub version: u64,
    /// Each member's range, as given.
    pub given: Vec<(String, Ipv4Net)>,
    /// Each range refused, and why.
    pub refused: Vec<String>,
}

/// Why a member could not be placed.
enum Placement {
    KeyTaken { key: String, owner: String },
    Mesh(veil_mesh::MeshError),
}

impl Stored {
    fn clone_state(&self) -> Stored {
        Stored {
            version: self.version,
            allocator: self.allocator.clone(),
            members: self.members.clone(),
            removed: self.removed.clone(),
        }
    }

    /// Puts `member` in place of the one with its partition, keeping that one's mesh
    /// address or handing out a new one; refuses a key another member has.
    fn place(&mut self, mut member: Member) -> Result<Member, Placement> {
        if let Some(owner) = self.members.iter().find(|m| {
            m.wireguard_public_key == member.wireguard_public_key && m.partuuid != member.partuuid
        }) {
            return Err(Placement::KeyTaken {
                key: member.wireguard_public_key.to_string(),
                owner: owner.name.clone(),
            });
        }
        if let Some(gone) = self
            .removed
            .iter()
            .find(|m| m.wireguard_public_key == member.wireguard_public_key)
        {
            return Err(Placement::KeyTaken {
                key: member.wireguard_public_key.to_string(),
                owner: format!("{}, removed from the cluster", gone.name),
            });
        }
        let old = self.members.iter().find(|m| m.partuuid == member.partuuid);
        // A disk made new keeps its pod range too: its Node (same name) keeps it.
        member.pod_cidr = member.pod_cidr.or(old.and_then(|m| m.pod_cidr));
        let kept = old.and_then(|m| m.mesh_ip);
        member.mesh_ip = match kept {
            Some(ip) => Some(ip),
            None => {
                let allocator = self.allocator.as_mut().ok_or_else(|| {
                    Placement::Mesh(veil_mesh::MeshError::BadRoster {
                        version: self.version,
                        reason: "no mesh address allocator".into(),
                    })
                })?;
                Some(allocator.allocate().map_err(Placement::Mesh)?)
            }
        };
        self.members.retain(|m| m.partuuid != member.partuuid);
        self.members.push(member.clone());
        self.version += 1;
        Ok(member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> MeshPlan {
        MeshPlan::new("10.90.0.0/26".parse().expect("net"), &[]).expect("plan")
    }

    fn load(dir: &Path, reserved: Vec<String>) -> Result<Roster, RosterError> {
        Roster::load(dir, reserved, plan())
    }

    /// A member whose WireGuard key is made from its name (one key per name).
    fn member(name: &str, uuid: &str) -> Member {
        use sha2::Digest;
        Member {
            name: name.into(),
            partuuid: uuid.into(),
            role: "worker".into(),
            wireguard_public_key: WgKey::from_bytes(sha2::Sha256::digest(name).into()),
            tpm: "aa".into(),
            mesh_ip: None,
            endpoint: None,
            pod_cidr: None,
        }
    }

    #[test]
    fn a_partition_is_its_members_tpm_s_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roster = load(dir.path(), vec![])
            .expect("load")
            .reserve_partition("0A-CP");
        roster.admit(member("node1", "u1")).expect("admit");
        assert_eq!(roster.rejoiner("u1", "aa").expect("same TPM").name, "node1");
        let e = roster.rejoiner("U1", "bb").expect_err("another TPM");
        assert!(e.to_string().contains("belongs to member 'node1'"), "{e}");
        let e = roster.rejoiner("u9", "aa").expect_err("unknown");
        assert!(matches!(e, RosterError::NotMember { .. }), "{e}");
        let other = Member {
            tpm: "bb".into(),
            ..member("node2", "u1")
        };
        let e = roster.admit(other).expect_err("another TPM's partition");
        assert!(matches!(e, RosterError::PartitionTaken { .. }), "{e}");
        let e = roster.check_partition("0a-cp", "cc").expect_err("reserved");
        assert!(e.to_string().contains("control-plane node"), "{e}");
        assert_eq!(
            load(dir.path(), vec![])
                .expect("reload")
                .rejoiner("u1", "aa")
                .expect("kept")
                .tpm,
            "aa"
        );
    }

    #[test]
    fn names_are_unique_and_kept_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roster = load(dir.path(), vec!["node0".into()]).expect("load");
        roster.admit(member("node1", "u1")).expect("admit");
        let err = roster.admit(member("node1", "u2")).expect_err("taken");
        assert!(
            err.to_string()
                .contains("'node1' belongs to another member"),
            "{err}"
        );
        let err = roster.admit(member("node0", "u3")).expect_err("reserved");
        assert!(err.to_string().contains("control-plane"), "{err}");
        // The same partition joining again (its disk made new) replaces its entry.
        roster
            .admit(member("node1", "u1"))
            .expect("same partition, same key");
        roster
            .admit(member("node1b", "u1"))
            .expect("same partition");

        let again = load(dir.path(), vec![]).expect("reload");
        assert_eq!(
            again.by_partuuid("u1").map(|m| m.name),
            Some("node1b".into())
        );
        assert!(again.by_partuuid("u2").is_none());
    }

    #[test]
    fn a_garbled_roster_is_an_error_not_an_empty_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(paths::ROSTER), "{\"members\": 3}").expect("write");
        let err = load(dir.path(), vec![]).err().expect("garbled");
        assert!(err.to_string().contains("does not parse"), "{err}");
    }

    #[test]
    fn mesh_addresses_are_kept_by_a_member_and_never_handed_out_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roster = load(dir.path(), vec!["node0".into()]).expect("load");
        let cp = PrivateKeyFor::key("node0");
        let own = roster.own("node0", "u0", &cp).expect("own");
        assert_eq!(own.mesh_ip, Some(Ipv4Addr::new(10, 90, 0, 1)));
        let one = roster.admit(member("node1", "u1")).expect("node1");
        assert_eq!(one.mesh_ip, Some(Ipv4Addr::new(10, 90, 0, 2)));
        // Its disk made new (a new key): the same address.
        let again = roster
            .admit(Member {
                wireguard_public_key: PrivateKeyFor::key("node1-new"),
                ..member("node1", "u1")
            })
            .expect("node1 again");
        assert_eq!(again.mesh_ip, one.mesh_ip);
        let v = roster.snapshot().version;
        // A restarted service: the same members, addresses, version; the next
        // address is new, and its own entry is not added twice.
        let roster = load(dir.path(), vec!["node0".into()]).expect("reload");
        roster.own("node0", "u0", &cp).expect("own again");
        assert_eq!(roster.snapshot().version, v);
        let two = roster.admit(member("node2", "u2")).expect("node2");
        assert_eq!(two.mesh_ip, Some(Ipv4Addr::new(10, 90, 0, 3)));
        let snap = roster.snapshot();
        assert_eq!(snap.version, v + 1);
        let mut ips: Vec<_> = snap.members.iter().filter_map(|m| m.mesh_ip).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 3, "one address per member: {snap:?}");
    }

    #[test]
    fn a_key_another_member_holds_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roster = load(dir.path(), vec![]).expect("load");
        roster.admit(member("node1", "u1")).expect("node1");
        let before = roster.snapshot();
        let copycat = Member {
            wireguard_public_key: member("node1", "u1").wireguard_public_key,
            ..member("node2", "u2")
        };
        let e = roster.admit(copycat).expect_err("node1's key");
        assert!(
            matches!(&e, RosterError::KeyTaken { owner, .. } if owner == "node1"),
            "{e}"
        );
        assert_eq!(roster.snapshot(), before);
        assert_eq!(load(dir.path(), vec![]).expect("reload").snapshot(), before);
    }

    #[test]
    fn a_member_that_moves_changes_the_version_and_one_that_stays_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roster = load(dir.path(), vec![]).expect("load");
        let at: SocketAddr = "10.76.0.5:51820".parse().expect("addr");
        roster
            .admit(Member {
                endpoint: Some(at),
                ..member("node1", "u1")
            })
            .expect("node1");
        let v = roster.snapshot().version;
        roster.moved("u1", at).expect("same place");
        assert_eq!(roster.snapshot().version, v);
        let moved: SocketAddr = "10.76.0.9:51820".parse().expect("addr");
        roster.moved("u1", moved).expect("moved");
        let snap = roster.snapshot();
        assert_eq!(snap.version, v + 1);
        assert_eq!(snap.members[0].endpoint, Some(moved));
        let e = roster.moved("u9", moved).expect_err("unknown");
        assert!(matches!(e, RosterError::NotMember { .. }), "{e}");
    }

    #[test]
    fn a_roster_kept_for_another_mesh_subnet_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        load(dir.path(), vec![])
            .expect("load")
            .admit(member("node1", "u1"))
            .expect("node1");
        let other = MeshPlan::new("10.91.0.0/24".parse().expect("net"), &[]).expect("plan");
        let e = Roster::load(dir.path(), vec![], other)
            .err()
            .expect("other subnet");
        assert!(e.to_string().contains("10.90.0.0/26"), "{e}");
    }

    /// Public keys for tests, one per label.
    struct PrivateKeyFor;

    impl PrivateKeyFor {
        fn key(label: &str) -> WgKey {
            use sha2::Digest;
            veil_mesh::key::PrivateKey::from_bytes(sha2::Sha256::digest(label).into()).public()
        }
    }

    #[test]
    fn pod_ranges_follow_the_nodes_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roster = load(dir.path(), vec![]).expect("load");
        for (n, u) in [("node1", "u1"), ("node2", "u2"), ("node3", "u3")] {
            roster.admit(member(n, u)).expect(n);
        }
        let pods: Ipv4Net = "10.244.0.0/16".parse().expect("pods");
        // Where these test members (no endpoint of their own) are reached.
        let at: SocketAddr = "10.76.0.9:51820".parse().expect("addr");
        let net = |s: &str| -> Ipv4Net { s.parse().expect("net") };
        let v0 = roster.snapshot().version;
        let ranges = [
            ("node1".to_owned(), net("10.244.1.0/24")),
            ("node2".to_owned(), net("10.244.2.0/24")),
            ("stranger".to_owned(), net("10.244.9.0/24")),
        ]
        .into();
        let done = roster.set_pod_ranges(&ranges, pods).expect("set");
        assert!(done.changed && done.version == v0 + 1, "{done:?}");
        assert!(done.refused.is_empty(), "{done:?}");
        let peers = roster.snapshot().view(Some(at), None).peers;
        let range_of = |name: &str| {
            peers
                .iter()
                .find(|p| p.name == name)
                .and_then(|p| p.pod_cidr)
        };
        assert_eq!(range_of("node1"), Some(net("10.244.1.0/24")));
        assert_eq!(range_of("node3"), None);
        // The same again: no new version. Kept across a restart.
        assert!(!roster.set_pod_ranges(&ranges, pods).expect("again").changed);
        let back = load(dir.path(), vec![]).expect("reload").snapshot();
        assert_eq!(back, roster.snapshot());

        // Outside the pod network, in the mesh subnet, or on another's range: refused,
        // and that member gets none; the others keep theirs.
        for (bad, says) in [
            ("10.245.3.0/24", "outside the pod network"),
            ("10.244.1.128/25", "'node1''s"),
        ] {
            let mut r = ranges.clone();
            r.insert("node3".into(), net(bad));
            let done = roster.set_pod_ranges(&r, pods).expect("set");
            assert!(!done.changed, "{bad}: {done:?}");
            assert_eq!(done.refused.len(), 1, "{bad}: {done:?}");
            assert!(
                done.refused[0].contains(says) && done.refused[0].contains("node3"),
                "{done:?}"
            );
        }
        let wide: Ipv4Net = "10.0.0.0/8".parse().expect("wide");
        let mut r = ranges.clone();
        r.insert("node3".into(), net("10.90.0.0/24"));
        let done = roster.set_pod_ranges(&r, wide).expect("set");
        assert!(done.refused[0].contains("mesh subnet"), "{done:?}");

        // A Node that is gone takes its range from the roster.
        let mut r = ranges.clone();
        r.remove("node2");
        let done = roster.set_pod_ranges(&r, pods).expect("set");
        assert!(done.changed, "{done:?}");
        let peers = roster.snapshot().view(Some(at), None).peers;
        assert_eq!(
            peers
                .iter()
                .find(|p| p.name == "node2")
                .and_then(|p| p.pod_cidr),
            None
        );
    }
}

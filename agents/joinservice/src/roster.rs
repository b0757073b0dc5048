//! The members the join service admitted, kept on the encrypted state disk
//! ([`paths::ROSTER`]): each one's name, state partition, TPM and WireGuard key. Names
//! are unique: a second node cannot take a member's name (its Kubernetes identity).
//!
//! A disk key goes only to the node that joined with that disk: each member is bound
//! to its TPM (the SHA-256 of the EK its attestation key was activated against), and
//! a member that reboots is known by its partition *and* that TPM (Rejoin). So an
//! attested node cannot ask for another member's partition (by Join or Rejoin), nor
//! for the control-plane node's own, and a copy of a member's disk attached to a
//! fresh VM (another vTPM) stays locked. What it costs: a member whose vTPM is lost
//! (a VM recreated rather than rebooted) cannot Rejoin and must join anew with a
//! new disk. It does not stop the same VM from being booted with an older copy of
//! its own disk (same TPM); that rollback is not covered here.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use veil_protocol::paths;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Member {
    pub name: String,
    pub partuuid: String,
    pub role: String,
    /// base64 of the 32-byte X25519 public key the member made.
    pub wireguard_public_key: String,
    /// Hex SHA-256 of the member's EK public area: its TPM.
    pub tpm: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Stored {
    members: Vec<Member>,
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
    members: Mutex<Vec<Member>>,
}

impl Roster {
    /// The roster in `dir` (empty if there is none yet); `reserved` names are the
    /// cluster's own nodes that never joined (the first control-plane node).
    pub fn load(dir: &Path, reserved: Vec<String>) -> Result<Roster, RosterError> {
        let path = dir.join(paths::ROSTER);
        let stored = match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str::<Stored>(&text).map_err(|source| RosterError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(source) => return Err(RosterError::Read { path, source }),
        };
        Ok(Roster {
            path,
            reserved,
            reserved_partitions: Vec::new(),
            members: Mutex::new(stored.members),
        })
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
        match self
            .members()
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

    /// The member a rebooted node with TPM `tpm` and state partition `partuuid` is.
    pub fn rejoiner(&self, partuuid: &str, tpm: &str) -> Result<Member, RosterError> {
        let member = self
            .members()
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

    fn members(&self) -> std::sync::MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The member whose state partition this is.
    pub fn by_partuuid(&self, partuuid: &str) -> Option<Member> {
        self.members()
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
            .members()
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

    /// Adds `member` (replacing one with its partition: a disk made new joins anew)
    /// and writes the roster through (synced) before it counts.
    pub fn admit(&self, member: Member) -> Result<(), RosterError> {
        self.check_name(&member.name, &member.partuuid)?;
        self.check_partition(&member.partuuid, &member.tpm)?;
        let mut members = self.members();
        let mut next = members.clone();
        next.retain(|m| m.partuuid != member.partuuid);
        next.push(member);
        self.write(&next)?;
        *members = next;
        Ok(())
    }

    fn write(&self, members: &[Member]) -> Result<(), RosterError> {
        use std::io::Write;
        let err = |source| RosterError::Write {
            path: self.path.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(&Stored {
            members: members.to_vec(),
        })
        .map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(err)?;
        file.write_all(text.as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, uuid: &str) -> Member {
        Member {
            name: name.into(),
            partuuid: uuid.into(),
            role: "worker".into(),
            wireguard_public_key: "AAAA".into(),
            tpm: "aa".into(),
        }
    }

    #[test]
    fn a_partition_is_its_members_tpm_s_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let roster = Roster::load(dir.path(), vec![])
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
            Roster::load(dir.path(), vec![])
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
        let roster = Roster::load(dir.path(), vec!["node0".into()]).expect("load");
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
            .admit(member("node1b", "u1"))
            .expect("same partition");

        let again = Roster::load(dir.path(), vec![]).expect("reload");
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
        let err = Roster::load(dir.path(), vec![]).err().expect("garbled");
        assert!(err.to_string().contains("does not parse"), "{err}");
    }
}

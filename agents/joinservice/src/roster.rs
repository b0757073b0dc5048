//! The members the join service admitted, kept on the encrypted state disk
//! ([`paths::ROSTER`]): each one's name, state partition and WireGuard key. Names are
//! unique: a second node cannot take a member's name (its Kubernetes identity), and a
//! member that reboots is known by its partition (Rejoin).

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
            members: Mutex::new(stored.members),
        })
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
        }
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

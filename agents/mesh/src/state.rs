//! What a node keeps of the mesh on its encrypted state disk (`mesh.json`, mode
//! 0600): its mesh subnet and address, the mesh secret, and the roster it was last
//! given. The node's mesh follower applies this file to `wg0`; a worker's ticket writes
//! it, the control-plane node's join service rewrites it whenever its roster changes.

use std::net::Ipv4Addr;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::MeshError;
use crate::address::MeshPlan;
use crate::peers::RosterView;
use crate::psk::MeshSecret;

pub struct MeshState {
    pub plan: MeshPlan,
    pub address: Ipv4Addr,
    pub secret: MeshSecret,
    pub roster: RosterView,
}

impl std::fmt::Debug for MeshState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshState")
            .field("subnet", &self.plan.subnet())
            .field("address", &self.address)
            .field("roster", &self.roster)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Stored {
    subnet: String,
    address: Ipv4Addr,
    /// Base64 of the 32-byte mesh secret.
    mesh_secret: String,
    roster: RosterView,
}

impl Drop for Stored {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.mesh_secret.zeroize();
    }
}

impl MeshState {
    /// The file's contents: JSON, the secret in it (the caller writes it 0600 on the
    /// state disk).
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let stored = Stored {
            subnet: self.plan.subnet().to_string(),
            address: self.address,
            mesh_secret: B64.encode(self.secret.as_bytes()),
            roster: self.roster.clone(),
        };
        // Plain strings, numbers and addresses: serialization cannot fail.
        Zeroizing::new(serde_json::to_vec(&stored).unwrap_or_default())
    }

    /// Reads and checks `path`: the address in the subnet, a 32-byte secret.
    pub fn read(path: &Path) -> Result<MeshState, MeshError> {
        let bad = |reason: String| MeshError::BadState {
            path: path.display().to_string(),
            reason,
        };
        let text = Zeroizing::new(std::fs::read(path).map_err(|e| bad(e.to_string()))?);
        let stored: Stored = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        let subnet = stored
            .subnet
            .parse()
            .map_err(|e| bad(format!("the subnet '{}': {e}", stored.subnet)))?;
        let plan = MeshPlan::new(subnet, &[]).map_err(|e| bad(e.to_string()))?;
        if !plan.holds(stored.address) {
            return Err(bad(format!(
                "the address {} is not in the subnet {subnet}",
                stored.address
            )));
        }
        let secret = Zeroizing::new(
            B64.decode(&stored.mesh_secret)
                .map_err(|e| bad(format!("the mesh secret: {e}")))?,
        );
        let secret: [u8; 32] = secret.as_slice().try_into().map_err(|_| {
            bad(format!(
                "the mesh secret has {} bytes, not 32",
                secret.len()
            ))
        })?;
        Ok(MeshState {
            plan,
            address: stored.address,
            secret: MeshSecret::new(Zeroizing::new(secret)),
            roster: stored.roster.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_state_reads_back_and_a_damaged_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mesh.json");
        let state = MeshState {
            plan: MeshPlan::new("10.90.0.0/16".parse().expect("net"), &[]).expect("plan"),
            address: Ipv4Addr::new(10, 90, 0, 2),
            secret: MeshSecret::new(Zeroizing::new([5; 32])),
            roster: RosterView {
                version: 3,
                peers: vec![],
            },
        };
        std::fs::write(&path, &*state.to_json()).expect("write");
        let back = MeshState::read(&path).expect("read");
        assert_eq!(back.address, state.address);
        assert_eq!(back.roster, state.roster);
        assert_eq!(back.secret.as_bytes(), &[5; 32]);

        let text = String::from_utf8(state.to_json().to_vec()).expect("utf8");
        std::fs::write(&path, text.replace("10.90.0.2", "10.91.0.2")).expect("write");
        let e = MeshState::read(&path).expect_err("outside the subnet");
        assert!(
            e.to_string().contains("mesh.json") && e.to_string().contains("10.91.0.2"),
            "{e}"
        );
        std::fs::write(&path, "{").expect("write");
        assert!(MeshState::read(&path).is_err());
    }
}

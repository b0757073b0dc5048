//! The WireGuard mesh that carries all traffic between Veil nodes (design: issue 11).
//!
//! Peers come only from the join service's roster of attested nodes, never from the
//! Kubernetes API or a discovery service: whoever can write Node objects cannot add or
//! swap a peer. This crate holds the parts every node and the join service agree on:
//!
//! - [`address`]: mesh addresses from the cluster's mesh subnet, clear of the pod and
//!   Service networks and of the underlay, never handed out twice;
//! - [`psk`]: a WireGuard preshared key for each pair of nodes, derived from the
//!   cluster's mesh secret (a post-quantum layer over X25519);
//! - [`peers`]: a node's peer table and the checks a roster update passes before it
//!   changes anything (versions only move forward; keys, addresses and pod ranges are
//!   each one node's);
//! - [`wg`]: that table on a WireGuard interface (`wg0`);
//! - [`firewall`]: the fail-closed rules: between nodes only WireGuard and aTLS on
//!   the underlay;
//! - [`key`]: the node's own private key;
//! - [`state`]: what the node keeps of the mesh on its state disk.

pub mod address;
pub mod firewall;
pub mod key;
pub mod peers;
pub mod psk;
pub mod state;
pub mod wg;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MeshError {
    #[error("the mesh subnet {subnet} overlaps the {what} {other}")]
    Overlap {
        subnet: String,
        what: String,
        other: String,
    },
    #[error("the mesh subnet '{text}' is not an IPv4 CIDR: {reason}")]
    BadSubnet { text: String, reason: String },
    #[error("the mesh subnet {subnet} is too small: a /{max_prefix} or larger is needed")]
    SubnetTooSmall { subnet: String, max_prefix: u8 },
    #[error("the mesh subnet {subnet} has no address left ({hosts} handed out, none reused)")]
    Exhausted { subnet: String, hosts: u32 },
    #[error("'{text}' is not a WireGuard public key (44 characters of base64, 32 bytes): {reason}")]
    BadKey { text: String, reason: String },
    #[error("the WireGuard private key in {what} is not 32 bytes of base64: {reason}")]
    BadPrivateKey { what: String, reason: String },
    #[error("a node cannot pair with itself: both keys are {key}")]
    SamePeer { key: String },
    #[error(
        "roster version {got} is not newer than the version {have} this node has: refused (a replayed or reordered update)"
    )]
    StaleRoster { got: u64, have: u64 },
    #[error("roster version {version}: {reason}; nothing was changed")]
    BadRoster { version: u64, reason: String },
    #[error("the node's mesh state {path}: {reason}")]
    BadState { path: String, reason: String },
    #[error("WireGuard interface '{interface}': {reason}")]
    Device { interface: String, reason: String },
}

/// What WireGuard adds to each packet over an IPv6 underlay (40 IP + 8 UDP + 32
/// WireGuard), the larger of the two underlays: `wg0`'s MTU is the underlay's minus
/// this, so nothing is fragmented silently.
pub const WIREGUARD_OVERHEAD: u32 = 80;

/// The MTU for `wg0` on an underlay of `underlay_mtu`.
pub fn mesh_mtu(underlay_mtu: u32) -> u32 {
    underlay_mtu.saturating_sub(WIREGUARD_OVERHEAD)
}

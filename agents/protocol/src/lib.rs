//! The gRPC services on a Veil node's agent port ([`AGENT_PORT`]) and their transport.
//!
//! The services are defined in `proto/*.proto` and generated with tonic/prost ([`pb`]):
//! attestation (TPM activation, node facts) and bootstrap (Init, Recover).
//! One TCP port carries two kinds of connection, told apart by their first byte
//! ([`server::split`]):
//!
//! - **plain HTTP/2** for [`pb::attestation::activation_server::Activation`] only: a verifier gets
//!   the node's TPM identity and has its AK activated against the certified EK. That
//!   needs no secure channel (only the TPM holding the EK can answer, and the answer
//!   is bound to the AK's name), and the verifier needs a trusted AK *before* it can
//!   check the quote in an aTLS handshake;
//! - **aTLS** (veil-atls) for every other service: the server's certificate carries
//!   evidence bound to the client's nonce and the TLS key, so no call reaches the
//!   node, and no answer reaches the client, before the node is verified. Handlers
//!   read who the peer is from [`server::PeerInfo`] in the request's extensions.

pub mod activation;
pub mod client;
mod convert;
pub mod launch;
pub mod paths;
pub mod secrets;
pub mod server;

/// Generated messages, clients and servers (`proto/*.proto`).
pub mod pb {
    /// `proto/attestation.proto`: TPM activation (plain) and node facts (aTLS).
    pub mod attestation {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("veil.attestation.v1");
    }
    /// `proto/bootstrap.proto`: Init and Recover (aTLS).
    pub mod bootstrap {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("veil.bootstrap.v1");
    }
    /// `proto/join.proto`: joining a cluster through a control-plane node's join
    /// service (activation plain, Join/Rejoin over mutual aTLS).
    pub mod join {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/join/veil.join.v1.rs"));
    }
}

use std::time::Duration;

use thiserror::Error;

/// The node's agent port (attestation, Init, Recover), TCP.
pub const AGENT_PORT: u16 = 7443;

/// A control-plane node's join port (the join service), TCP.
pub const JOIN_PORT: u16 = 7444;

/// Largest message either side decodes (a peer cannot make us allocate more).
pub const MAX_MESSAGE: usize = 1 << 20;

/// How long a connection may take to say what it is and finish its aTLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error("cannot connect to {node}: {source}")]
    Connect {
        node: String,
        #[source]
        source: std::io::Error,
    },
    #[error("aTLS handshake with {node} failed: {source}")]
    Atls {
        node: String,
        #[source]
        source: veil_atls::AtlsError,
    },
    #[error("gRPC channel to {node} failed: {source}")]
    Channel {
        node: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{node} timed out after {secs} s while {what}")]
    Timeout {
        node: String,
        what: &'static str,
        secs: u64,
    },
}

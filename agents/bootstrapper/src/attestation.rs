//! The node's attestation endpoint on the agent port (services: veil-protocol's
//! `proto/attestation.proto`): a verifier gets the TPM's identity and has its AK
//! activated over plain HTTP/2, then calls the Attestation service over one-way aTLS,
//! whose handshake carries a quote bound to its nonce and the TLS key. Nothing secret
//! is served here.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use veil_atls::{AttesterIssuer, ClientAuth, EvidenceIssuer};
use veil_attest::tpm::{TpmAttester, TpmAttesterConfig};
use veil_protocol::MAX_MESSAGE;
use veil_protocol::pb::bootstrap::bootstrap_server::BootstrapServer;

use crate::bootstrap::{BootstrapService, Node};
use crate::join::JoinConfig;
use veil_protocol::pb::attestation::activation_server::ActivationServer;
use veil_protocol::pb::attestation::attestation_server::{Attestation, AttestationServer};
use veil_protocol::pb::attestation::{GetNodeInfoRequest, NodeInfo};

use veil_protocol::activation::ActivationService;
pub use veil_protocol::activation::SharedTpm;

struct AttestationService {
    platform: String,
}

#[tonic::async_trait]
impl Attestation for AttestationService {
    async fn get_node_info(
        &self,
        request: Request<GetNodeInfoRequest>,
    ) -> Result<Response<NodeInfo>, Status> {
        let peer = request
            .extensions()
            .get::<veil_protocol::server::PeerInfo>()
            .and_then(|p| p.addr);
        tracing::info!(?peer, "attested to a verifier");
        Ok(Response::new(NodeInfo {
            platform: self.platform.clone(),
            bootstrapper_version: env!("CARGO_PKG_VERSION").into(),
        }))
    }
}

/// Serves the agent port on `listener` until it fails: attestation, and Bootstrap
/// (Init/Recover) when there is a `node` whose state disk may be touched. The aTLS
/// side presents `issuer`'s evidence (the TPM's, or on a cloud its own kind).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tpm: SharedTpm,
    issuer: Arc<dyn EvidenceIssuer>,
    platform: &str,
    node: Option<Node>,
) -> Result<()> {
    let (plain, atls) =
        veil_protocol::server::split(listener, issuer, ClientAuth::Anonymous, Default::default());
    let bootstrap = node.map(|node| {
        BootstrapServer::new(BootstrapService::new(node)).max_decoding_message_size(MAX_MESSAGE)
    });
    let activation =
        ActivationServer::new(ActivationService { tpm }).max_decoding_message_size(MAX_MESSAGE);
    let attestation = AttestationServer::new(AttestationService {
        platform: platform.into(),
    })
    .max_decoding_message_size(MAX_MESSAGE);
    let plain = Server::builder()
        .add_service(activation)
        .serve_with_incoming(plain);
    let atls = Server::builder()
        .add_service(attestation)
        .add_optional_service(bootstrap)
        .serve_with_incoming(atls);
    tokio::try_join!(plain, atls).context("serving the agent port")?;
    Ok(())
}

/// Serves on `listener` from a background thread that first opens the node's TPM.
///
/// Creating the EK and AK takes seconds under emulation, and nothing needs them before
/// the first verifier: connections wait in the listen backlog meanwhile, so the node
/// can report READY at once. A TPM that cannot be opened ends the process (the unit
/// fails and restarts) rather than leaving a node that can never be attested.
///
/// With a `root_dev` (the verity root's `major:minor`) the node serves Init and
/// Recover, and with a `join` configuration also tries to join meanwhile; once
/// admitted it brings up Kubernetes (`host`: the root holding fw_cfg, and the node's
/// address among the nodes if it is fixed).
pub fn start(
    config: TpmAttesterConfig,
    listener: std::net::TcpListener,
    root_dev: Option<String>,
    join: Option<JoinConfig>,
    host: (std::path::PathBuf, Option<ipnet::Ipv4Net>),
    launch: veil_protocol::launch::LaunchConfig,
) -> Result<()> {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    listener
        .set_nonblocking(true)
        .context("making the agent port's listener non-blocking")?;
    std::thread::Builder::new()
        .name("attestation".into())
        .spawn(move || {
            let fail = |what: String| -> ! {
                tracing::error!("{what}");
                eprintln!("veil-attestation-error {what}");
                std::process::exit(1);
            };
            let mut attester = TpmAttester::open(&config).unwrap_or_else(|e| {
                fail(format!(
                    "opening the TPM ({}) for attestation: {e}",
                    config.tcti
                ))
            });
            // Before any verifier sees a quote, and before Init is served.
            match crate::launch::measure(&mut attester, &launch) {
                Ok(extended) => println!(
                    "veil-launch-config {} pcr={} init-secret-hash={} cluster-id={}",
                    if extended {
                        "measured"
                    } else {
                        "measured-already"
                    },
                    veil_protocol::launch::LAUNCH_PCR,
                    launch
                        .init_secret_hash
                        .map_or("none".into(), |h| crate::hex_lower(&h)),
                    launch
                        .cluster_id
                        .map_or("none".into(), |h| crate::hex_lower(&h)),
                ),
                Err(e) => fail(format!("measuring the launch configuration: {e}")),
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("agent-port")
                .enable_all()
                .build()
                .unwrap_or_else(|e| fail(format!("starting the async runtime: {e}")));
            let served = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .context("registering the agent port's listener")?;
                tracing::info!(port, "attestation endpoint serving");
                let tpm: SharedTpm = Arc::new(AttesterIssuer(Mutex::new(attester)));
                // On a cloud's CVM the cloud's own evidence names the vTPM's AK: that
                // is what verifiers get on this port.
                let presented = veil_cloud::presented(&config, tpm.clone())
                    .await
                    .unwrap_or_else(|e| fail(format!("the cloud vTPM's evidence: {e:#}")));
                if presented.from_cloud {
                    println!("veil-attestation evidence={}", presented.platform);
                }
                let node = root_dev.map(|dev| {
                    Node::new(tpm.clone(), dev)
                        .with_kubernetes(host.0, host.1)
                        .with_launch(launch)
                });
                if let (Some(node), Some(mut join)) = (&node, join) {
                    // The join service gets what verifiers get here when that needs
                    // no activation (veil_cloud::Presented::without_activation).
                    join.cloud_evidence = presented
                        .without_activation
                        .then(|| presented.issuer.clone());
                    tokio::spawn(crate::join::run(node.clone(), join));
                }
                serve(listener, tpm, presented.issuer, presented.platform, node).await
            });
            if let Err(e) = served {
                fail(format!("the attestation endpoint stopped: {e:#}"));
            }
        })
        .context("starting the attestation thread")?;
    Ok(())
}

//! The attestation endpoint on the agent port, served by the real code on a real
//! swtpm: which service answers on which kind of connection, and that bad clients
//! are refused without harming the next one.

#[path = "../../attest/tests/support/mod.rs"]
mod support;

use std::net::TcpListener;
use std::sync::Arc;

use support::{LocalCa, Swtpm};
use tokio::io::AsyncWriteExt;
use veil_atls::VerifierValidator;
use veil_attest::tpm::{AkIdentity, TpmAttesterConfig, TpmVerifier};
use veil_protocol::pb::attestation::activation_client::ActivationClient;
use veil_protocol::pb::attestation::attestation_client::AttestationClient;
use veil_protocol::pb::attestation::{ActivateRequest, GetIdentityRequest, GetNodeInfoRequest};

struct Node {
    _tpm: Swtpm,
    addr: String,
    ca: &'static LocalCa,
}

fn node() -> Node {
    let ca = LocalCa::shared();
    let tpm = Swtpm::start(ca);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let mut config = TpmAttesterConfig::with_tcti(tpm.tcti());
    config.event_log = None;
    config.systemd_log = None;
    veil_bootstrapper::attestation::start(
        config,
        listener,
        None,
        None,
        ("/".into(), None),
        Default::default(),
    )
    .expect("start endpoint");
    Node {
        _tpm: tpm,
        addr,
        ca,
    }
}

/// A verifier that has activated the node's AK, through the node's Activation service.
async fn activated_verifier(n: &Node) -> TpmVerifier {
    let mut verifier = TpmVerifier::new(n.ca.trust());
    let channel = veil_protocol::client::plain(&n.addr)
        .await
        .expect("plain channel");
    let mut activation = ActivationClient::new(channel);
    let identity: AkIdentity = activation
        .get_identity(GetIdentityRequest {})
        .await
        .expect("identity")
        .into_inner()
        .into();
    let (challenge, pending) = verifier.challenge(&identity).expect("challenge");
    let secret = activation
        .activate(ActivateRequest::from(challenge))
        .await
        .expect("activate")
        .into_inner()
        .secret;
    verifier.add_trusted_ak(pending.finish(&secret).expect("activated"));
    verifier
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_info_is_served_over_atls_only() {
    let n = node();
    let verifier = activated_verifier(&n).await;

    // In the clear only activation is served.
    let plain = veil_protocol::client::plain(&n.addr)
        .await
        .expect("plain channel");
    let status = AttestationClient::new(plain)
        .get_node_info(GetNodeInfoRequest {})
        .await
        .expect_err("Attestation must not answer in the clear");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status}");

    let (channel, verified) =
        veil_protocol::client::atls(&n.addr, None, Arc::new(VerifierValidator(verifier)))
            .await
            .expect("aTLS channel");
    assert_eq!(verified.pcrs.len(), 16);
    let info = AttestationClient::new(channel)
        .get_node_info(GetNodeInfoRequest {})
        .await
        .expect("node info")
        .into_inner();
    assert_eq!(info.platform, "tpm");
    assert_eq!(info.bootstrapper_version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unactivated_verifier_is_refused_and_garbage_harms_no_one() {
    let n = node();
    // Without activation the node's AK is unknown: the handshake fails, naming why.
    let err = veil_protocol::client::atls(
        &n.addr,
        None,
        Arc::new(VerifierValidator(TpmVerifier::new(n.ca.trust()))),
    )
    .await
    .map(|_| ())
    .expect_err("an AK nobody activated must not be trusted");
    assert!(err.to_string().to_lowercase().contains("activat"), "{err}");

    // A TLS record header followed by junk, and a connection that closes at once.
    let mut junk = tokio::net::TcpStream::connect(&n.addr)
        .await
        .expect("connect");
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .await
        .expect("write junk");
    drop(junk);
    drop(
        tokio::net::TcpStream::connect(&n.addr)
            .await
            .expect("connect"),
    );

    // The endpoint still serves an honest verifier.
    let verifier = activated_verifier(&n).await;
    let (channel, _) =
        veil_protocol::client::atls(&n.addr, None, Arc::new(VerifierValidator(verifier)))
            .await
            .expect("aTLS after bad clients");
    AttestationClient::new(channel)
        .get_node_info(GetNodeInfoRequest {})
        .await
        .expect("node info");
}

//! The Bootstrap service's refusals, called directly on a real swtpm: they happen
//! before any disk is touched (these tests run on a host, whose disks must never be
//! looked at, let alone formatted).

#[path = "../../attest/tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};

use support::{LocalCa, Swtpm};
use tonic::Request;
use veil_atls::AttesterIssuer;
use veil_attest::tpm::{TpmAttester, TpmAttesterConfig};
use veil_bootstrapper::bootstrap::ProgressStream;
use veil_bootstrapper::bootstrap::{BootstrapService, CLUSTER_PCR, Node};
use veil_protocol::pb::bootstrap::bootstrap_server::Bootstrap;
use veil_protocol::pb::bootstrap::{InitRequest, KubernetesSettings, RecoverRequest};

/// The refusal, whether the call itself failed or its stream ended in an error.
async fn refusal(answer: Result<tonic::Response<ProgressStream>, tonic::Status>) -> tonic::Status {
    use tokio_stream::StreamExt;
    let mut stream = match answer {
        Err(status) => return status,
        Ok(r) => r.into_inner(),
    };
    while let Some(item) = stream.next().await {
        if let Err(status) = item {
            return status;
        }
    }
    panic!("the call succeeded")
}

fn service(tpm: &Swtpm, root_dev: &str) -> (BootstrapService, Arc<AttesterIssuer<TpmAttester>>) {
    let mut config = TpmAttesterConfig::with_tcti(tpm.tcti());
    config.event_log = None;
    config.systemd_log = None;
    let att = Arc::new(AttesterIssuer(Mutex::new(
        TpmAttester::open(&config).expect("open swtpm"),
    )));
    (
        BootstrapService::new(Node::new(att.clone(), root_dev.into())),
        att,
    )
}

fn init(secret: Vec<u8>) -> Request<InitRequest> {
    Request::new(InitRequest {
        master_secret: secret,
        salt: vec![2; 32],
        reference_measurements: REFERENCE.into(),
        state_disk_integrity: false,
        platform_policy: String::new(),
        kubernetes: None,
        admin_kubeconfig: false,
    })
}

/// A reference measurements file as `veil measure --output json` writes it.
const REFERENCE: &str = r#"{"pcrs":{"4":{"expected":"0000000000000000000000000000000000000000000000000000000000000000","warnOnly":false}},
  "image":{"ukiSha256":"0000000000000000000000000000000000000000000000000000000000000000","roothash":"0000000000000000000000000000000000000000000000000000000000000000","osRelease":{},"kernelVersion":"test"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joined_a_cluster_refuses_init_and_recover() {
    let tpm = Swtpm::start(LocalCa::shared());
    // A device number that exists nowhere: reaching the disk step would fail loudly.
    let (svc, att) = service(&tpm, "4095:4095");
    att.0
        .lock()
        .expect("tpm")
        .extend_pcr(CLUSTER_PCR, &[0x77; 32])
        .expect("extend PCR 15");

    let status = refusal(svc.init(init(vec![1; 32])).await).await;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
    assert!(
        status.message().contains("already belongs to a cluster"),
        "{status}"
    );
    let status = refusal(
        svc.recover(Request::new(RecoverRequest {
            master_secret: vec![1; 32],
            salt: vec![2; 32],
            admin_kubeconfig: false,
        }))
        .await,
    )
    .await;
    assert!(status.message().contains("Recover refused"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_secrets_and_a_missing_disk_are_clear_errors() {
    let tpm = Swtpm::start(LocalCa::shared());
    let (svc, _att) = service(&tpm, "4095:4095");
    let status = refusal(svc.init(init(vec![1; 31])).await).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(status.message().contains("31 bytes"), "{status}");

    // Init must bring reference measurements (the node's join service needs them).
    let mut request = init(vec![1; 32]);
    request.get_mut().reference_measurements.clear();
    let status = refusal(svc.init(request).await).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(
        status.message().contains("no reference measurements"),
        "{status}"
    );
    let mut request = init(vec![1; 32]);
    request.get_mut().reference_measurements = "{\"pcrs\": 4}".into();
    let status = refusal(svc.init(request).await).await;
    assert!(status.message().contains("do not parse"), "{status}");

    let mut request = init(vec![1; 32]);
    request.get_mut().platform_policy = r#"{"sevSnp": {"product": "rome"}}"#.into();
    let status = refusal(svc.init(request).await).await;
    assert!(
        status
            .message()
            .contains("the Init request's platform policy is not a Veil platform policy"),
        "{status}"
    );
    assert!(
        status.message().contains("unknown variant `rome`"),
        "{status}"
    );

    // Kubernetes settings are checked before anything is touched, and named.
    let mut request = init(vec![1; 32]);
    request.get_mut().kubernetes = Some(KubernetesSettings {
        pod_subnet: "10.96.0.0/16".into(),
        ..Default::default()
    });
    let status = refusal(svc.init(request).await).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(
        status.message().contains("Kubernetes settings") && status.message().contains("overlap"),
        "{status}"
    );
    let mut request = init(vec![1; 32]);
    request.get_mut().kubernetes = Some(KubernetesSettings {
        registry_cas: [("10.0.2.2:5000".to_owned(), "not a certificate".to_owned())].into(),
        ..Default::default()
    });
    let status = refusal(svc.init(request).await).await;
    assert!(
        status.message().contains("registry '10.0.2.2:5000'"),
        "{status}"
    );

    // PCR 15 is clear, so the node looks for its state disk next; there is none.
    let status = refusal(svc.init(init(vec![1; 32])).await).await;
    assert!(
        status.message().contains("finding the state disk"),
        "{status}"
    );
    assert!(status.message().contains("4095:4095"), "{status}");
}

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
use veil_keys::InitSecret;
use veil_protocol::launch::{LAUNCH_PCR, LaunchConfig};
use veil_protocol::pb::bootstrap::bootstrap_server::Bootstrap;
use veil_protocol::pb::bootstrap::{InitRequest, KubernetesSettings, RecoverRequest};

/// The operator's init secret in these tests; nodes are launched with its hash.
fn operators() -> InitSecret {
    InitSecret::from_bytes(&[0x5e; 32]).expect("init secret")
}

fn launched_by_operator() -> LaunchConfig {
    LaunchConfig {
        init_secret_hash: Some(operators().hash()),
        cluster_id: None,
    }
}

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
    launched(tpm, root_dev, launched_by_operator())
}

fn launched(
    tpm: &Swtpm,
    root_dev: &str,
    launch: LaunchConfig,
) -> (BootstrapService, Arc<AttesterIssuer<TpmAttester>>) {
    let mut config = TpmAttesterConfig::with_tcti(tpm.tcti());
    config.event_log = None;
    config.systemd_log = None;
    let att = Arc::new(AttesterIssuer(Mutex::new(
        TpmAttester::open(&config).expect("open swtpm"),
    )));
    (
        BootstrapService::new(Node::new(att.clone(), root_dev.into()).with_launch(launch)),
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
        init_secret: operators().secret().to_vec(),
        mesh_subnet: String::new(),
    })
}

/// A reference measurements file as `veil measure --output json` writes it.
const REFERENCE: &str = r#"{"pcrs":{"4":{"expected":"0000000000000000000000000000000000000000000000000000000000000000","warnOnly":false},"9":{"expected":"0000000000000000000000000000000000000000000000000000000000000000","warnOnly":false},"11":{"expected":"0000000000000000000000000000000000000000000000000000000000000000","warnOnly":false}},
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

    // So is the mesh subnet: it must be a CIDR clear of the pods and Services.
    for (subnet, says) in [
        ("10.90.0.0", "not an IPv4 CIDR"),
        ("10.244.7.0/24", "overlaps the pod network"),
        ("10.90.0.0/28", "too small"),
    ] {
        let mut request = init(vec![1; 32]);
        request.get_mut().mesh_subnet = subnet.into();
        let status = refusal(svc.init(request).await).await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
        assert!(
            status.message().contains("mesh subnet") && status.message().contains(says),
            "{subnet}: {status}"
        );
    }

    // PCR 15 is clear, so the node looks for its state disk next; there is none.
    let status = refusal(svc.init(init(vec![1; 32])).await).await;
    assert!(
        status.message().contains("finding the state disk"),
        "{status}"
    );
    assert!(status.message().contains("4095:4095"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_taken_only_with_the_init_secret_the_node_was_launched_with() {
    let tpm = Swtpm::start(LocalCa::shared());
    let (svc, _att) = service(&tpm, "4095:4095");
    let mut request = init(vec![1; 32]);
    request.get_mut().init_secret.clear();
    let status = refusal(svc.init(request).await).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    assert!(
        status.message().contains("init secret is 0 bytes"),
        "{status}"
    );

    let mut request = init(vec![1; 32]);
    request.get_mut().init_secret = vec![0x5f; 32];
    let status = refusal(svc.init(request).await).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    assert!(
        status
            .message()
            .contains("not the one this node was launched with"),
        "{status}"
    );

    // A reference that enforces nothing is refused, even from the operator.
    let mut request = init(vec![1; 32]);
    request.get_mut().reference_measurements =
        REFERENCE.replace(r#""warnOnly":false"#, r#""warnOnly":true"#);
    let status = refusal(svc.init(request).await).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(
        status.message().contains("do not enforce PCR 4, 9, 11"),
        "{status}"
    );
    let mut request = init(vec![1; 32]);
    let zero = "00".repeat(32);
    request.get_mut().reference_measurements = format!(
        r#"{{"pcrs":{{}},"image":{{"ukiSha256":"{zero}","roothash":"{zero}","osRelease":{{}},"kernelVersion":"test"}}}}"#
    );
    let status = refusal(svc.init(request).await).await;
    assert!(
        status.message().contains("do not enforce PCR 4, 9, 11"),
        "{status}"
    );

    // The refusals changed nothing: the operator's own Init gets past them (to the
    // disk, which does not exist here).
    let status = refusal(svc.init(init(vec![1; 32])).await).await;
    assert!(
        status.message().contains("finding the state disk"),
        "{status}"
    );

    // A node launched without a hash takes no Init at all.
    let other = Swtpm::start(LocalCa::shared());
    let (unlaunched, _att) = launched(&other, "4095:4095", LaunchConfig::default());
    let status = refusal(unlaunched.init(init(vec![1; 32])).await).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    assert!(
        status
            .message()
            .contains("launched without an init secret hash (opt/veil/init-secret-hash)"),
        "{status}"
    );
}

#[test]
fn the_launch_configuration_is_measured_once_per_boot() {
    let tpm = Swtpm::start(LocalCa::shared());
    let mut config = TpmAttesterConfig::with_tcti(tpm.tcti());
    config.event_log = None;
    config.systemd_log = None;
    let mut att = TpmAttester::open(&config).expect("open swtpm");
    let launch = launched_by_operator();
    let pcr14 = |att: &mut TpmAttester| att.read_pcrs(&[LAUNCH_PCR]).expect("read")[&LAUNCH_PCR];
    assert!(veil_bootstrapper::launch::measure(&mut att, &launch).expect("measure"));
    assert_eq!(pcr14(&mut att), launch.expected_pcr());
    // A restarted bootstrapper finds it measured and leaves it.
    assert!(!veil_bootstrapper::launch::measure(&mut att, &launch).expect("again"));
    assert_eq!(pcr14(&mut att), launch.expected_pcr());
    // Another configuration in the same boot is refused, naming the PCR.
    let e = veil_bootstrapper::launch::measure(&mut att, &LaunchConfig::default())
        .expect_err("another configuration");
    assert!(e.contains("PCR 14 holds"), "{e}");
    assert_eq!(pcr14(&mut att), launch.expected_pcr(), "left as it was");
}

//! A test double of the control plane for the join service (tests and benchmarks run
//! no Kubernetes): it hands out well-formed tokens that no API server knows, and
//! says which names are registered. It never ships in the image.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic::Status;
use veil_joinservice::kubernetes::{Kubernetes, PodRangesSender};
use veil_protocol::pb::join::KubernetesJoin;

#[derive(Default)]
pub struct TestControlPlane {
    /// Names Kubernetes has as Nodes.
    pub registered: Mutex<BTreeSet<String>>,
    /// Answer Unavailable, as a control plane that is not up yet does.
    pub down: AtomicBool,
    /// Nodes a token was made for, in order.
    pub tokens_for: Mutex<Vec<String>>,
    /// Each Node's pod range, as a test sets it (the controller manager's part).
    pub pod_ranges: tokio::sync::watch::Sender<BTreeMap<String, ipnet::Ipv4Net>>,
}

#[tonic::async_trait]
impl Kubernetes for TestControlPlane {
    async fn join(&self, node: &str) -> Result<KubernetesJoin, Status> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable(
                "the control plane is not up yet (test double); try again",
            ));
        }
        self.tokens_for.lock().expect("lock").push(node.to_owned());
        Ok(KubernetesJoin {
            api_server_endpoint: "10.76.0.10:6443".into(),
            bootstrap_token: veil_kube::BootstrapToken::generate().expose().to_string(),
            ca_cert_hash: format!("sha256:{}", "ab".repeat(32)),
            pod_subnet: "10.244.0.0/16".into(),
            service_subnet: "10.96.0.0/12".into(),
            registry_cas: Default::default(),
        })
    }

    async fn registered(&self, node: &str) -> Result<bool, Status> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable(
                "the control plane is not up yet (test double)",
            ));
        }
        Ok(self.registered.lock().expect("lock").contains(node))
    }

    async fn delete_node(&self, node: &str) -> Result<bool, Status> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable(
                "the control plane is not up yet (test double)",
            ));
        }
        Ok(self.registered.lock().expect("lock").remove(node))
    }

    async fn watch_pod_ranges(&self, ranges: PodRangesSender) {
        let mut set = self.pod_ranges.subscribe();
        loop {
            ranges.send_replace(set.borrow_and_update().clone());
            if set.changed().await.is_err() {
                return;
            }
        }
    }
}

//! Every configuration the agents write is one the real kubeadm accepts.
//!
//! Needs the kubeadm of the build: `VEIL_KUBEADM=<dir of ci/build-kubernetes>/veil-k8s`
//! (it is called as `kubeadm` through a symlink). `ci/test` builds it and runs these
//! tests with `--ignored`; a plain `cargo test` skips them, since without the Go build
//! there is no kubeadm to ask.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use veil_kube::config::{self, InitParams, JoinParams, Timeouts};
use veil_kube::{BootstrapToken, Network, NodeIdentity, NodeName, kubeadm};

fn kubeadm_binary(dir: &Path) -> PathBuf {
    let multicall = std::env::var_os("VEIL_KUBEADM").map(PathBuf::from).expect(
        "VEIL_KUBEADM must name the veil-k8s binary (ci/build-kubernetes prints its directory)",
    );
    assert!(
        multicall.is_file(),
        "VEIL_KUBEADM={} is no file",
        multicall.display()
    );
    let link = dir.join("kubeadm");
    std::os::unix::fs::symlink(&multicall, &link).expect("symlink kubeadm");
    link
}

fn node() -> NodeIdentity {
    NodeIdentity {
        name: NodeName::new("node0").expect("name"),
        ip: Ipv4Addr::new(10, 76, 0, 10),
    }
}

#[test]
#[ignore = "needs the real kubeadm (VEIL_KUBEADM); ci/test runs it"]
fn kubeadm_accepts_the_init_and_join_configurations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeadm_bin = kubeadm_binary(dir.path());
    let n = node();
    let network = Network::default();
    let init = config::init_documents(&InitParams {
        kubernetes_version: "v1.37.2",
        node: &n,
        network: &network,
        cert_sans: &["127.0.0.1".into(), "localhost".into()],
        patches_dir: &kubeadm::patches_dir(&dir.path().join("init")),
        timeouts: Timeouts::default(),
    })
    .expect("init config");
    let path = kubeadm::write_inputs(&dir.path().join("init"), &init, &config::patches(&n))
        .expect("write init");
    kubeadm::validate(&kubeadm_bin, &path).expect("kubeadm accepts the init configuration");

    let token = BootstrapToken::generate();
    let hash = format!("sha256:{}", "0f".repeat(32));
    let node1 = NodeIdentity {
        name: NodeName::new("node1").expect("name"),
        ip: Ipv4Addr::new(10, 76, 0, 11),
    };
    let join = config::join_documents(&JoinParams {
        node: &node1,
        api_server: "10.76.0.10:6443",
        token: &token.expose(),
        ca_cert_hash: &hash,
        patches_dir: &kubeadm::patches_dir(&dir.path().join("join")),
        timeouts: Timeouts::default(),
    })
    .expect("join config");
    let path = kubeadm::write_inputs(&dir.path().join("join"), &join, &config::patches(&node1))
        .expect("write join");
    kubeadm::validate(&kubeadm_bin, &path).expect("kubeadm accepts the join configuration");
}

#[test]
#[ignore = "needs the real kubeadm (VEIL_KUBEADM); ci/test runs it"]
fn kubeadm_refuses_a_broken_configuration_and_says_why() {
    // The check above can fail: a configuration kubeadm does not accept is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeadm_bin = kubeadm_binary(dir.path());
    let path = kubeadm::write_inputs(
        dir.path(),
        "{\"apiVersion\": \"kubeadm.k8s.io/v1beta4\", \"kind\": \"InitConfiguration\", \"nodeRegistration\": {\"imagePullPolicy\": \"Sometimes\"}}\n",
        &[],
    )
    .expect("write");
    let err = kubeadm::validate(&kubeadm_bin, &path).expect_err("refused");
    assert!(err.to_string().contains("Sometimes"), "{err}");
}

#[test]
#[ignore = "needs the real kubeadm (VEIL_KUBEADM); ci/test runs it"]
fn the_init_configuration_asks_for_exactly_the_baked_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeadm_bin = kubeadm_binary(dir.path());
    let n = node();
    let version = std::env::var("VEIL_KUBERNETES_VERSION").unwrap_or_else(|_| "v1.37.2".into());
    let init = config::init_documents(&InitParams {
        kubernetes_version: &version,
        node: &n,
        network: &Network::default(),
        cert_sans: &[],
        patches_dir: Path::new("/nonexistent"),
        timeouts: Timeouts::default(),
    })
    .expect("init config");
    let path = kubeadm::write_inputs(dir.path(), &init, &[]).expect("write");
    let out = Command::new(&kubeadm_bin)
        .args(["config", "images", "list", "--config"])
        .arg(&path)
        .output()
        .expect("kubeadm runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    let baked = std::env::var("VEIL_SYSTEM_IMAGE_LIST").map(std::fs::read_to_string);
    match baked {
        Ok(Ok(baked)) => assert_eq!(listed.trim(), baked.trim()),
        _ => panic!("VEIL_SYSTEM_IMAGE_LIST must name the build's images.txt"),
    }
}

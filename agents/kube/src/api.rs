//! The few Kubernetes API calls Veil's agents make (kube-rs over rustls): the join
//! service makes and deletes bootstrap tokens with the admin kubeconfig and watches
//! the nodes' pod CIDRs for the mesh roster; every node reads its own Node with its
//! kubelet's credentials, for its pod CIDR.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;

use crate::network::Cidr;
use crate::token::BootstrapToken;
use crate::{KubeError, NodeName};

fn api_error(what: &str, e: impl std::fmt::Display) -> KubeError {
    KubeError::Api(format!("{what}: {e}"))
}

/// A client authenticated as `kubeconfig` says (admin.conf, kubelet.conf).
pub async fn client(kubeconfig: &Path) -> Result<kube::Client, KubeError> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| KubeError::Malformed {
        path: kubeconfig.to_owned(),
        reason: e.to_string(),
    })?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| KubeError::Malformed {
            path: kubeconfig.to_owned(),
            reason: e.to_string(),
        })?;
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(60));
    kube::Client::try_from(config).map_err(|e| api_error("making a client", e))
}

/// The API server a kubeconfig points at (`https://HOST:PORT`).
pub fn server(kubeconfig: &Path) -> Result<String, KubeError> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| KubeError::Malformed {
        path: kubeconfig.to_owned(),
        reason: e.to_string(),
    })?;
    kc.clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| KubeError::Malformed {
            path: kubeconfig.to_owned(),
            reason: "it names no cluster server".into(),
        })
}

/// Whether the API server answers (`/version`).
pub async fn reachable(client: &kube::Client) -> bool {
    client.apiserver_version().await.is_ok()
}

/// Creates `token`'s Secret, valid for `ttl`.
pub async fn create_token(
    client: &kube::Client,
    token: &BootstrapToken,
    description: &str,
    ttl: Duration,
) -> Result<(), KubeError> {
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let expiration = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(ttl))
        .map_err(|e| api_error("computing the token's expiry", e))?
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let secret: Secret = serde_json::from_str(&token.to_secret(description, &expiration))
        .map_err(|e| api_error("building the token's Secret", e))?;
    Api::<Secret>::namespaced(client.clone(), "kube-system")
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|e| api_error(&format!("creating bootstrap token {}", token.id()), e))?;
    Ok(())
}

/// Deletes bootstrap token `id` (absent already: fine).
pub async fn delete_token(client: &kube::Client, id: &str) -> Result<(), KubeError> {
    let name = format!("bootstrap-token-{id}");
    match Api::<Secret>::namespaced(client.clone(), "kube-system")
        .delete(&name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_error(&format!("deleting bootstrap token {id}"), e)),
    }
}

/// Whether a Node named `name` exists.
pub async fn node_exists(client: &kube::Client, name: &str) -> Result<bool, KubeError> {
    Api::<Node>::all(client.clone())
        .get_opt(name)
        .await
        .map(|n| n.is_some())
        .map_err(|e| api_error(&format!("looking up node {name}"), e))
}

/// Deletes the Node named `name`; false if there was none.
pub async fn delete_node(client: &kube::Client, name: &str) -> Result<bool, KubeError> {
    match Api::<Node>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(api_error(&format!("deleting node {name}"), e)),
    }
}

/// A Node's slice of the pod network (`spec.podCIDR`, which the controller manager
/// sets once), by its name.
pub fn pod_cidr_of(node: &Node) -> Option<(NodeName, Cidr)> {
    let name = NodeName::new(node.metadata.name.as_deref()?).ok()?;
    let cidr: Cidr = node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
    Some((name, cidr))
}

/// Watches the cluster's nodes and calls `on_change` with every node's pod CIDR
/// after each change (the whole set, so the caller only reconciles). Runs until the
/// watch fails for good; watch errors in between are retried with backoff.
pub async fn watch_pod_cidrs(
    client: kube::Client,
    mut on_change: impl FnMut(&BTreeMap<NodeName, Cidr>),
) {
    use kube::runtime::WatchStreamExt;
    let nodes: Api<Node> = Api::all(client);
    let mut cidrs: BTreeMap<NodeName, Cidr> = BTreeMap::new();
    let mut initial: BTreeMap<NodeName, Cidr> = BTreeMap::new();
    let mut stream = watcher(nodes, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => initial.clear(),
            Ok(watcher::Event::InitApply(node)) => initial.extend(pod_cidr_of(&node)),
            Ok(watcher::Event::InitDone) => {
                cidrs = std::mem::take(&mut initial);
                on_change(&cidrs);
            }
            Ok(watcher::Event::Apply(node)) => {
                let before = cidrs.clone();
                if let Some(name) = node.metadata.name.as_deref() {
                    cidrs.retain(|n, _| n.as_str() != name);
                }
                cidrs.extend(pod_cidr_of(&node));
                if cidrs != before {
                    on_change(&cidrs);
                }
            }
            Ok(watcher::Event::Delete(node)) => {
                if let Some(name) = node.metadata.name.as_deref() {
                    cidrs.retain(|n, _| n.as_str() != name);
                    on_change(&cidrs);
                }
            }
            Err(e) => tracing::warn!("watching nodes: {e}"),
        }
    }
}

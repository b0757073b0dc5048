//! `veil init` and `veil recover`: hand a cluster's master secret to one node, and only
//! after that node's attestation matched the reference measurements.
//!
//! `veil init` makes the master secret and salt, writes them to a new file (mode 0600;
//! an existing file is never overwritten) *before* sending anything, so a secret a
//! node holds is never one the operator lost. `veil recover` reads that file and gives
//! it to a node whose cluster cannot answer, so it can unlock its state disk.
//!
//! The node then brings up Kubernetes and reports each stage, which is printed as it
//! comes; with `--kubeconfig` the cluster administrator's kubeconfig comes back over
//! the same attested channel and is written to a new file (mode 0600, never over an
//! existing one).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use measured_boot::reference::ReferenceMeasurements;
use veil_keys::{ClusterId, InitSecret, MasterSecret};
use veil_protocol::MAX_MESSAGE;
use veil_protocol::launch::{LAUNCH_PCR, LaunchConfig};
use veil_protocol::pb::bootstrap::bootstrap_client::BootstrapClient;
use veil_protocol::pb::bootstrap::progress::Event;
use veil_protocol::pb::bootstrap::{
    BootstrapResponse, InitRequest, KubernetesSettings, RecoverRequest,
};
use zeroize::Zeroizing;

use crate::Output;
use crate::verify::{NodeArgs, attest_node, runtime};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    node: NodeArgs,
    /// The master-secret file: written by `veil init` (must not exist), read by
    /// `veil recover`.
    #[arg(long)]
    master_secret: PathBuf,
    /// `veil init` only, and required there: the init secret (`veil init-secret new`)
    /// whose hash the node was launched with. The node's quote must show that hash
    /// in its launch configuration (PCR 14) before anything is sent.
    #[arg(long)]
    init_secret: Option<PathBuf>,
    /// `veil init` only: the cluster's state disks are authenticated as well as
    /// encrypted (LUKS2 with dm-integrity, HMAC-SHA256 per 4 KiB sector). Creating a
    /// disk then writes all of it once, and the tags take about 1% of it.
    #[arg(long)]
    state_disk_integrity: bool,
    /// Write the cluster administrator's kubeconfig to this new file (mode 0600; an
    /// existing file is never overwritten).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The API server's address in that kubeconfig (`https://HOST:PORT`), when the
    /// operator reaches it other than at the node's own address (a forwarded port, a
    /// load balancer); also put into the API server's certificate by `veil init`.
    #[arg(long)]
    api_server: Option<String>,
    /// `veil init` only: the pod network (default 10.244.0.0/16).
    #[arg(long)]
    pod_subnet: Option<String>,
    /// `veil init` only: the Service network (default 10.96.0.0/12).
    #[arg(long)]
    service_subnet: Option<String>,
    /// `veil init` only: a private registry's CA, `HOST[:PORT]=CA.pem`; nodes pull
    /// images from that registry over TLS checked against it. Repeatable.
    #[arg(long, value_name = "HOST=PEM")]
    registry_ca: Vec<String>,
    /// `veil init` only: the WireGuard mesh's subnet, one address per node (default
    /// 10.90.0.0/16; clear of the pod and Service networks).
    #[arg(long)]
    mesh_subnet: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

#[derive(Clone, Copy)]
pub enum Mode {
    Init,
    Recover,
}

/// `https://HOST:PORT` → `HOST`.
fn api_server_host(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("https://")
        .with_context(|| format!("--api-server '{url}' is not https://HOST:PORT"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        bail!("--api-server '{url}' names no host");
    }
    Ok(host.to_owned())
}

/// The kubeconfig with its cluster's `server:` replaced by `server`.
fn with_server(kubeconfig: &str, server: &str) -> anyhow::Result<String> {
    let mut replaced = 0;
    let out: Vec<String> = kubeconfig
        .lines()
        .map(|l| {
            let indent = l.len() - l.trim_start().len();
            if l.trim_start().starts_with("server: ") {
                replaced += 1;
                format!("{}server: {server}", &l[..indent])
            } else {
                l.to_owned()
            }
        })
        .collect();
    if replaced != 1 {
        bail!("the node's kubeconfig has {replaced} server lines, not one: not rewritten");
    }
    Ok(out.join("\n") + "\n")
}

/// Writes a new file, mode 0600; never over an existing one.
fn write_new_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
}

/// A reference that leaves the boot chain unenforced would let the cluster admit
/// nodes running anything: refused here, before a secret is made (the node refuses it
/// too).
fn check_reference_enforces(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading reference measurements {}", path.display()))?;
    let reference = ReferenceMeasurements::from_json(&text)
        .with_context(|| format!("{} is not a reference measurements file", path.display()))?;
    let unenforced = reference.unenforced_boot_chain();
    if !unenforced.is_empty() {
        bail!(
            "{} does not enforce PCR {}: a cluster with it would admit nodes running any \
             kernel or command line",
            path.display(),
            unenforced
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn kubernetes_settings(args: &Args) -> anyhow::Result<KubernetesSettings> {
    let mut registry_cas = std::collections::HashMap::new();
    for spec in &args.registry_ca {
        let (host, file) = spec
            .split_once('=')
            .with_context(|| format!("--registry-ca '{spec}' is not HOST[:PORT]=CA.pem"))?;
        let pem = std::fs::read_to_string(file)
            .with_context(|| format!("reading the registry CA {file}"))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            bail!("{file} (--registry-ca for {host}) holds no PEM certificate");
        }
        registry_cas.insert(host.to_owned(), pem);
    }
    let api_server_cert_sans = match &args.api_server {
        Some(url) => vec![api_server_host(url)?],
        None => Vec::new(),
    };
    Ok(KubernetesSettings {
        pod_subnet: args.pod_subnet.clone().unwrap_or_default(),
        service_subnet: args.service_subnet.clone().unwrap_or_default(),
        api_server_cert_sans,
        registry_cas,
    })
}

pub fn run(args: &Args, mode: Mode) -> anyhow::Result<()> {
    let init_only = args.state_disk_integrity
        || args.pod_subnet.is_some()
        || args.service_subnet.is_some()
        || !args.registry_ca.is_empty()
        || args.mesh_subnet.is_some();
    if init_only && matches!(mode, Mode::Recover) {
        bail!(
            "--state-disk-integrity, --pod-subnet, --service-subnet, --registry-ca and \
             --mesh-subnet are settings of veil init; a recovered cluster keeps its own"
        );
    }
    // Init is the operator's: the node takes it only with the init secret, and must
    // show (PCR 14) that it expects this one. Recover needs the master secret alone.
    let init_secret = match (mode, &args.init_secret) {
        (Mode::Init, Some(path)) => Some(InitSecret::read_file(path)?),
        (Mode::Init, None) => bail!(
            "veil init needs --init-secret FILE: the init secret whose hash the node was \
             launched with (make one with veil init-secret new FILE)"
        ),
        (Mode::Recover, Some(_)) => {
            bail!(
                "--init-secret is for veil init; veil recover proves itself with the master secret"
            )
        }
        (Mode::Recover, None) => None,
    };
    let mut extra = BTreeMap::new();
    if let Some(secret) = &init_secret {
        let launch = LaunchConfig {
            init_secret_hash: Some(secret.hash()),
            cluster_id: None,
        };
        extra.insert(LAUNCH_PCR, (launch.expected_pcr(), false));
        check_reference_enforces(&args.node.measurements)?;
    }
    // Refuse before anything happens, not after the node did the work.
    if let Some(k) = &args.kubeconfig {
        if k.exists() {
            bail!(
                "{} exists: refusing to overwrite it (--kubeconfig names a new file)",
                k.display()
            );
        }
    }
    if let Some(url) = &args.api_server {
        api_server_host(url)?;
    }
    let kubernetes = match mode {
        Mode::Init => Some(kubernetes_settings(args)?),
        Mode::Recover => None,
    };
    let master = match mode {
        Mode::Init => {
            let master = MasterSecret::generate();
            master.write_file(&args.master_secret)?;
            master
        }
        Mode::Recover => MasterSecret::read_file(&args.master_secret)?,
    };
    let verb = match mode {
        Mode::Init => "init",
        Mode::Recover => "recover",
    };
    let want_kubeconfig = args.kubeconfig.is_some();
    let result = runtime()?.block_on(async {
        let attested = attest_node(&args.node, extra, true).await?;
        let channel = match attested.channel {
            Some(channel) if attested.report.ok => channel,
            _ => {
                // Show why the node was refused.
                attested.report.print(Output::Human)?;
                bail!(
                    "{} did not match the reference measurements{}: the master secret was \
                     not sent",
                    args.node.node,
                    if init_secret.is_some() {
                        " and the launch configuration of this init secret (PCR 14)"
                    } else {
                        ""
                    }
                );
            }
        };
        let mut client = BootstrapClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let refused =
            |s: tonic::Status| anyhow!("{} refused {verb}: {}", args.node.node, s.message());
        let mut stream = match mode {
            Mode::Init => client
                .init(InitRequest {
                    master_secret: master.secret().to_vec(),
                    salt: master.salt().to_vec(),
                    reference_measurements: attested.reference_text,
                    state_disk_integrity: args.state_disk_integrity,
                    platform_policy: attested.policy_text.unwrap_or_default(),
                    kubernetes,
                    admin_kubeconfig: want_kubeconfig,
                    init_secret: init_secret
                        .as_ref()
                        .map(|s| s.secret().to_vec())
                        .unwrap_or_default(),
                    mesh_subnet: args.mesh_subnet.clone().unwrap_or_default(),
                })
                .await
                .map_err(refused)?
                .into_inner(),
            Mode::Recover => client
                .recover(RecoverRequest {
                    master_secret: master.secret().to_vec(),
                    salt: master.salt().to_vec(),
                    admin_kubeconfig: want_kubeconfig,
                })
                .await
                .map_err(refused)?
                .into_inner(),
        };
        let started = std::time::Instant::now();
        loop {
            let progress = stream
                .message()
                .await
                .map_err(|s| anyhow!("{} failed to {verb}: {}", args.node.node, s.message()))?
                .with_context(|| {
                    format!(
                        "{} ended the {verb} stream without a result",
                        args.node.node
                    )
                })?;
            match progress.event {
                // Stages go to stderr in both formats: stdout stays the result.
                Some(Event::Stage(text)) => {
                    eprintln!("[{:>4} s] {text}", started.elapsed().as_secs())
                }
                Some(Event::Done(done)) => return Ok(done),
                None => bail!("{} sent an empty progress message", args.node.node),
            }
        }
    });
    let mut response: BootstrapResponse = match (mode, result) {
        (_, Ok(r)) => r,
        (Mode::Init, Err(e)) => {
            return Err(e.context(format!(
                "the new master secret is in {}: if the node took it (the stages above \
                 say its state disk was created), keep it and run veil recover to retry; \
                 otherwise delete it before trying veil init again",
                args.master_secret.display()
            )));
        }
        (Mode::Recover, Err(e)) => return Err(e),
    };
    let cluster_id = ClusterId(
        response
            .cluster_id
            .as_slice()
            .try_into()
            .context("the node answered with a malformed cluster id")?,
    );
    if cluster_id != master.cluster_id() {
        bail!(
            "the node reports cluster id {cluster_id}, but the master secret gives {}",
            master.cluster_id()
        );
    }
    if let Some(path) = &args.kubeconfig {
        let kubeconfig = Zeroizing::new(std::mem::take(&mut response.admin_kubeconfig));
        let text =
            std::str::from_utf8(&kubeconfig).context("the node's admin kubeconfig is not UTF-8")?;
        let text = Zeroizing::new(match &args.api_server {
            Some(url) => with_server(text, url)?,
            None => text.to_owned(),
        });
        write_new_private(path, text.as_bytes())?;
    }
    match args.output {
        Output::Human => {
            println!(
                "{}: {} (state disk {}), Kubernetes {} node {}",
                args.node.node,
                match mode {
                    Mode::Init => "initialized",
                    Mode::Recover => "recovered",
                },
                match (
                    response.state_partition_uuid.as_str(),
                    response.state_disk_created
                ) {
                    ("", _) => "open already".to_owned(),
                    (uuid, true) => format!("{uuid} created"),
                    (uuid, false) => format!("{uuid} unlocked"),
                },
                response.kubernetes_version,
                response.node_name,
            );
            println!("cluster id: {cluster_id}");
            if let Mode::Init = mode {
                println!(
                    "master secret: {} (keep it safe: it is the only way to recover the cluster)",
                    args.master_secret.display()
                );
            }
            if let Some(path) = &args.kubeconfig {
                println!(
                    "kubeconfig: {} (cluster admin; kubectl --kubeconfig {} get nodes)",
                    path.display(),
                    path.display()
                );
            }
        }
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "node": args.node.node,
                "clusterId": cluster_id.to_hex(),
                "statePartitionUuid": response.state_partition_uuid,
                "stateDiskCreated": response.state_disk_created,
                "masterSecretFile": args.master_secret,
                "nodeName": response.node_name,
                "kubernetesVersion": response.kubernetes_version,
                "kubeconfig": args.kubeconfig,
            }))?
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfigs_server_is_rewritten_once() {
        let kc = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: AAAA\n    server: https://10.76.0.10:6443\n  name: veil\n";
        let out = with_server(kc, "https://127.0.0.1:8443").expect("rewrite");
        assert!(
            out.contains("    server: https://127.0.0.1:8443\n"),
            "{out}"
        );
        assert!(!out.contains("10.76.0.10"), "{out}");
        let two = format!("{kc}    server: https://x:1\n");
        assert!(with_server(&two, "https://y:2").is_err());
    }

    #[test]
    fn api_server_urls_name_their_host() {
        assert_eq!(
            api_server_host("https://127.0.0.1:8443").expect("host"),
            "127.0.0.1"
        );
        assert_eq!(
            api_server_host("https://api.example.com:6443/").expect("host"),
            "api.example.com"
        );
        assert_eq!(api_server_host("https://[::1]:6443").expect("host"), "::1");
        assert!(api_server_host("http://127.0.0.1:8443").is_err());
        assert!(api_server_host("https://:8443").is_err());
    }

    #[test]
    fn new_files_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.conf");
        write_new_private(&path, b"one").expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = write_new_private(&path, b"two").expect_err("exists");
        assert!(format!("{err:#}").contains("creating"), "{err:#}");
        assert_eq!(std::fs::read(&path).expect("read"), b"one");
    }
}

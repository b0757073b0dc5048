use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use tracing_subscriber::prelude::*;

#[derive(Parser)]
#[command(
    version,
    about = "Veil node bootstrapper (runs as veil-bootstrapper.service)"
)]
struct Args {
    /// Root of the file system to inspect; only tests change it.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Exit after reporting instead of staying up as the node's service.
    #[arg(long)]
    once: bool,
    /// The TPM to attest with (a TSS2 TCTI string).
    #[arg(long, default_value = "device:/dev/tpmrm0")]
    tcti: String,
    /// The agent port (attestation endpoint).
    #[arg(long, default_value_t = veil_protocol::AGENT_PORT)]
    port: u16,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    // Under systemd log to journald; anywhere else (tests, a shell) to stderr.
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    match journald {
        Some(layer) => registry.with(layer).init(),
        None => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init(),
    }
}

fn main() -> Result<()> {
    init_logging();
    let args = Args::parse();
    let mut stdout = std::io::stdout().lock();
    let platform = veil_bootstrapper::report(&args.root, &mut stdout)
        .context("reporting the node's platform and measurements")?;
    tracing::info!(platform = platform.kind(), "platform detected");
    veil_bootstrapper::report_event_logs(&args.root, &mut stdout)
        .context("reporting the TPM event logs")?;

    use std::io::Write;
    if !args.once {
        match platform.tpm {
            Some(_) => {
                let listener = std::net::TcpListener::bind(("0.0.0.0", args.port))
                    .with_context(|| format!("listening on the agent port {}", args.port))?;
                // Init/Recover touch the disk that holds the root: only on a real
                // node (a dm-verity root), never on a machine the binary is tried on.
                let root = veil_bootstrapper::root_device(&args.root)?;
                let root_dev = root.is_verity().then_some(root.dev);
                if root_dev.is_none() {
                    tracing::warn!("the root is not dm-verity: Init and Recover are not served");
                }
                // What the operator launched the node with: read once, measured before
                // it is used, and the same value used everywhere.
                // On a cloud from the instance's user data, else from fw_cfg.
                let cloud = veil_bootstrapper::launch::from_cloud(&args.root);
                let launch = match &cloud {
                    Some(c) => c.launch,
                    None => veil_protocol::launch::LaunchConfig::read(&args.root)
                        .context("reading the node's launch configuration")?,
                };
                // A join endpoint makes the node try to join while it waits for Init.
                let join = match &root_dev {
                    Some(_) => veil_bootstrapper::join::JoinConfig::discover(
                        &args.root,
                        &launch,
                        cloud.as_ref(),
                        &platform,
                    )
                    .unwrap_or_else(|e| {
                        tracing::error!("cannot join: {e:#}");
                        println!("veil-join-failed {e:#}");
                        None
                    }),
                    None => None,
                };
                // The node's address among the nodes (QEMU's segment NIC): configured
                // now so that it is up before anything listens or joins.
                let segment = match &root_dev {
                    Some(_) => veil_bootstrapper::network::configure_segment(&args.root)
                        .unwrap_or_else(|e| {
                            tracing::error!("the node segment: {e:#}");
                            println!("veil-network-failed {e:#}");
                            None
                        }),
                    None => None,
                };
                if let Some(s) = &segment {
                    println!(
                        "veil-network segment {}/{} mac={}",
                        s.address, s.prefix, s.mac
                    );
                }
                let segment = segment.and_then(|s| s.net());
                // Between nodes only WireGuard and aTLS, from the start: until the
                // node is in a cluster (the mesh follower widens this to its peers).
                if root_dev.is_some() {
                    veil_bootstrapper::mesh::apply_firewall(segment, None);
                }
                let mut tpm = veil_attest::tpm::TpmAttesterConfig::with_tcti(&args.tcti);
                // In a confidential VM each quote carries a hardware report over its AK.
                tpm.hardware = veil_attest::HardwareAttester::for_platform(&platform, &args.root);
                if let Some(hardware) = &tpm.hardware {
                    tracing::info!(?hardware, "TPM quotes carry a hardware report");
                }
                let host = (args.root.clone(), segment);
                veil_bootstrapper::attestation::start(tpm, listener, root_dev, join, host, launch)?;
            }
            None => tracing::warn!("no TPM: the attestation endpoint is not served"),
        }
    }
    writeln!(stdout, "veil-ready")?;
    stdout.flush()?;
    drop(stdout);
    // Ignored outside systemd (NOTIFY_SOCKET unset), which is what tests want.
    sd_notify::notify(false, &[sd_notify::NotifyState::Ready])
        .context("notifying systemd of readiness")?;
    if args.once {
        return Ok(());
    }
    // The node's APIs will run here; until then stay up so the unit reads as active.
    loop {
        std::thread::park();
    }
}

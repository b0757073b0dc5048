use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::Parser;
use tracing_subscriber::prelude::*;
use veil_atls::AttesterIssuer;
use veil_attest::tpm::{EkTrust, TpmAttester, TpmAttesterConfig};
use veil_joinservice::{Cluster, Credentials, Limits};
use veil_protocol::activation::SharedTpm;
use veil_protocol::paths::{CLUSTER_DIR, IMAGE_TPM_CA, IMAGE_TPM_INTERMEDIATE};

#[derive(Parser)]
#[command(
    version,
    about = "Veil join service (runs as veil-joinservice.service on control-plane nodes)"
)]
struct Args {
    /// Where the master secret and reference measurements are (the state disk).
    #[arg(long, default_value = CLUSTER_DIR)]
    cluster_dir: PathBuf,
    /// The CA that certifies joiners' TPM endorsement keys (PEM), from the image.
    #[arg(long, default_value = IMAGE_TPM_CA)]
    tpm_ca: PathBuf,
    /// Intermediate CA certificates under it (PEM); skipped if absent.
    #[arg(long, default_value = IMAGE_TPM_INTERMEDIATE)]
    tpm_intermediate: PathBuf,
    /// The TPM to attest with (a TSS2 TCTI string).
    #[arg(long, default_value = "device:/dev/tpmrm0")]
    tcti: String,
    /// The join port.
    #[arg(long, default_value_t = veil_protocol::JOIN_PORT)]
    port: u16,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // stderr always (the unit sends it to the console too, so a refused joiner is
    // visible on the node's console); journald as well under systemd.
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .without_time(),
        )
        .with(journald)
        .init();
}

fn main() -> Result<()> {
    init_logging();
    let args = Args::parse();
    let cluster = Cluster::load(&args.cluster_dir)?;
    let trust = EkTrust::from_pem_files(
        &args.tpm_ca,
        (args.tpm_intermediate.exists()).then_some(args.tpm_intermediate.as_path()),
    )
    .context("loading the TPM CA for joiners")?;
    let mut config = TpmAttesterConfig::with_tcti(&args.tcti);
    // In a confidential VM the service's quotes carry a hardware report over its AK, as
    // the bootstrapper's do: joiners in one require it (veil_attest::peer).
    let platform = veil_attest::detect(std::path::Path::new("/"));
    config.hardware =
        veil_attest::HardwareAttester::for_platform(&platform, std::path::Path::new("/"));
    let attester =
        TpmAttester::open(&config).with_context(|| format!("opening the TPM ({})", args.tcti))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", args.port))
            .await
            .with_context(|| format!("listening on the join port {}", args.port))?;
        let accepts = cluster.platform.accepts();
        tracing::info!(port = args.port, cluster = %cluster.master.cluster_id(), accepts, "join service serving");
        println!("veil-joinservice-ready port={} accepts={accepts}", args.port);
        let kubernetes =
            veil_joinservice::kubernetes::ControlPlane::on_this_node(cluster.settings.kubernetes.clone());
        sd_notify::notify(false, &[sd_notify::NotifyState::Ready])
            .context("notifying systemd of readiness")?;
        let tpm: SharedTpm = Arc::new(AttesterIssuer(Mutex::new(attester)));
        // On a cloud's CVM the join port presents the cloud's evidence, as the agent
        // port does: that is what a joiner there can check.
        let presented = veil_cloud::presented(&config, tpm.clone())
            .await
            .context("the cloud vTPM's evidence")?;
        if presented.from_cloud {
            tracing::info!(evidence = presented.platform, "the join port presents the cloud's evidence");
        }
        // In a TD, the policy's Intel collateral is kept fresh from Intel's PCS.
        let in_td = presented.platform == "azure-tdx"
            || matches!(config.hardware, Some(veil_attest::HardwareAttester::Tdx(_)));
        let collateral = match in_td.then(veil_fetch::pcs::PcsClient::intel) {
            Some(Ok(pcs)) => Some(pcs),
            Some(Err(e)) => {
                tracing::warn!("the policy's TD collateral will not be refreshed: {e}");
                None
            }
            None => None,
        };
        let credentials = Credentials {
            issuer: presented.issuer,
            tpm,
            verifier: cluster.verifier(trust)?,
            collateral,
        };
        veil_joinservice::serve(listener, credentials, cluster, Limits::default(), kubernetes)
        .await
        .context("the join service stopped")
    })
}

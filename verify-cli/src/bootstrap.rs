//! `veil init` and `veil recover`: hand a cluster's master secret to one node, and only
//! after that node's attestation matched the reference measurements.
//!
//! `veil init` makes the master secret and salt, writes them to a new file (mode 0600;
//! an existing file is never overwritten) *before* sending anything, so a secret a
//! node holds is never one the operator lost. `veil recover` reads that file and gives
//! it to a node whose cluster cannot answer, so it can unlock its state disk.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use veil_keys::{ClusterId, MasterSecret};
use veil_protocol::MAX_MESSAGE;
use veil_protocol::pb::bootstrap::bootstrap_client::BootstrapClient;
use veil_protocol::pb::bootstrap::{BootstrapResponse, InitRequest, RecoverRequest};

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
    /// `veil init` only: the cluster's state disks are authenticated as well as
    /// encrypted (LUKS2 with dm-integrity, HMAC-SHA256 per 4 KiB sector). Creating a
    /// disk then writes all of it once, and the tags take about 1% of it.
    #[arg(long)]
    state_disk_integrity: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

#[derive(Clone, Copy)]
pub enum Mode {
    Init,
    Recover,
}

pub fn run(args: &Args, mode: Mode) -> anyhow::Result<()> {
    if args.state_disk_integrity && matches!(mode, Mode::Recover) {
        bail!("--state-disk-integrity is a setting of veil init; a recovered disk keeps its own");
    }
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
    let result = runtime()?.block_on(async {
        let attested = attest_node(&args.node, BTreeMap::new()).await?;
        if !attested.report.ok {
            // Show why the node was refused.
            attested.report.print(Output::Human)?;
            bail!(
                "{} did not match the reference measurements: the master secret was not sent",
                args.node.node
            );
        }
        let mut client =
            BootstrapClient::new(attested.channel).max_decoding_message_size(MAX_MESSAGE);
        let response = match mode {
            Mode::Init => {
                client
                    .init(InitRequest {
                        master_secret: master.secret().to_vec(),
                        salt: master.salt().to_vec(),
                        reference_measurements: attested.reference_text,
                        state_disk_integrity: args.state_disk_integrity,
                        platform_policy: attested.policy_text.unwrap_or_default(),
                    })
                    .await
            }
            Mode::Recover => {
                client
                    .recover(RecoverRequest {
                        master_secret: master.secret().to_vec(),
                        salt: master.salt().to_vec(),
                    })
                    .await
            }
        };
        response
            .map(tonic::Response::into_inner)
            .map_err(|s| anyhow!("{} refused {verb}: {}", args.node.node, s.message()))
    });
    let response: BootstrapResponse = match (mode, result) {
        (_, Ok(r)) => r,
        (Mode::Init, Err(e)) => {
            return Err(e.context(format!(
                "the new master secret is in {} (no node holds it unless the error says \
                 otherwise); delete it before trying veil init again",
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
    match args.output {
        Output::Human => {
            println!(
                "{}: {} (state disk {} {})",
                args.node.node,
                match mode {
                    Mode::Init => "initialized",
                    Mode::Recover => "recovered",
                },
                response.state_partition_uuid,
                if response.state_disk_created {
                    "created"
                } else {
                    "unlocked"
                }
            );
            println!("cluster id: {cluster_id}");
            if let Mode::Init = mode {
                println!(
                    "master secret: {} (keep it safe: it is the only way to recover the cluster)",
                    args.master_secret.display()
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
            }))?
        ),
    }
    Ok(())
}

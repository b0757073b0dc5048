//! `veil remove NAME`: drops a member from the cluster (issue 11). The control-plane
//! node's join service is attested first, exactly as `veil init` attests a node, and
//! must belong to the master secret's cluster (PCR 15); only then does the admin
//! credential derived from the master secret go to it. Its peers drop the member from
//! `wg0` within seconds (their roster watch), and the member can no longer Rejoin.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use veil_keys::MasterSecret;
use veil_protocol::MAX_MESSAGE;
use veil_protocol::pb::join::RemoveRequest;
use veil_protocol::pb::join::mesh_client::MeshClient;

use crate::Output;
use crate::verify::{NodeArgs, Prepared, attested_channel, prepare, runtime};

#[derive(clap::Args)]
pub struct Args {
    /// The member's name (as `kubectl get nodes` shows it).
    name: String,
    /// The control-plane node's join port (HOST:PORT), its reference measurements and
    /// TPM CA (as for `veil verify`).
    #[command(flatten)]
    node: NodeArgs,
    /// The cluster's master secret (`veil init` wrote it).
    #[arg(long)]
    master_secret: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let master = MasterSecret::read_file(&args.master_secret)?;
    let cluster = master.cluster_id();
    let extra = BTreeMap::from([(15, (cluster.member_pcr(), false))]);
    let node = args.node.node.as_str();
    let removed = runtime()?.block_on(async {
        let Prepared {
            verifier, expected, ..
        } = prepare(&args.node, extra).await?;
        let (channel, verified) = attested_channel(node, verifier, Some(expected.clone())).await?;
        let Some(channel) = channel else {
            let differ: Vec<String> = veil_attest::check_pcrs(&verified.pcrs, &expected)
                .iter()
                .filter(|c| !matches!(c.outcome, veil_attest::PcrOutcome::Match))
                .map(ToString::to_string)
                .collect();
            bail!(
                "{node} is not this cluster's control-plane node as the reference measurements \
                 and the master secret's cluster {cluster} (PCR 15) describe it ({}): the \
                 admin credential was not sent",
                differ.join("; ")
            );
        };
        let mut client = MeshClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let answer = client
            .remove(RemoveRequest {
                node_name: args.name.clone(),
                admin_credential: master.admin_credential().to_vec(),
            })
            .await
            .map_err(|s| anyhow!("{node} refused to remove '{}': {}", args.name, s.message()))?;
        Ok(answer.into_inner())
    })?;
    match args.output {
        Output::Human => println!(
            "removed '{}' from cluster {cluster} (roster version {}; its mesh address {} is \
             never given again); {}",
            args.name,
            removed.roster_version,
            removed.mesh_ip,
            if removed.kubernetes_node_deleted {
                "its Node object is deleted"
            } else {
                "no Node object was deleted (none, or the control plane did not answer)"
            }
        ),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "removed": args.name,
                "clusterId": cluster.to_hex(),
                "rosterVersion": removed.roster_version,
                "meshIp": removed.mesh_ip,
                "kubernetesNodeDeleted": removed.kubernetes_node_deleted,
            }))
            .context("writing JSON")?
        ),
    }
    Ok(())
}

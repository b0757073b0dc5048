//! `veil init-secret new FILE` / `veil init-secret hash FILE`: the init secret that
//! makes `veil init` the operator's (veil-keys' `InitSecret`). The first node is
//! launched with its hash (QEMU: `-fw_cfg name=opt/veil/init-secret-hash,string=HASH`;
//! a cloud: the instance's launch settings); only `veil init --init-secret FILE` can
//! then initialize it.

use std::path::PathBuf;

use veil_keys::InitSecret;
use veil_protocol::launch::{LAUNCH_PCR, LaunchConfig};

use crate::Output;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human, global = true)]
    output: Output,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Make a new init secret in FILE (mode 0600; an existing file is never
    /// overwritten) and print its hash.
    New { file: PathBuf },
    /// Print the hash of the init secret in FILE.
    Hash { file: PathBuf },
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let (secret, file, created) = match &args.action {
        Action::New { file } => {
            let secret = InitSecret::generate();
            secret.write_file(file)?;
            (secret, file, true)
        }
        Action::Hash { file } => (InitSecret::read_file(file)?, file, false),
    };
    let hash = hex::encode(secret.hash());
    let pcr = hex::encode(
        LaunchConfig {
            init_secret_hash: Some(secret.hash()),
            cluster_id: None,
        }
        .expected_pcr(),
    );
    match args.output {
        Output::Human => {
            if created {
                println!("init secret written to {} (mode 0600)", file.display());
            }
            println!("init secret hash: {hash}");
            println!(
                "launch the first node with it (QEMU: -fw_cfg name=opt/veil/init-secret-hash,string={hash});"
            );
            println!("that node's PCR {LAUNCH_PCR} will then be {pcr}");
        }
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "file": file,
                "created": created,
                "initSecretHash": hash,
                "launchPcr": LAUNCH_PCR,
                "launchPcrValue": pcr,
            })
        ),
    }
    Ok(())
}

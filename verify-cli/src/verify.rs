//! `veil verify --node HOST:PORT --measurements FILE`: attest a running node and compare
//! what its TPM quoted with the reference measurements `veil measure` computed from the
//! image it should run.
//!
//! The node's AK is trusted only after credential activation against an EK certificate
//! that chains to the given TPM CA; the quote then arrives inside a one-way aTLS
//! handshake, bound to a fresh nonce of ours and to the TLS key.

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use measured_boot::reference::ReferenceMeasurements;
use veil_atls::VerifierValidator;
use veil_attest::tpm::{EkTrust, TpmVerifier};
use veil_attest::{PcrCheck, PcrOutcome, Verified, check_pcrs};
use veil_protocol::{Request, Response, read_frame, write_frame};

use crate::Output;

#[derive(clap::Args)]
pub struct Args {
    /// The node's agent port, HOST:PORT.
    #[arg(long)]
    node: String,
    /// Reference measurements (`veil measure --output json IMAGE`).
    #[arg(long)]
    measurements: PathBuf,
    /// The CA that certifies the node's TPM endorsement key (PEM). Nothing else is
    /// trusted.
    #[arg(long)]
    tpm_ca: PathBuf,
    /// Intermediate CA certificates between the TPM CA and EK certificates (PEM).
    #[arg(long)]
    tpm_intermediate: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

const TIMEOUT: Duration = Duration::from_secs(60);

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Returns whether the node matched the reference.
pub fn run(args: &Args) -> anyhow::Result<bool> {
    let reference_text = String::from_utf8(read(&args.measurements, "reference measurements")?)
        .with_context(|| format!("{} is not UTF-8 text", args.measurements.display()))?;
    let reference = ReferenceMeasurements::from_json(&reference_text).with_context(|| {
        format!(
            "{} is not a reference measurements file (veil measure --output json)",
            args.measurements.display()
        )
    })?;
    let mut trust = EkTrust::from_pem(&read(&args.tpm_ca, "TPM CA")?)
        .with_context(|| format!("loading the TPM CA {}", args.tpm_ca.display()))?;
    if let Some(path) = &args.tpm_intermediate {
        trust = trust
            .with_intermediates_pem(&read(path, "TPM intermediate CA")?)
            .with_context(|| format!("loading the TPM intermediate CA {}", path.display()))?;
    }

    let verified = attest(&args.node, TpmVerifier::new(trust))?;
    let expected: BTreeMap<u32, ([u8; 32], bool)> = reference
        .pcrs
        .iter()
        .map(|(&i, p)| (i, (p.expected.0, p.warn_only)))
        .collect();
    let checks = check_pcrs(&verified.pcrs, &expected);
    let ok = checks.iter().all(|c| {
        !matches!(
            c.outcome,
            PcrOutcome::Mismatch | PcrOutcome::Missing { warn_only: false }
        )
    });
    match args.output {
        Output::Human => print!("{}", table(&args.node, &checks, ok)),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json(&checks, &expected, ok))?
        ),
    }
    Ok(ok)
}

/// Activates the node's AK, then takes its quote from a one-way aTLS handshake.
fn attest(node: &str, mut verifier: TpmVerifier) -> anyhow::Result<Verified> {
    let addr = node
        .to_socket_addrs()
        .with_context(|| format!("resolving {node}"))?
        .next()
        .with_context(|| format!("{node} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("connecting to the node at {node}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;

    write_frame(&mut stream, &Request::Identity)?;
    let identity = match read_frame(&mut stream)? {
        Response::Identity { identity } => identity,
        other => bail!("{node} answered the identity request with {other:?}"),
    };
    let (challenge, pending) = verifier
        .challenge(&identity)
        .with_context(|| format!("the TPM identity of {node} is not trusted"))?;
    write_frame(&mut stream, &Request::Activate { challenge })?;
    let secret = match read_frame(&mut stream)? {
        Response::Activated { secret } => hex::decode(&secret)
            .with_context(|| format!("{node} sent a malformed activation secret"))?,
        Response::Error { message } => bail!("{node} could not activate its AK: {message}"),
        other => bail!("{node} answered the activation with {other:?}"),
    };
    let ak = pending.finish(&secret).with_context(|| {
        format!("{node}'s attestation key is not in the TPM its EK certificate names")
    })?;
    verifier.add_trusted_ak(ak);

    write_frame(&mut stream, &Request::Attest)?;
    match read_frame(&mut stream)? {
        Response::Attesting => {}
        other => bail!("{node} answered the attest request with {other:?}"),
    }
    let (_tls, verified) =
        veil_atls::connect_one_way(stream, Arc::new(VerifierValidator(verifier)))
            .with_context(|| format!("attesting {node}"))?;
    Ok(verified)
}

fn outcome(c: &PcrCheck) -> &'static str {
    match c.outcome {
        PcrOutcome::Match => "ok",
        PcrOutcome::WarnMismatch => "differs (warn-only)",
        PcrOutcome::Mismatch => "DIFFERS",
        PcrOutcome::Missing { .. } => "NOT QUOTED",
    }
}

fn table(node: &str, checks: &[PcrCheck], ok: bool) -> String {
    let mut out =
        format!("node {node}: TPM quote verified (AK activated against a trusted EK)\n\n");
    out.push_str(&format!(
        "{:>4}  {:<64}  {:<64}  {}\n",
        "PCR", "expected", "actual", "result"
    ));
    for c in checks {
        let actual = c.actual.map_or_else(|| "-".into(), hex::encode);
        out.push_str(&format!(
            "{:>4}  {}  {:<64}  {}\n",
            c.index,
            hex::encode(c.expected),
            actual,
            outcome(c)
        ));
    }
    out.push_str(if ok { "\nOK\n" } else { "\nFAILED\n" });
    out
}

fn json(
    checks: &[PcrCheck],
    expected: &BTreeMap<u32, ([u8; 32], bool)>,
    ok: bool,
) -> serde_json::Value {
    let pcrs: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|c| {
            (
                c.index.to_string(),
                serde_json::json!({
                    "expected": hex::encode(c.expected),
                    "actual": c.actual.map(hex::encode),
                    "enforced": !expected.get(&c.index).is_some_and(|e| e.1),
                    "match": c.outcome == PcrOutcome::Match,
                }),
            )
        })
        .collect();
    serde_json::json!({ "result": if ok { "OK" } else { "FAILED" }, "pcrs": pcrs })
}

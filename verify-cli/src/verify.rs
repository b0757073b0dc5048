//! `veil verify --node HOST:PORT --measurements FILE`: attest a running node and compare
//! what its TPM quoted with the reference measurements `veil measure` computed from the
//! image it should run.
//!
//! Under the `qemu` profile (or none) the node's AK is trusted only after credential
//! activation against an EK certificate that chains to the given TPM CA; under a cloud
//! profile the cloud's evidence names the AK instead (`veil_attest::profile`). Either
//! way the quote arrives inside a one-way aTLS handshake, bound to a fresh nonce of ours
//! and to the TLS key.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use measured_boot::reference::ReferenceMeasurements;
use measured_boot::{Digest, EventLog, diff_reference_against_log};
use veil_atls::{PcrValidator, VerifierValidator};
use veil_attest::tpm::{EkTrust, TpmVerifier};
use veil_attest::{
    EvidencePlatform, PcrCheck, PcrOutcome, PlatformPolicy, PlatformVerifier, Profile, Verified,
    check_pcrs,
};
use veil_protocol::MAX_MESSAGE;
use veil_protocol::pb::attestation::attestation_client::AttestationClient;
use veil_protocol::pb::attestation::{GetNodeInfoRequest, NodeInfo};

use crate::Output;
use crate::collateral::{self, Fetched};

/// Which node, and what it must prove: shared by verify, init and recover.
#[derive(clap::Args)]
pub struct NodeArgs {
    /// The node's agent port, HOST:PORT.
    #[arg(long)]
    pub node: String,
    /// Reference measurements (`veil measure --output json IMAGE`).
    #[arg(long)]
    pub measurements: PathBuf,
    /// The CA that certifies the node's TPM endorsement key (PEM). Nothing else is
    /// trusted. Needed for the `qemu` profile (and without a profile); other profiles
    /// trust the hardware report that names the vTPM's key instead.
    #[arg(long)]
    pub tpm_ca: Option<PathBuf>,
    /// Intermediate CA certificates between the TPM CA and EK certificates (PEM).
    #[arg(long)]
    pub tpm_intermediate: Option<PathBuf>,
    /// Per-platform policy (JSON): which SEV-SNP and TDX evidence to accept, with
    /// minimum TCB, launch measurements, MRTD/RTMRs. Without it only TPM evidence is
    /// accepted.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Where the node runs: qemu, azure-sev-snp, azure-tdx, gcp-sev-snp, gcp-tdx or
    /// aws-sev-snp. Only that profile's evidence is accepted. Must agree with the
    /// policy's "profile" if it names one.
    #[arg(long)]
    pub profile: Option<Profile>,
    /// Where the policy checks TD quotes and holds no Intel collateral for them, fetch
    /// it for the node's platform from Intel's PCS (over TLS; Intel signs it, and it is
    /// checked against Intel's pinned root like collateral in the policy).
    #[arg(long)]
    pub fetch_collateral: bool,
    /// Fetch from this PCCS (PCS API v4, e.g. https://pccs.internal:8081) instead of
    /// Intel's PCS.
    #[arg(long, requires = "fetch_collateral")]
    pub pcs_url: Option<String>,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    node: NodeArgs,
    /// Also require PCR 15 to hold this cluster id (hex, as `veil init` printed it):
    /// the node has joined that cluster in this boot.
    #[arg(long)]
    cluster_id: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

/// An attested node: the aTLS channel to it and how it compared with the reference.
pub struct Attested {
    /// None when the handshake itself refused the node (enforced PCRs differ).
    pub channel: Option<tonic::transport::Channel>,
    pub report: Report,
    /// The reference measurements file's text, as checked against.
    pub reference_text: String,
    /// The platform policy file's text, if one was given.
    pub policy_text: Option<String>,
}

/// The comparison of a node's quoted PCRs with the reference.
pub struct Report {
    pub node: String,
    pub info: NodeInfo,
    pub checks: Vec<PcrCheck>,
    pub expected: BTreeMap<u32, ([u8; 32], bool)>,
    /// Components named from the node's event log, for differing PCRs.
    pub why: Vec<String>,
    /// Which kind of evidence the node presented.
    pub evidence: EvidencePlatform,
    /// What SEV-SNP or TDX evidence proved (checked against the platform policy).
    pub platform: Vec<(&'static str, String)>,
    /// The profile the node was verified under, if one was named.
    pub profile: Option<Profile>,
    pub ok: bool,
}

impl Report {
    pub fn print(&self, output: Output) -> anyhow::Result<()> {
        match output {
            Output::Human => print!("{}", table(self)),
            Output::Json => println!("{}", serde_json::to_string_pretty(&json(self))?),
        }
        Ok(())
    }
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Returns whether the node matched the reference.
pub fn run(args: &Args) -> anyhow::Result<bool> {
    let mut extra = BTreeMap::new();
    if let Some(id) = &args.cluster_id {
        let id = veil_keys::ClusterId::from_hex(id)
            .with_context(|| format!("--cluster-id '{id}' is not 64 hex digits"))?;
        extra.insert(15, (id.member_pcr(), false));
    }
    let runtime = runtime()?;
    let attested = runtime.block_on(attest_node(&args.node, extra, false))?;
    attested.report.print(args.output)?;
    Ok(attested.report.ok)
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Attests the node and compares it with the reference (plus `extra` expectations:
/// PCR → (value, warn-only)); the channel stays open for calls that need a verified
/// node.
///
/// With `enforce`, the comparison happens inside the handshake (veil-atls'
/// [`PcrValidator`]): a node that differs gets no channel at all, and every
/// reconnect of the channel is held to the same values, so a call that carries a
/// secret can never travel over a connection whose PCRs were not compared. Without
/// it (`veil verify`), a differing node is only reported.
pub async fn attest_node(
    args: &NodeArgs,
    extra: BTreeMap<u32, ([u8; 32], bool)>,
    enforce: bool,
) -> anyhow::Result<Attested> {
    let Prepared {
        verifier,
        expected,
        reference,
        reference_text,
        policy_text,
        collateral,
        lacks_collateral,
    } = prepare(args, extra).await?;
    let profile = verifier.profile();
    let (channel, verified, info) = attest(&args.node, verifier, enforce.then(|| expected.clone()))
        .await
        .map_err(|e| {
            if lacks_collateral && format!("{e:#}").contains(veil_attest::tdx::NO_COLLATERAL) {
                e.context("the policy holds no Intel collateral for TD quotes: --fetch-collateral fetches it for the node's platform")
            } else {
                e
            }
        })?;
    let checks = check_pcrs(&verified.pcrs, &expected);
    let ok = checks.iter().all(|c| {
        !matches!(
            c.outcome,
            PcrOutcome::Mismatch | PcrOutcome::Missing { warn_only: false }
        )
    });
    let differs = checks
        .iter()
        .any(|c| matches!(c.outcome, PcrOutcome::Mismatch | PcrOutcome::WarnMismatch));
    let why = if differs {
        explain(&verified, &reference)
    } else {
        Vec::new()
    };
    Ok(Attested {
        channel,
        reference_text,
        policy_text,
        report: Report {
            node: args.node.clone(),
            info,
            checks,
            expected,
            why,
            evidence: verified.platform,
            platform: platform_facts(&verified, collateral.as_ref()),
            profile,
            ok,
        },
    })
}

/// What checking a node against `args` takes: the verifier (TPM CA, platform policy)
/// and the PCR values expected (the reference's, then `extra`).
pub struct Prepared {
    pub verifier: PlatformVerifier,
    pub expected: BTreeMap<u32, ([u8; 32], bool)>,
    pub reference: ReferenceMeasurements,
    pub reference_text: String,
    pub policy_text: Option<String>,
    /// Intel's collateral fetched for the node (`--fetch-collateral`).
    pub collateral: Option<Fetched>,
    /// Whether the policy still checks TD quotes without collateral (then a refusal for
    /// that says how to fetch some).
    pub lacks_collateral: bool,
}

pub async fn prepare(
    args: &NodeArgs,
    extra: BTreeMap<u32, ([u8; 32], bool)>,
) -> anyhow::Result<Prepared> {
    let reference_text = String::from_utf8(read(&args.measurements, "reference measurements")?)
        .with_context(|| format!("{} is not UTF-8 text", args.measurements.display()))?;
    let reference = ReferenceMeasurements::from_json(&reference_text).with_context(|| {
        format!(
            "{} is not a reference measurements file (veil measure --output json)",
            args.measurements.display()
        )
    })?;
    let (mut policy, policy_name, policy_text) = match &args.policy {
        None => (
            PlatformPolicy::default(),
            "the policy (no --policy file was given)".to_owned(),
            None,
        ),
        Some(path) => {
            let name = path.display().to_string();
            let text = String::from_utf8(read(path, "platform policy")?)
                .with_context(|| format!("{name} is not UTF-8 text"))?;
            (PlatformPolicy::from_json(&name, &text)?, name, Some(text))
        }
    };
    // The policy, the command line and the reference may each name a profile; those
    // that do must agree.
    let from_reference = reference
        .profile
        .as_deref()
        .map(str::parse::<Profile>)
        .transpose()
        .map_err(|e| anyhow!("{}: {e}", args.measurements.display()))?;
    let measurements_name = args.measurements.display().to_string();
    let mut named_by = policy_name.clone();
    for (profile, source) in [
        (args.profile, "--profile"),
        (from_reference, measurements_name.as_str()),
    ] {
        let Some(profile) = profile else { continue };
        match policy.profile {
            Some(named) if named != profile => {
                return Err(anyhow!(
                    "{source} names profile {profile}, but {named_by} names profile {named}"
                ));
            }
            Some(_) => {}
            None => {
                policy.profile = Some(profile);
                named_by = source.to_owned();
            }
        }
    }
    let trust = match (
        &args.tpm_ca,
        policy.profile.is_none_or(Profile::activates_ak),
    ) {
        (Some(ca), _) => EkTrust::from_pem_files(ca, args.tpm_intermediate.as_deref())
            .context("loading the TPM CA")?,
        (None, false) => EkTrust::default(),
        (None, true) => {
            return Err(anyhow!(
                "--tpm-ca is needed: under profile {} the node's AK is activated against an EK that CA certifies",
                policy.profile.unwrap_or(Profile::Qemu)
            ));
        }
    };
    let collateral = match args.fetch_collateral {
        false => None,
        true => {
            let pcs = collateral::pcs(args.pcs_url.as_deref())?;
            collateral::complete(&args.node, &mut policy, &pcs).await?
        }
    };
    let lacks_collateral = policy.lacks_tdx_collateral();
    let verifier = PlatformVerifier::new(TpmVerifier::new(trust), &policy, &policy_name)?;

    let mut expected: BTreeMap<u32, ([u8; 32], bool)> = reference
        .pcrs
        .iter()
        .map(|(&i, p)| (i, (p.expected.0, p.warn_only)))
        .collect();
    expected.extend(extra);
    Ok(Prepared {
        verifier,
        expected,
        reference,
        reference_text,
        policy_text,
        collateral,
        lacks_collateral,
    })
}

/// What hardware evidence proved, as (name, value) lines; empty for TPM evidence.
/// With the Intel collateral fetched for it, if any.
fn platform_facts(
    verified: &Verified,
    collateral: Option<&Fetched>,
) -> Vec<(&'static str, String)> {
    let mut facts = Vec::new();
    if let Some(snp) = &verified.snp {
        facts.push(("SEV-SNP launch measurement", hex::encode(snp.measurement)));
        facts.push(("SEV-SNP reported TCB", snp.reported_tcb.to_string()));
        facts.push(("SEV-SNP guest policy", format!("{:#x}", snp.policy)));
        facts.push(("SEV-SNP VMPL", snp.vmpl.to_string()));
    }
    if let Some(tdx) = &verified.tdx {
        facts.push(("TDX MRTD", hex::encode(tdx.mr_td)));
        for (i, r) in tdx.rtmrs.iter().enumerate() {
            facts.push((
                ["TDX RTMR0", "TDX RTMR1", "TDX RTMR2", "TDX RTMR3"][i],
                hex::encode(r),
            ));
        }
        facts.push(("TDX TCB status", tdx.tcb_status.clone()));
        if let Some(fetched) = collateral {
            facts.push((
                "TDX collateral",
                format!("fetched from {} for FMSPC {}", fetched.from, fetched.fmspc),
            ));
        }
        if !tdx.advisory_ids.is_empty() {
            facts.push(("TDX advisories at that TCB", tdx.advisory_ids.join(", ")));
        }
        // Bit 28: only Azure's paravisor TD may run without it (it takes #VE itself).
        let sept_ve_disable = tdx.td_attributes[3] & (1 << 4) != 0;
        facts.push((
            "TD attributes",
            format!(
                "{} (SEPT_VE_DISABLE {})",
                hex::encode(tdx.td_attributes),
                if sept_ve_disable { "set" } else { "clear" }
            ),
        ));
    }
    if let Some(gcp) = &verified.gcp {
        facts.push(("GCE vTPM AK certificate", gcp.ak_subject.clone()));
        facts.push(("GCE vTPM AK issuer", gcp.ak_issuer.clone()));
    }
    if let Some(azure) = &verified.azure {
        facts.push((
            "Azure paravisor's vmUniqueId",
            azure.vm_unique_id.clone().unwrap_or_else(|| "-".into()),
        ));
        facts.push((
            "Azure paravisor states Secure Boot",
            azure.secure_boot.to_string(),
        ));
        facts.push((
            if verified.tdx.is_some() {
                "TD report fresh (carries this session's data)"
            } else {
                "SEV-SNP report fresh (carries this session's data)"
            },
            azure.report_is_fresh.to_string(),
        ));
    }
    facts
}

/// [`attested_channel`], then asks over that channel what the node is.
async fn attest(
    node: &str,
    verifier: PlatformVerifier,
    enforce: Option<BTreeMap<u32, ([u8; 32], bool)>>,
) -> anyhow::Result<(Option<tonic::transport::Channel>, Verified, NodeInfo)> {
    let (channel, verified) = attested_channel(node, verifier, enforce).await?;
    let Some(channel) = channel else {
        return Ok((None, verified, NodeInfo::default()));
    };
    let info = AttestationClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .get_node_info(GetNodeInfoRequest {})
        .await
        .map_err(|s| {
            anyhow!(
                "{node} (verified) did not answer GetNodeInfo: {}",
                s.message()
            )
        })?
        .into_inner();
    Ok((Some(channel), verified, info))
}

/// Activates the node's AK over plain gRPC, then takes its quote in a one-way aTLS
/// handshake (this side anonymous). With `enforce`, the handshake refuses a node
/// whose PCRs differ from those values: then there is no channel, only what the
/// refused evidence proved.
pub async fn attested_channel(
    node: &str,
    mut verifier: PlatformVerifier,
    enforce: Option<BTreeMap<u32, ([u8; 32], bool)>>,
) -> anyhow::Result<(Option<tonic::transport::Channel>, Verified)> {
    // Under a profile whose hardware report names the vTPM's AK there is nothing to
    // activate: an EK certificate would only add the cloud's word.
    if verifier.activates_ak() {
        let channel = veil_protocol::client::plain(node).await?;
        let ak = veil_protocol::activation::activate_peer(channel, node, verifier.tpm()).await?;
        verifier.tpm_mut().add_trusted_ak(ak);
    }
    match enforce {
        None => {
            let (channel, verified) =
                veil_protocol::client::atls(node, None, Arc::new(VerifierValidator(verifier)))
                    .await
                    .with_context(|| format!("attesting {node}"))?;
            Ok((Some(channel), verified))
        }
        Some(expected) => {
            let validator = Arc::new(PcrValidator::new(VerifierValidator(verifier), expected));
            match veil_protocol::client::atls(node, None, validator.clone()).await {
                Ok((channel, verified)) => Ok((Some(channel), verified)),
                Err(e) => match validator.last_refused() {
                    Some(verified) => Ok((None, verified)),
                    None => Err(anyhow::Error::new(e).context(format!("attesting {node}"))),
                },
            }
        }
    }
}

/// Names the component behind each differing PCR from the node's event logs. They
/// are not signed: `diff_reference_against_log` believes them only for PCRs they
/// replay to exactly as quoted.
fn explain(verified: &Verified, reference: &ReferenceMeasurements) -> Vec<String> {
    let cannot = |why: String| vec![format!("cannot name the components that differ: {why}")];
    let Some(firmware) = &verified.event_log else {
        return cannot("the node sent no firmware event log".into());
    };
    let mut log = match EventLog::parse_tcg("the node's firmware event log", firmware) {
        Ok(log) => log,
        Err(e) => return cannot(e.to_string()),
    };
    if let Some(systemd) = &verified.systemd_log {
        match EventLog::parse_systemd_json("the node's systemd event log", systemd) {
            Ok(more) => log.append(more),
            Err(e) => return cannot(e.to_string()),
        }
    }
    let quoted = verified
        .pcrs
        .iter()
        .map(|(&i, &v)| (i, Digest(v)))
        .collect();
    diff_reference_against_log(reference, &quoted, &log)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn outcome(c: &PcrCheck) -> &'static str {
    match c.outcome {
        PcrOutcome::Match => "ok",
        PcrOutcome::WarnMismatch => "differs (warn-only)",
        PcrOutcome::Mismatch => "DIFFERS",
        PcrOutcome::Missing { .. } => "NOT QUOTED",
    }
}

fn evidence_name(platform: EvidencePlatform) -> &'static str {
    match platform {
        EvidencePlatform::Tpm => "TPM quote verified (AK activated against a trusted EK)",
        EvidencePlatform::SevSnp => "SEV-SNP report verified (VCEK chains to AMD's pinned roots)",
        EvidencePlatform::Tdx => "TDX quote verified (chains to Intel's pinned root)",
        EvidencePlatform::AzureTdx => {
            "Azure vTPM quote verified (its AK named by the paravisor's TD report, whose TD quote chains to Intel's pinned root)"
        }
        EvidencePlatform::GcpVtpm => {
            "GCE vTPM quote verified (its AK certified by Google's pinned EK/AK CA root; Google's vTPM is outside the TEE)"
        }
        EvidencePlatform::AzureSevSnp => {
            "Azure vTPM quote verified (its AK named by the paravisor's SEV-SNP report, which chains to AMD's pinned roots)"
        }
        _ => "evidence verified",
    }
}

fn table(r: &Report) -> String {
    let bound = match (r.evidence, r.platform.is_empty()) {
        (EvidencePlatform::Tpm, false) => ", with a hardware report over its AK",
        _ => "",
    };
    let mut out = format!(
        "node {} ({}, veil-bootstrapper {}): {}{bound}\n",
        r.node,
        r.info.platform,
        r.info.bootstrapper_version,
        evidence_name(r.evidence)
    );
    if let Some(profile) = r.profile {
        out.push_str(&format!(
            "  profile: {profile}: proves {}\n",
            profile.proves()
        ));
    }
    for (name, value) in &r.platform {
        out.push_str(&format!("  {name}: {value}\n"));
    }
    out.push_str(&format!(
        "\n{:>4}  {:<64}  {:<64}  {}\n",
        "PCR", "expected", "actual", "result"
    ));
    for c in &r.checks {
        let actual = c.actual.map_or_else(|| "-".into(), hex::encode);
        out.push_str(&format!(
            "{:>4}  {}  {:<64}  {}\n",
            c.index,
            hex::encode(c.expected),
            actual,
            outcome(c)
        ));
    }
    if !r.why.is_empty() {
        out.push_str("\nwhat differs (from the node's event log):\n");
        for line in &r.why {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str(if r.ok { "\nOK\n" } else { "\nFAILED\n" });
    out
}

fn json(r: &Report) -> serde_json::Value {
    let pcrs: serde_json::Map<String, serde_json::Value> = r
        .checks
        .iter()
        .map(|c| {
            (
                c.index.to_string(),
                serde_json::json!({
                    "expected": hex::encode(c.expected),
                    "actual": c.actual.map(hex::encode),
                    "enforced": !r.expected.get(&c.index).is_some_and(|e| e.1),
                    "match": c.outcome == PcrOutcome::Match,
                }),
            )
        })
        .collect();
    let platform: serde_json::Map<String, serde_json::Value> = r
        .platform
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone().into()))
        .collect();
    serde_json::json!({
        "result": if r.ok { "OK" } else { "FAILED" },
        "node": { "platform": r.info.platform, "bootstrapperVersion": r.info.bootstrapper_version },
        "evidence": r.evidence,
        "profile": r.profile.map(|p| p.name()),
        "platformFacts": platform,
        "pcrs": pcrs,
        "differences": r.why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `veil verify` prints for the recorded Azure TDX CVM's evidence (the real
    /// verification, at a time inside its Intel collateral).
    #[test]
    fn an_azure_tdx_node_is_described_as_a_td() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../agents/attest/tests/data/azure"
        );
        let read = |f: &str| std::fs::read(format!("{dir}/{f}")).expect("recorded evidence");
        let td_quote = read("tdx-td-quote.bin");
        let mut pcrs = BTreeMap::new();
        for (i, v) in read("tdx-quote-pcrs.bin").chunks(32).enumerate() {
            pcrs.insert(
                i as u32,
                veil_attest::Digest32(v.try_into().expect("32 bytes")),
            );
        }
        let ev = veil_attest::azure::AzureTdxEvidence {
            hcl_report: read("tdx-hcl-report.bin"),
            td_quote: td_quote.clone(),
            quote: read("tdx-quote.bin"),
            signature: read("tdx-quote.sig"),
            pcrs,
        };
        let verifier = veil_attest::tdx::TdxVerifier::new(veil_attest::tdx::TdxPolicy {
            allowed_mrtd: vec![
                veil_attest::tdx::TdQuote::parse(&td_quote)
                    .expect("quote")
                    .mr_td,
            ],
            allowed_tcb_status: vec!["OutOfDate".into()],
            now: Some(1_748_736_000),
            ..Default::default()
        })
        .with_collateral_json(
            &String::from_utf8(read("tdx-collateral-00806f050000.json")).expect("UTF-8"),
        )
        .expect("collateral");
        let verified = veil_attest::azure::verify_azure_tdx(&ev, &verifier, b"challenge")
            .expect("the recorded evidence verifies");
        let facts: BTreeMap<_, _> = platform_facts(&verified, None).into_iter().collect();
        assert_eq!(facts["TDX TCB status"], "OutOfDate");
        assert!(
            facts["TD attributes"].ends_with("(SEPT_VE_DISABLE clear)"),
            "{facts:?}"
        );
        assert!(
            facts["TDX advisories at that TCB"].contains("INTEL-SA-"),
            "{facts:?}"
        );
        assert_eq!(
            facts["TD report fresh (carries this session's data)"],
            "false"
        );
        assert!(!facts.keys().any(|k| k.contains("SEV-SNP")), "{facts:?}");
        assert!(!facts.contains_key("TDX collateral"), "{facts:?}");

        let fetched = Fetched {
            fmspc: "00806F050000".into(),
            from: "https://pccs.internal:8081".into(),
        };
        let facts: BTreeMap<_, _> = platform_facts(&verified, Some(&fetched))
            .into_iter()
            .collect();
        assert_eq!(
            facts["TDX collateral"],
            "fetched from https://pccs.internal:8081 for FMSPC 00806F050000"
        );
    }

    /// A node (TEST DOUBLE) presenting the recorded Azure TDX evidence, and a policy
    /// for it without collateral.
    async fn td_node_and_args(connections: usize) -> (NodeArgs, tempfile::TempDir) {
        use crate::collateral::{pcs_support, tests::node_double};
        let own = veil_attest::Evidence::AzureTdx(pcs_support::recorded_azure_tdx());
        let veil_attest::Evidence::AzureTdx(ev) = &own else {
            unreachable!()
        };
        let mr_td = veil_attest::tdx::TdQuote::parse(&ev.td_quote)
            .expect("quote")
            .mr_td;
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = dir.path().join("policy.json");
        std::fs::write(
            &policy,
            format!(
                r#"{{"profile": "azure-tdx", "azureTdx": {{"mrtd": ["{}"], "tcbStatus": ["OutOfDate"]}}}}"#,
                hex::encode(mr_td)
            ),
        )
        .expect("policy");
        let measurements = dir.path().join("reference.json");
        std::fs::write(
            &measurements,
            format!(
                r#"{{"pcrs": {{"4": {{"expected": "{}", "warnOnly": false}}}},
                    "image": {{"ukiSha256": "{0}", "osRelease": {{}}}}}}"#,
                "00".repeat(32)
            ),
        )
        .expect("reference");
        let args = NodeArgs {
            node: node_double(own.encode(), connections).await,
            measurements,
            tpm_ca: None,
            tpm_intermediate: None,
            policy: Some(policy),
            profile: None,
            fetch_collateral: false,
            pcs_url: None,
        };
        (args, dir)
    }

    #[tokio::test]
    async fn a_td_refused_for_want_of_collateral_is_told_how_to_get_it_and_gets_it_so() {
        let (mut args, _dir) = td_node_and_args(3).await;
        let e = attest_node(&args, BTreeMap::new(), false)
            .await
            .err()
            .expect("no collateral");
        let text = format!("{e:#}");
        assert!(
            text.contains(veil_attest::tdx::NO_COLLATERAL)
                && text.contains("--fetch-collateral fetches it"),
            "{text}"
        );

        // Fetched for the node's platform from a PCS (TEST DOUBLE serving Intel's
        // recorded answers): the TD quote is then checked with it, and refused further
        // on (this 2025 collateral is out of its dates now), not for want of it.
        let (base, served) =
            veil_fetch::test_support::serve(crate::collateral::tests::pcs_double_routes(), 4, None)
                .await;
        args.fetch_collateral = true;
        args.pcs_url = Some(base);
        let e = attest_node(&args, BTreeMap::new(), false)
            .await
            .err()
            .expect("the recorded evidence is not this handshake's");
        assert_eq!(served.await.expect("served").len(), 4);
        let text = format!("{e:#}");
        assert!(
            !text.contains(veil_attest::tdx::NO_COLLATERAL) && !text.contains("--fetch-collateral"),
            "{text}"
        );
        assert!(text.contains("TCB info expired at 1750965902"), "{text}");
    }
}

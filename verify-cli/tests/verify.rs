//! `veil verify` against the node's real attestation endpoint (veil-bootstrapper's,
//! in-process) backed by a real swtpm with an EK certificate from a local CA.

#[path = "../../agents/attest/tests/support/mod.rs"]
mod support;

use std::net::TcpListener;

use support::{LocalCa, Swtpm};
use veil_attest::tpm::TpmAttesterConfig;

struct Node {
    _tpm: Swtpm,
    addr: String,
    ca: &'static LocalCa,
    init_secret: std::path::PathBuf,
    dir: tempfile::TempDir,
}

/// The hash of a new init secret that `veil init-secret new` writes to `file`.
fn new_init_secret(file: &std::path::Path) -> [u8; 32] {
    let out = support::command(env!("CARGO_BIN_EXE_veil"))
        .args(["init-secret", "new", "--output", "json"])
        .arg(file)
        .output()
        .expect("run veil init-secret");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let hash = hex::decode(v["initSecretHash"].as_str().expect("hash")).expect("hex");
    hash.try_into().expect("32 bytes")
}

/// A node launched with the hash of the init secret in its dir's `init-secret.json`.
fn node() -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = new_init_secret(&dir.path().join("init-secret.json"));
    node_launched(
        dir,
        veil_protocol::launch::LaunchConfig {
            init_secret_hash: Some(hash),
            cluster_id: None,
        },
    )
}

fn node_launched(dir: tempfile::TempDir, launch: veil_protocol::launch::LaunchConfig) -> Node {
    let ca = LocalCa::shared();
    let tpm = Swtpm::start(ca);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    // A firmware log with no extends: it replays to the fresh swtpm's all-zero PCRs.
    let log = dir.path().join("bios.log");
    std::fs::write(&log, measured_boot::testing::tcg_log(&[])).expect("log");
    let mut config = TpmAttesterConfig::with_tcti(tpm.tcti());
    config.event_log = Some(log);
    config.systemd_log = None;
    veil_bootstrapper::attestation::start(config, listener, None, None, ("/".into(), None), launch)
        .expect("start endpoint");
    std::fs::write(dir.path().join("root.pem"), ca.root_pem()).expect("root");
    std::fs::write(dir.path().join("issuer.pem"), ca.intermediate_pem()).expect("issuer");
    Node {
        _tpm: tpm,
        addr,
        ca,
        init_secret: dir.path().join("init-secret.json"),
        dir,
    }
}

/// A reference file in `veil measure`'s format; a fresh swtpm has all-zero PCRs.
fn reference(node: &Node, pcr4: &str) -> std::path::PathBuf {
    let zero = "00".repeat(32);
    let json = format!(
        r#"{{"pcrs": {{"4": {{"expected": "{pcr4}", "warnOnly": false,
                            "events": [{{"component": "UKI PE hash", "digest": "{pcr4}"}}]}},
                     "9": {{"expected": "{zero}", "warnOnly": false}},
                     "11": {{"expected": "{zero}", "warnOnly": false}},
                     "12": {{"expected": "{zero}", "warnOnly": true}}}},
            "image": {{"ukiSha256": "{zero}", "osRelease": {{}}}}}}"#
    );
    let path = node.dir.path().join(format!("ref-{pcr4}.json"));
    std::fs::write(&path, json).expect("write reference");
    path
}

fn verify(node: &Node, reference: &std::path::Path, ca: &str) -> std::process::Output {
    veil_trusting(node, &["verify", "--output", "json"], reference, ca)
}

#[test]
fn matching_node_is_ok_and_a_wrong_pcr_is_named() {
    let n = node();
    let _ = n.ca;
    let good = reference(&n, &"00".repeat(32));
    let out = verify(&n, &good, "root.pem");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v["result"], "OK");
    assert_eq!(v["pcrs"]["4"]["match"], true);
    assert_eq!(v["pcrs"]["12"]["enforced"], false);

    let bad = reference(&n, &"ab".repeat(32));
    let out = verify(&n, &bad, "root.pem");
    assert!(!out.status.success());
    let v: serde_json::Value =
        serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).expect("json");
    assert_eq!(v["result"], "FAILED");
    assert_eq!(v["pcrs"]["4"]["match"], false);
    assert_eq!(v["pcrs"]["4"]["expected"], "ab".repeat(32));
    assert_eq!(v["pcrs"]["4"]["actual"], "00".repeat(32));
    assert_eq!(v["pcrs"]["9"]["match"], true);
    // The node's (replaying) event log names what is missing.
    let why = v["differences"].as_array().expect("differences");
    assert_eq!(why.len(), 1, "{why:?}");
    assert_eq!(why[0], "PCR 4: UKI PE hash missing");
}

#[test]
fn node_whose_ek_is_not_under_the_given_ca_is_refused() {
    let n = node();
    // Trust another CA only (swtpm_localca makes its root when it first certifies).
    let other = LocalCa::new();
    drop(Swtpm::start(&other));
    std::fs::write(n.dir.path().join("other.pem"), other.root_pem()).expect("other root");
    let good = reference(&n, &"00".repeat(32));
    let out = verify(&n, &good, "other.pem");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not trusted"), "{stderr}");
}

/// Runs `veil ARGS` against the node, trusting the TPM CA file `ca` (in the node's dir).
fn veil_trusting(
    node: &Node,
    args: &[&str],
    reference: &std::path::Path,
    ca: &str,
) -> std::process::Output {
    support::command(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .args(["--node", &node.addr])
        .arg("--measurements")
        .arg(reference)
        .arg("--tpm-ca")
        .arg(node.dir.path().join(ca))
        .arg("--tpm-intermediate")
        .arg(node.dir.path().join("issuer.pem"))
        .output()
        .expect("run veil")
}

fn veil(node: &Node, args: &[&str], reference: &std::path::Path) -> std::process::Output {
    veil_trusting(node, args, reference, "root.pem")
}

/// `veil init` with the operator's init secret (the node's dir's) and `secret` as the
/// master-secret file.
fn init_args<'a>(node: &'a Node, secret: &'a std::path::Path) -> Vec<&'a str> {
    vec![
        "init",
        "--master-secret",
        secret.to_str().expect("utf-8"),
        "--init-secret",
        node.init_secret.to_str().expect("utf-8"),
    ]
}

#[test]
fn cluster_id_is_checked_against_pcr_15() {
    let n = node();
    let good = reference(&n, &"00".repeat(32));
    // A fresh TPM has PCR 15 at zero: it has joined no cluster.
    let out = veil(
        &n,
        &[
            "verify",
            "--output",
            "json",
            "--cluster-id",
            &"11".repeat(32),
        ],
        &good,
    );
    assert!(!out.status.success());
    let v: serde_json::Value =
        serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).expect("json");
    assert_eq!(v["pcrs"]["15"]["match"], false);
    assert_eq!(v["pcrs"]["15"]["enforced"], true);

    let out = veil(&n, &["verify", "--cluster-id", "xyz"], &good);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--cluster-id 'xyz'"), "{stderr}");
}

#[test]
fn init_sends_nothing_to_a_node_that_does_not_match() {
    let n = node();
    let bad = reference(&n, &"ab".repeat(32));
    let secret = n.dir.path().join("master.json");
    let out = veil(&n, &init_args(&n, &secret), &bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the master secret was not sent"),
        "{stderr}"
    );
    // The table says why.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("DIFFERS"), "{stdout}");

    // The file was written first and is never overwritten by a second init.
    let before = std::fs::read(&secret).expect("master secret written");
    let good = reference(&n, &"00".repeat(32));
    let out = veil(&n, &init_args(&n, &secret), &good);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(&secret).expect("still there"), before);
}

#[test]
fn init_on_a_node_without_a_state_disk_says_so() {
    // The in-process node runs on a host, not from a verity root: it serves no
    // Bootstrap (it must never touch the host's disks), and veil says what failed.
    let n = node();
    let good = reference(&n, &"00".repeat(32));
    let secret = n.dir.path().join("master.json");
    let out = veil(&n, &init_args(&n, &secret), &good);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused init"), "{stderr}");
    assert!(stderr.contains(secret.to_str().expect("utf-8")), "{stderr}");
}

#[test]
fn platform_policy_file_is_read_and_its_mistakes_named() {
    let n = node();
    let good = reference(&n, &"00".repeat(32));
    // Accepting SEV-SNP and TDX as well does not change what a TPM node must show.
    let policy = n.dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"sevSnp": {"product": "genoa", "minTcb": {"snp": 8}}, "tdx": {}}"#,
    )
    .expect("policy");
    let policy_arg = policy.to_string_lossy().into_owned();
    let out = veil(
        &n,
        &["verify", "--output", "json", "--policy", &policy_arg],
        &good,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v["result"], "OK");
    assert_eq!(v["evidence"], "tpm");
    assert_eq!(v["platformFacts"], serde_json::json!({}));

    std::fs::write(&policy, r#"{"sevSnp": {"product": "milan", "minTCB": {}}}"#).expect("policy");
    let out = veil(&n, &["verify", "--policy", &policy_arg], &good);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{policy_arg} is not a Veil platform policy")),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `minTCB`"), "{stderr}");
}

#[test]
fn init_needs_the_init_secret_the_node_was_launched_with() {
    let n = node();
    let good = reference(&n, &"00".repeat(32));
    let secret = n.dir.path().join("master.json");
    let path = secret.to_str().expect("utf-8");

    // Without an init secret: refused before anything, no master secret made.
    let out = veil(&n, &["init", "--master-secret", path], &good);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("veil init needs --init-secret"), "{stderr}");
    assert!(!secret.exists(), "no master secret was made");

    // A reference that leaves PCR 11 out: refused before anything.
    let zero = "00".repeat(32);
    let loose = n.dir.path().join("loose.json");
    std::fs::write(
        &loose,
        format!(
            r#"{{"pcrs": {{"4": {{"expected": "{zero}", "warnOnly": false}},
                          "9": {{"expected": "{zero}", "warnOnly": false}},
                          "11": {{"expected": "{zero}", "warnOnly": true}}}},
                "image": {{"ukiSha256": "{zero}", "osRelease": {{}}}}}}"#
        ),
    )
    .expect("write");
    let out = veil(&n, &init_args(&n, &secret), &loose);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not enforce PCR 11"), "{stderr}");
    assert!(!secret.exists(), "no master secret was made");

    // Another operator's init secret: the node's PCR 14 shows it expects a different
    // one, so the handshake is refused and nothing is sent.
    let other = n.dir.path().join("other-init-secret.json");
    new_init_secret(&other);
    let out = veil(
        &n,
        &[
            "init",
            "--master-secret",
            path,
            "--init-secret",
            other.to_str().expect("utf-8"),
        ],
        &good,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("launch configuration of this init secret (PCR 14)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the master secret was not sent"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("14") && l.contains("DIFFERS")),
        "{stdout}"
    );
    std::fs::remove_file(&secret).expect("the refused init's master secret");

    // The operator's own secret gets past the handshake (this in-process node serves
    // no Bootstrap: it runs on a host, never touching its disks).
    let out = veil(&n, &init_args(&n, &secret), &good);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused init"), "{stderr}");
}

#[test]
fn a_node_launched_without_an_init_secret_hash_is_refused_before_the_secret_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    new_init_secret(&dir.path().join("init-secret.json"));
    let n = node_launched(dir, veil_protocol::launch::LaunchConfig::default());
    let good = reference(&n, &"00".repeat(32));
    let secret = n.dir.path().join("master.json");
    let out = veil(&n, &init_args(&n, &secret), &good);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the master secret was not sent"),
        "{stderr}"
    );
    // veil verify (which only reports) shows the node's PCR 14 all the same.
    let out = verify(&n, &good, "root.pem");
    assert!(out.status.success());
}

/// A policy (in the node's dir) accepting Azure SEV-SNP CVMs with the paravisor's
/// launch digest of the recorded Genoa evidence.
fn azure_policy(node: &Node) -> std::path::PathBuf {
    let hcl = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../agents/attest/tests/data/azure/genoa-hcl-report.bin"
    ))
    .expect("recorded HCL report");
    let policy = node.dir.path().join("azure.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"azureSevSnp": {{"product": "genoa", "measurements": ["{}"]}}}}"#,
            hex::encode(&hcl[32 + 0x90..32 + 0x90 + 48])
        ),
    )
    .expect("policy");
    policy
}

#[test]
fn a_profile_is_named_in_the_report_and_a_node_of_another_kind_is_refused() {
    let n = node();
    let good = reference(&n, &"00".repeat(32));
    let out = veil(
        &n,
        &["verify", "--output", "json", "--profile", "qemu"],
        &good,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v["profile"], "qemu");
    assert_eq!(v["evidence"], "tpm");

    // Under azure-sev-snp this TPM node's evidence is refused for its kind; no TPM CA
    // is needed there (the paravisor's report names the AK), so none is given.
    let policy = azure_policy(&n);
    let bare = |args: &[&str]| {
        support::command(env!("CARGO_BIN_EXE_veil"))
            .args(args)
            .args(["--node", &n.addr])
            .arg("--measurements")
            .arg(&good)
            .output()
            .expect("run veil")
    };
    let policy_arg = policy.to_string_lossy().into_owned();
    let out = bare(&[
        "verify",
        "--profile",
        "azure-sev-snp",
        "--policy",
        &policy_arg,
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "presented tpm evidence, but nodes under profile \"azure-sev-snp\" must present azure-sev-snp evidence"
        ),
        "{stderr}"
    );

    // The qemu profile activates the AK, so it needs the TPM CA.
    let out = bare(&["verify", "--profile", "qemu"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tpm-ca is needed"), "{stderr}");
    // A profile whose section the policy lacks says what is missing.
    let out = bare(&["verify", "--profile", "azure-tdx", "--policy", &policy_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("profile \"azure-tdx\" needs an \"azureTdx\" section"),
        "{stderr}"
    );
}

/// A policy for Azure TDX CVMs with the recorded paravisor's MRTD and no collateral.
fn azure_tdx_policy(node: &Node) -> std::path::PathBuf {
    let quote = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../agents/attest/tests/data/azure/tdx-td-quote.bin"
    ))
    .expect("recorded TD quote");
    let mr_td = veil_attest::tdx::TdQuote::parse(&quote)
        .expect("quote")
        .mr_td;
    let policy = node.dir.path().join("azure-tdx.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"profile": "azure-tdx", "azureTdx": {{"mrtd": ["{}"]}}}}"#,
            hex::encode(mr_td)
        ),
    )
    .expect("policy");
    policy
}

#[test]
fn fetching_collateral_asks_nothing_for_evidence_without_a_td_quote() {
    let n = node();
    let good = reference(&n, &"00".repeat(32));
    let policy = azure_tdx_policy(&n);
    let policy_arg = policy.to_string_lossy().into_owned();
    let bare = |args: &[&str]| {
        support::command(env!("CARGO_BIN_EXE_veil"))
            .args(args)
            .args(["--node", &n.addr])
            .arg("--measurements")
            .arg(&good)
            .output()
            .expect("run veil")
    };
    // The TPM node's evidence holds no TD quote: no PCS is asked (nothing listens
    // at this one), and the node is refused for its kind as without the flag.
    let out = bare(&[
        "verify",
        "--policy",
        &policy_arg,
        "--fetch-collateral",
        "--pcs-url",
        "http://127.0.0.1:9",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("must present azure-tdx evidence"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("PCS") && !stderr.contains("127.0.0.1:9"),
        "{stderr}"
    );
    // Without the flag, the refusal is for its kind, not for collateral.
    let out = bare(&["verify", "--policy", &policy_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("must present azure-tdx evidence")
            && !stderr.contains("--fetch-collateral"),
        "{stderr}"
    );
    // A PCCS is only asked with --fetch-collateral.
    let out = bare(&[
        "verify",
        "--policy",
        &policy_arg,
        "--pcs-url",
        "http://127.0.0.1:9",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--fetch-collateral"), "{stderr}");
}

#[test]
fn a_profile_in_the_reference_holds_and_a_disagreeing_one_is_named() {
    let n = node();
    let good = reference(&n, &"00".repeat(32));
    // The same reference, marked for Azure by `veil measure --profile azure-sev-snp`.
    let mut marked: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&good).expect("reference")).expect("json");
    marked["profile"] = "azure-sev-snp".into();
    let azure_ref = n.dir.path().join("ref-azure.json");
    std::fs::write(&azure_ref, marked.to_string()).expect("write");
    let policy = azure_policy(&n);
    let policy_arg = policy.to_string_lossy().into_owned();
    let run = |reference: &std::path::Path, args: &[&str]| {
        support::command(env!("CARGO_BIN_EXE_veil"))
            .arg("verify")
            .args(args)
            .args(["--node", &n.addr])
            .arg("--measurements")
            .arg(reference)
            .output()
            .expect("run veil")
    };
    // No --profile: the reference's holds, and this TPM node is refused by kind.
    let out = run(&azure_ref, &["--policy", &policy_arg]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("nodes under profile \"azure-sev-snp\" must present azure-sev-snp evidence"),
        "{stderr}"
    );
    // A command line that says otherwise is refused before anything is asked.
    let out = run(&azure_ref, &["--policy", &policy_arg, "--profile", "qemu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("names profile azure-sev-snp, but --profile names profile qemu"),
        "{stderr}"
    );
    // A reference naming no profile changes nothing (the matching node is OK).
    let out = veil(&n, &["verify", "--output", "json"], &good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

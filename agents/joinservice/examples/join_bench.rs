//! Join cost on real swtpms: latency of whole joins (activation both ways, the mutual
//! aTLS handshake, the Join call) through a join service on this machine; how many
//! joiners one service can admit per second from recorded evidence (the handshake's
//! check of a quote plus the key derivation), one thread per core; and a crowd of
//! joiners at once through the served join service (every one must end admitted or
//! refused with a reason; the process's peak RSS before and after).
//!
//! ```text
//! join_bench --service-tcti T1 --joiner-tcti T2 --ca root.pem --intermediate ca.pem
//!            [-n 20] [--seconds 3] [--crowd 100]
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use veil_atls::{AttesterIssuer, EvidenceIssuer, EvidenceValidator};
use veil_attest::tpm::{EkTrust, TpmAttester, TpmAttesterConfig};
use veil_bootstrapper::bootstrap::Admission;
use veil_bootstrapper::join::{JoinConfig, fetch_ticket};
use veil_joinservice::{Cluster, JoinerValidator, Limits};
use veil_keys::MasterSecret;
use veil_protocol::pb::join::Role;

type BoxError = Box<dyn std::error::Error>;

struct Args {
    service_tcti: String,
    joiner_tcti: String,
    ca: String,
    intermediate: String,
    n: usize,
    seconds: u64,
    crowd: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut st, mut jt, mut ca, mut im, mut n, mut seconds) = (None, None, None, None, 20, 3);
    let mut crowd = 100;
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--service-tcti" => st = Some(val()?),
            "--joiner-tcti" => jt = Some(val()?),
            "--ca" => ca = Some(val()?),
            "--intermediate" => im = Some(val()?),
            "-n" => n = val()?.parse().map_err(|e| format!("-n: {e}"))?,
            "--seconds" => seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--crowd" => crowd = val()?.parse().map_err(|e| format!("--crowd: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        service_tcti: st.ok_or("--service-tcti is required")?,
        joiner_tcti: jt.ok_or("--joiner-tcti is required")?,
        ca: ca.ok_or("--ca is required")?,
        intermediate: im.ok_or("--intermediate is required")?,
        n: n.max(1),
        seconds: seconds.max(1),
        crowd,
    })
}

fn open(tcti: &str) -> Result<Arc<AttesterIssuer<TpmAttester>>, BoxError> {
    let mut config = TpmAttesterConfig::with_tcti(tcti);
    config.event_log = None;
    config.systemd_log = None;
    Ok(Arc::new(AttesterIssuer(Mutex::new(TpmAttester::open(
        &config,
    )?))))
}

/// Reference measurements that the joiner's current PCRs 4, 9 and 11 match.
fn reference_for(
    joiner: &AttesterIssuer<TpmAttester>,
) -> Result<measured_boot::reference::ReferenceMeasurements, BoxError> {
    let pcrs = joiner
        .0
        .lock()
        .map_err(|_| "lock")?
        .read_pcrs(&[4, 9, 11])?;
    let entries: Vec<String> = pcrs
        .iter()
        .map(|(i, v)| {
            format!(
                r#""{i}":{{"expected":"{}","warnOnly":false}}"#,
                hex::encode(v)
            )
        })
        .collect();
    let zero = "00".repeat(32);
    let json = format!(
        r#"{{"pcrs":{{{}}},"image":{{"ukiSha256":"{zero}","roothash":"{zero}","osRelease":{{}},"kernelVersion":"bench"}}}}"#,
        entries.join(",")
    );
    Ok(measured_boot::reference::ReferenceMeasurements::from_json(
        &json,
    )?)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

#[path = "../tests/support_kubernetes.rs"]
mod support_kubernetes;

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let trust = EkTrust::from_pem(&std::fs::read(&args.ca)?)?
        .with_intermediates_pem(&std::fs::read(&args.intermediate)?)?;
    let master = MasterSecret::generate();
    let service_tpm = open(&args.service_tcti)?;
    let joiner = open(&args.joiner_tcti)?;
    service_tpm
        .0
        .lock()
        .map_err(|_| "lock")?
        .extend_pcr(15, &master.cluster_id().0)?;
    let reference = reference_for(&joiner)?;

    // 1. Whole joins through a served join service.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let endpoint = listener.local_addr()?.to_string();
    listener.set_nonblocking(true)?;
    // Every joiner here comes from 127.0.0.1 and one swtpm: the per-address rates and
    // the per-EK cap on challenges are lifted (they stand for many machines and TPMs);
    // the caps on joins and handshakes in flight stay.
    let limits = Limits {
        per_ek_in_flight: usize::MAX,
        per_peer_per_minute: std::num::NonZeroU32::MAX,
        per_peer_burst: std::num::NonZeroU32::MAX,
        connections: veil_protocol::server::ConnectionLimits {
            per_peer_per_minute: std::num::NonZeroU32::MAX,
            per_peer_burst: std::num::NonZeroU32::MAX,
            ..Default::default()
        },
        ..Limits::default()
    };
    let roster_dir = tempfile::tempdir()?;
    let settings = Default::default();
    let mesh = veil_joinservice::mesh_plan(&settings).map_err(anyhow::Error::msg)?;
    let cluster = Cluster {
        master: MasterSecret::from_parts(master.secret(), master.salt())?,
        reference: reference.clone(),
        platform: Default::default(),
        settings,
        mesh,
        pods: "10.244.0.0/16".parse().expect("pods"),
        roster: std::sync::Arc::new(veil_joinservice::roster::Roster::load(
            roster_dir.path(),
            vec![],
            mesh,
        )?),
        own_mesh: None,
    };
    let kubernetes = std::sync::Arc::new(support_kubernetes::TestControlPlane::default());
    let (service_trust, serving_tpm) = (trust.clone(), service_tpm.clone());
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let credentials = veil_joinservice::Credentials {
            issuer: serving_tpm.clone(),
            tpm: serving_tpm,
            verifier: cluster
                .verifier(service_trust)
                .expect("the cluster's verifier"),
            collateral: None,
        };
        if let Err(e) =
            veil_joinservice::serve(listener, credentials, cluster, limits, kubernetes).await
        {
            eprintln!("join service stopped: {e}");
        }
    });
    let config = JoinConfig {
        endpoint: endpoint.clone(),
        trust: trust.clone(),
        role: Role::Worker,
        cluster_id: None,
        service_hardware: None,
        own_td: None,
        cloud_evidence: None,
        gcp: None,
    };
    let mut latencies = Vec::with_capacity(args.n);
    for i in 0..args.n {
        let uuid = format!("00000000-0000-4000-8000-{i:012x}");
        // Each joiner makes its own key: the roster refuses one another member has.
        // (Not in the low bytes: X25519 clears the lowest bits, and keys would repeat.)
        let mut seed = [9u8; 32];
        seed[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        let wireguard = x25519_dalek::StaticSecret::from(seed);
        let started = Instant::now();
        runtime.block_on(fetch_ticket(
            &joiner,
            &config,
            Admission::Join,
            &uuid,
            &wireguard,
            &veil_kube::NodeName::new(&format!("bench-{i}"))?,
        ))?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "== join latency: request -> ticket (real swtpms, {} joins) ==",
        args.n
    );
    println!(
        "  min {:.1} ms   median {:.1} ms   p90 {:.1} ms   max {:.1} ms",
        ms(latencies[0]),
        ms(percentile(&latencies, 50)),
        ms(percentile(&latencies, 90)),
        ms(latencies[latencies.len() - 1])
    );
    println!("  (each: both AK activations, two quotes, the mutual aTLS handshake, Join)");

    crowd(&runtime, &args, &endpoint, &trust, &joiner)?;

    // 2. Admissions per second from recorded evidence: what the service spends per
    //    joiner once the TPMs have done their part.
    let admission = Arc::new(veil_joinservice::Admission::new(
        veil_attest::PlatformVerifier::tpm_only(veil_attest::tpm::TpmVerifier::new(trust)),
        Limits::default(),
    ));
    let identity = joiner.0.lock().map_err(|_| "lock")?.identity().clone();
    let (id, credential) = admission.challenge(&identity)?;
    let secret = joiner.0.lock().map_err(|_| "lock")?.activate(&credential)?;
    admission.prove(&id, &secret)?;
    let validator = Arc::new(JoinerValidator::new(
        admission,
        &reference,
        &master.cluster_id(),
    ));
    let user_data = [0x5a; 32];
    let evidence = joiner.issue(&user_data)?;
    validator.validate(&evidence, &user_data)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let done = Arc::new(AtomicU64::new(0));
    let master = Arc::new(master);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (validator, evidence, done, master) = (
                validator.clone(),
                evidence.clone(),
                done.clone(),
                master.clone(),
            );
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    if validator.validate(&evidence, &user_data).is_ok()
                        && master
                            .disk_key("0a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9")
                            .is_ok()
                    {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "worker panicked")?;
    }
    let total = done.load(Ordering::Relaxed);
    println!(
        "== admissions per second from recorded evidence ({threads} threads, {} s) ==",
        args.seconds
    );
    println!(
        "  {:.0} /s   ({:.3} ms per admission per core: quote check against the reference + disk key)",
        total as f64 / args.seconds as f64,
        args.seconds as f64 * 1000.0 * threads as f64 / total.max(1) as f64
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Peak resident memory of this process so far (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// 3. `--crowd` joiners at once through the served join service, each retrying as a
///    node does until it is admitted or refused for a reason that retrying cannot
///    change. One swtpm plays every joiner (its quotes come one at a time, as from
///    one TPM), so this measures the service under a crowd, not the TPMs.
fn crowd(
    runtime: &tokio::runtime::Runtime,
    args: &Args,
    endpoint: &str,
    trust: &EkTrust,
    joiner: &Arc<AttesterIssuer<TpmAttester>>,
) -> Result<(), BoxError> {
    if args.crowd == 0 {
        return Ok(());
    }
    const ATTEMPTS: u32 = 60;
    let before = peak_rss_mib();
    let started = Instant::now();
    let outcomes: Vec<(Result<(), String>, u32)> = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..args.crowd {
            let config = JoinConfig {
                endpoint: endpoint.to_owned(),
                trust: trust.clone(),
                role: Role::Worker,
                cluster_id: None,
                service_hardware: None,
                own_td: None,
                cloud_evidence: None,
                gcp: None,
            };
            let joiner = joiner.clone();
            tasks.spawn(async move {
                let uuid = format!("00000000-0000-4000-9000-{i:012x}");
                let name =
                    veil_kube::NodeName::new(&format!("crowd-{i}")).map_err(|e| e.to_string());
                let wireguard = x25519_dalek::StaticSecret::from([i as u8; 32]);
                let mut last = String::new();
                for attempt in 1..=ATTEMPTS {
                    let name = match &name {
                        Ok(n) => n,
                        Err(e) => return (Err(e.clone()), attempt),
                    };
                    match fetch_ticket(&joiner, &config, Admission::Join, &uuid, &wireguard, name)
                        .await
                    {
                        Ok(_) => return (Ok(()), attempt),
                        Err(e) => last = format!("{e:#}"),
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                (Err(last), ATTEMPTS)
            });
        }
        let mut outcomes = Vec::new();
        while let Some(done) = tasks.join_next().await {
            outcomes.push(done.unwrap_or_else(|e| (Err(format!("task failed: {e}")), 0)));
        }
        outcomes
    });
    let elapsed = started.elapsed();
    let admitted = outcomes.iter().filter(|(r, _)| r.is_ok()).count();
    let mut refused: std::collections::BTreeMap<String, usize> = Default::default();
    for (r, _) in &outcomes {
        if let Err(e) = r {
            *refused.entry(e.chars().take(120).collect()).or_default() += 1;
        }
    }
    let retried = outcomes.iter().filter(|(_, a)| *a > 1).count();
    println!(
        "== a crowd: {} joiners at once through the served join service ==",
        args.crowd
    );
    println!(
        "  admitted {admitted}, refused {}, lost {} (of {}); {retried} needed more than one attempt",
        outcomes.len() - admitted,
        args.crowd - outcomes.len(),
        args.crowd
    );
    for (reason, n) in &refused {
        println!("    refused x{n}: {reason}");
    }
    println!(
        "  {:.1} admissions/s ({:.1} s for all); peak RSS of this process (service and clients) {:.1} MiB before, {:.1} MiB after",
        admitted as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        before,
        peak_rss_mib()
    );
    Ok(())
}

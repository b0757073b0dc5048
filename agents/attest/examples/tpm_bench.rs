//! Quote generation and verification cost of TPM evidence.
//!
//! ```text
//! tpm_bench --tcti swtpm:host=127.0.0.1,port=2321 --ca root.pem [--intermediate ca.pem]
//!           [-n 50] [--seconds 3]
//! ```
//!
//! Activates the AK against the EK certificate (trusting `--ca`), then prints the median
//! quote time, the mean CPU time of one verification, and verifications per second with
//! one thread per core. CPU time comes from /proc/thread-self/schedstat (nanoseconds on
//! CPU); where that file is missing, wall time of a single-threaded run is shown instead.

use std::time::{Duration, Instant};

use veil_attest::tpm::{EkTrust, TpmAttester, TpmAttesterConfig, TpmVerifier};
use veil_attest::{Attester, Verifier};

struct Args {
    tcti: String,
    ca: String,
    intermediate: Option<String>,
    n: usize,
    seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut tcti, mut ca, mut intermediate, mut n, mut seconds) = (None, None, None, 50, 3);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--tcti" => tcti = Some(val()?),
            "--ca" => ca = Some(val()?),
            "--intermediate" => intermediate = Some(val()?),
            "-n" => n = val()?.parse().map_err(|e| format!("-n: {e}"))?,
            "--seconds" => seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        tcti: tcti.ok_or("--tcti is required")?,
        ca: ca.ok_or("--ca is required")?,
        intermediate,
        n: n.max(1),
        seconds: seconds.max(1),
    })
}

/// Nanoseconds this thread has run on a CPU, if the kernel reports it.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| format!("{e}\nusage: tpm_bench --tcti T --ca ROOT.pem [--intermediate CA.pem] [-n N] [--seconds S]"))?;

    let mut trust = EkTrust::from_pem(&std::fs::read(&args.ca)?)?;
    if let Some(path) = &args.intermediate {
        trust = trust.with_intermediates_pem(&std::fs::read(path)?)?;
    }
    let mut att = TpmAttester::open(&TpmAttesterConfig::with_tcti(args.tcti.clone()))?;
    let mut verifier = TpmVerifier::new(trust);
    let start = Instant::now();
    let (challenge, pending) = verifier.challenge(att.identity())?;
    let secret = att.activate(&challenge)?;
    verifier.add_trusted_ak(pending.finish(&secret)?);
    println!(
        "ak activation (challenge + ActivateCredential + check): {:?}",
        start.elapsed()
    );

    let nonce = [0x5a; 32];
    let mut quote_times = Vec::with_capacity(args.n);
    let mut evidence = None;
    for _ in 0..args.n {
        let t = Instant::now();
        evidence = Some(att.evidence(&nonce)?);
        quote_times.push(t.elapsed());
    }
    let evidence = evidence.ok_or("no evidence")?;
    println!(
        "quote generation: median {:?} over {} (16 PCRs, ECDSA P-256 AK)",
        median(quote_times),
        args.n
    );
    println!("evidence size: {} bytes encoded", evidence.encode().len());

    // The scheduler's per-thread runtime advances at context switches and ticks (4 ms
    // at HZ=250), too coarsely for one sub-millisecond call or even a batch of 50 (it
    // printed 0 ns): take the CPU time of a batch of at least a second.
    let mut wall = Vec::with_capacity(args.n);
    let c0 = thread_cpu_ns();
    let batch = Instant::now();
    while wall.len() < args.n || batch.elapsed() < Duration::from_secs(1) {
        let t = Instant::now();
        verifier.verify(&evidence, &nonce)?;
        wall.push(t.elapsed());
    }
    if let (Some(c0), Some(c1)) = (c0, thread_cpu_ns()) {
        let per_call = c1.saturating_sub(c0) / wall.len() as u64;
        println!(
            "verification CPU time: mean {:?} over {}",
            Duration::from_nanos(per_call),
            wall.len()
        );
    }
    let calls = wall.len();
    println!(
        "verification wall time: median {:?} over {calls}",
        median(wall)
    );

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let window = Duration::from_secs(args.seconds);
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = 0u64;
                    while start.elapsed() < window {
                        if verifier.verify(&evidence, &nonce).is_ok() {
                            done += 1;
                        }
                    }
                    done
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let rate = total as f64 / start.elapsed().as_secs_f64();
    println!("verifications/sec on {threads} threads: {rate:.0}");
    Ok(())
}

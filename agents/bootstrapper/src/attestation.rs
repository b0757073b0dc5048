//! The node's attestation endpoint on the agent port (protocol: `veil-protocol`): a
//! verifier gets the TPM's identity, activates its AK, then receives a quote inside a
//! one-way aTLS handshake. Nothing secret is served here.

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use veil_atls::AttesterIssuer;
use veil_attest::tpm::TpmAttester;
use veil_protocol::{Request, Response, read_frame, write_frame};

/// How long one verifier may take per message before the node drops it: the TPM is
/// shared, and a stalled peer must not hold it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The node's TPM, shared by every connection (one at a time).
pub type SharedTpm = Arc<AttesterIssuer<TpmAttester>>;

/// Serves verifiers on `listener` until the process ends, one connection at a time.
pub fn serve(listener: TcpListener, tpm: SharedTpm) {
    for conn in listener.incoming() {
        let result = conn
            .context("accepting a connection")
            .and_then(|stream| handle(stream, &tpm));
        match result {
            Ok(peer) => tracing::info!(%peer, "attested to a verifier"),
            Err(e) => tracing::warn!("attestation request failed: {e:#}"),
        }
    }
}

/// Answers one verifier; returns its address.
pub fn handle(mut stream: TcpStream, tpm: &SharedTpm) -> Result<String> {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown peer".into(), |a| a.to_string());
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    loop {
        let request: Request =
            read_frame(&mut stream).with_context(|| format!("reading a request from {peer}"))?;
        let response = match request {
            Request::Identity => match tpm.0.lock() {
                Ok(att) => Response::Identity {
                    identity: att.identity().clone(),
                },
                Err(_) => Response::Error {
                    message: "TPM lock poisoned".into(),
                },
            },
            Request::Activate { challenge } => {
                let activated = tpm
                    .0
                    .lock()
                    .map_err(|_| anyhow::anyhow!("TPM lock poisoned"))
                    .and_then(|mut att| Ok(att.activate(&challenge)?));
                match activated {
                    Ok(secret) => Response::Activated {
                        secret: secret.iter().map(|b| format!("{b:02x}")).collect(),
                    },
                    Err(e) => Response::Error {
                        message: format!("credential activation failed: {e:#}"),
                    },
                }
            }
            Request::Attest => {
                write_frame(&mut stream, &Response::Attesting)?;
                let mut tls = veil_atls::accept_one_way(stream, tpm.as_ref())
                    .with_context(|| format!("aTLS handshake with {peer}"))?;
                tls.conn.send_close_notify();
                let _ = std::io::Write::flush(&mut tls);
                return Ok(peer);
            }
        };
        write_frame(&mut stream, &response)?;
    }
}

/// Serves on `listener` from a background thread that first opens the node's TPM.
///
/// Creating the EK and AK takes seconds under emulation, and nothing needs them before
/// the first verifier: connections wait in the listen backlog meanwhile, so the node
/// can report READY at once. A TPM that cannot be opened ends the process (the unit
/// fails and restarts) rather than leaving a node that can never be attested.
pub fn start(tcti: &str, listener: TcpListener) -> Result<()> {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let tcti = tcti.to_owned();
    std::thread::Builder::new()
        .name("attestation".into())
        .spawn(move || {
            let config = veil_attest::tpm::TpmAttesterConfig::with_tcti(&tcti);
            match TpmAttester::open(&config) {
                Ok(attester) => {
                    tracing::info!(port, "attestation endpoint serving");
                    serve(listener, Arc::new(AttesterIssuer(Mutex::new(attester))));
                }
                Err(e) => {
                    tracing::error!("opening the TPM ({tcti}) for attestation failed: {e}");
                    eprintln!("veil-attestation-error opening the TPM ({tcti}): {e}");
                    std::process::exit(1);
                }
            }
        })
        .context("starting the attestation thread")?;
    Ok(())
}

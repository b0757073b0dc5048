//! The port's bounds on unauthenticated work: a per-address rate checked before any
//! evidence is made, and a cap on handshakes in flight. The node side is the real
//! `server::split`; its evidence comes from a counting test double (no TPM needed to
//! count quotes), and the client accepts any evidence (a test double too).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use veil_atls::{AtlsError, ClientAuth, EvidenceIssuer, EvidenceValidator};
use veil_attest::{EvidencePlatform, Verified};
use veil_protocol::server::{ConnectionLimits, split};

/// Test double: "evidence" that is only a count of how often it was asked for.
#[derive(Default)]
struct CountingIssuer(AtomicUsize);

impl EvidenceIssuer for CountingIssuer {
    fn issue(&self, _user_data: &[u8; 32]) -> Result<Vec<u8>, AtlsError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(b"test double evidence".to_vec())
    }
}

/// Test double: believes any evidence.
struct AcceptAny;

impl EvidenceValidator for AcceptAny {
    fn validate(&self, _evidence: &[u8], user_data: &[u8; 32]) -> Result<Verified, AtlsError> {
        Ok(Verified {
            platform: EvidencePlatform::Tpm,
            user_data: *user_data,
            pcrs: BTreeMap::new(),
            event_log: None,
            systemd_log: None,
            tpm: None,
            tdx: None,
            snp: None,
            gcp: None,
            azure: None,
        })
    }
}

/// A port under `limits`; its connections are kept open until the test ends.
async fn port(limits: ConnectionLimits) -> (String, Arc<CountingIssuer>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let issuer = Arc::new(CountingIssuer::default());
    let (mut plain, mut atls) = split(listener, issuer.clone(), ClientAuth::Anonymous, limits);
    tokio::spawn(async move {
        let mut kept = Vec::new();
        loop {
            tokio::select! {
                Some(c) = atls.next() => kept.push(c),
                Some(_) = plain.next() => {}
                else => return,
            }
        }
    });
    (addr, issuer)
}

async fn handshake(addr: &str) -> Result<(), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    veil_atls::connect(stream, None, Arc::new(AcceptAny))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).expect("non-zero")
}

#[tokio::test]
async fn an_address_over_its_rate_is_refused_before_any_evidence_is_made() {
    let (addr, issuer) = port(ConnectionLimits {
        max_handshakes: 8,
        per_peer_per_minute: n(1),
        per_peer_burst: n(3),
    })
    .await;
    for i in 0..3 {
        handshake(&addr)
            .await
            .unwrap_or_else(|e| panic!("handshake {i}: {e}"));
    }
    for _ in 0..2 {
        assert!(handshake(&addr).await.is_err(), "over the burst");
    }
    assert_eq!(
        issuer.0.load(Ordering::SeqCst),
        3,
        "no evidence for refused ones"
    );
}

#[tokio::test]
async fn handshakes_in_flight_are_capped_and_the_cap_frees_up() {
    let (addr, issuer) = port(ConnectionLimits {
        max_handshakes: 2,
        per_peer_per_minute: n(600),
        per_peer_burst: n(100),
    })
    .await;
    // Two callers that connect and say nothing hold both slots.
    let idle = [
        TcpStream::connect(&addr).await.expect("idle 1"),
        TcpStream::connect(&addr).await.expect("idle 2"),
    ];
    // Let the port take them before the next one comes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(handshake(&addr).await.is_err(), "a third is closed at once");
    assert_eq!(issuer.0.load(Ordering::SeqCst), 0);
    drop(idle);
    // Once they hang up, their slots are free again.
    let mut last = Err(String::new());
    for _ in 0..50 {
        last = handshake(&addr).await;
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last.expect("a slot after the idle callers left");
    assert_eq!(issuer.0.load(Ordering::SeqCst), 1);
}

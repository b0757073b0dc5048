//! The node side: one listener, split into plain HTTP/2 connections (activation only)
//! and aTLS connections (everything else), each fed to its own tonic server.
//!
//! Anyone can connect, and each connection costs the node TPM work (an activation, a
//! quote) before it knows who is calling, so that work is bounded
//! ([`ConnectionLimits`]): a per-address rate checked as a connection is accepted,
//! before a byte is read or a quote made, and a cap on connections being routed or
//! handshaking at once. What is over either is closed at once and logged.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use veil_atls::{ClientAuth, EvidenceIssuer};
use veil_attest::Verified;

use crate::HANDSHAKE_TIMEOUT;

/// The first byte of a TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;

/// Who is on the other end of an aTLS connection; in every request's extensions.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: Option<SocketAddr>,
    /// This side's address on the connection: where the peer reached us.
    pub local: Option<SocketAddr>,
    /// What the peer's evidence proved; `None` for an anonymous peer (one that
    /// presented no evidence), which services must treat as unverified.
    pub verified: Option<Arc<Verified>>,
}

/// An established aTLS connection, as tonic serves it.
pub struct AtlsConnection {
    tls: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for AtlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for AtlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for AtlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}

/// How much unauthenticated work the port takes on.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections being routed or in their handshake at once.
    pub max_handshakes: usize,
    /// New connections per peer address per minute...
    pub per_peer_per_minute: NonZeroU32,
    /// ...after a burst of this many.
    pub per_peer_burst: NonZeroU32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        // A joiner retrying every 3 s makes about 60 connections a minute; a verifier
        // two or three per run. A quote takes the TPM tens of milliseconds (seconds
        // under emulation): 32 at once is more than one TPM can serve anyway.
        ConnectionLimits {
            max_handshakes: 32,
            per_peer_per_minute: NonZeroU32::new(120).unwrap_or(NonZeroU32::MIN),
            per_peer_burst: NonZeroU32::new(60).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// Incoming connections for `tonic::transport::Server::serve_with_incoming`.
pub type Incoming<T> = ReceiverStream<io::Result<T>>;

/// Accepts connections on `listener` until it fails, and sorts them by their first
/// byte: TLS goes through the aTLS handshake (our evidence from `issuer`, clients
/// treated as `clients` says) into the second stream; anything else is handed, as it
/// is, to the first (plain HTTP/2: serve only activation there). A connection that
/// says nothing, or does not finish its handshake, within [`HANDSHAKE_TIMEOUT`] is
/// dropped; a failed handshake is logged with the reason and the peer. `limits`
/// bound what callers nobody has verified yet can make the node do.
pub fn split(
    listener: TcpListener,
    issuer: Arc<dyn EvidenceIssuer>,
    clients: ClientAuth,
    limits: ConnectionLimits,
) -> (Incoming<TcpStream>, Incoming<AtlsConnection>) {
    let (plain_tx, plain_rx) = mpsc::channel(16);
    let (atls_tx, atls_rx) = mpsc::channel(16);
    let quota = Quota::per_minute(limits.per_peer_per_minute).allow_burst(limits.per_peer_burst);
    let per_peer: DefaultKeyedRateLimiter<IpAddr> = RateLimiter::keyed(quota);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(limits.max_handshakes));
    tokio::spawn(async move {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::error!("the agent port stopped accepting connections: {e}");
                    return;
                }
            };
            if per_peer.check_key(&addr.ip()).is_err() {
                tracing::warn!(%addr, "connection refused: too many from this address");
                continue;
            }
            // Addresses seen once must not be kept forever.
            if per_peer.len() > 10_000 {
                per_peer.retain_recent();
            }
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                tracing::warn!(%addr, "connection refused: {} handshakes in flight", limits.max_handshakes);
                continue;
            };
            let (plain_tx, atls_tx) = (plain_tx.clone(), atls_tx.clone());
            let (issuer, clients) = (issuer.clone(), clients.clone());
            tokio::spawn(async move {
                // Held until the connection is routed or dropped.
                let _permit = permit;
                let routed = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
                    let mut first = [0u8; 1];
                    let n = stream
                        .peek(&mut first)
                        .await
                        .map_err(|e| format!("reading its first byte: {e}"))?;
                    if n == 0 {
                        return Ok::<_, String>(None);
                    }
                    if first[0] != TLS_HANDSHAKE {
                        return Ok(Some(Route::Plain(stream)));
                    }
                    let local = stream.local_addr().ok();
                    let (tls, verified) = veil_atls::accept(stream, issuer, clients)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(Some(Route::Atls(Box::new(AtlsConnection {
                        tls,
                        peer: PeerInfo {
                            addr: Some(addr),
                            local,
                            verified: verified.map(Arc::new),
                        },
                    }))))
                })
                .await;
                match routed {
                    Ok(Ok(Some(Route::Plain(s)))) => {
                        let _ = plain_tx.send(Ok(s)).await;
                    }
                    Ok(Ok(Some(Route::Atls(c)))) => {
                        let _ = atls_tx.send(Ok(*c)).await;
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(reason)) => tracing::warn!(%addr, "aTLS handshake failed: {reason}"),
                    Err(_) => tracing::warn!(%addr, "connection timed out before its handshake"),
                }
            });
        }
    });
    (ReceiverStream::new(plain_rx), ReceiverStream::new(atls_rx))
}

enum Route {
    Plain(TcpStream),
    Atls(Box<AtlsConnection>),
}

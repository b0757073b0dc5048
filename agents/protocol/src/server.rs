//! The node side: one listener, split into plain HTTP/2 connections (activation only)
//! and aTLS connections (everything else), each fed to its own tonic server.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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

/// Incoming connections for `tonic::transport::Server::serve_with_incoming`.
pub type Incoming<T> = ReceiverStream<io::Result<T>>;

/// Accepts connections on `listener` until it fails, and sorts them by their first
/// byte: TLS goes through the aTLS handshake (our evidence from `issuer`, clients
/// treated as `clients` says) into the second stream; anything else is handed, as it
/// is, to the first (plain HTTP/2: serve only activation there). A connection that
/// says nothing, or does not finish its handshake, within [`HANDSHAKE_TIMEOUT`] is
/// dropped; a failed handshake is logged with the reason and the peer.
pub fn split(
    listener: TcpListener,
    issuer: Arc<dyn EvidenceIssuer>,
    clients: ClientAuth,
) -> (Incoming<TcpStream>, Incoming<AtlsConnection>) {
    let (plain_tx, plain_rx) = mpsc::channel(16);
    let (atls_tx, atls_rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::error!("the agent port stopped accepting connections: {e}");
                    return;
                }
            };
            let (plain_tx, atls_tx) = (plain_tx.clone(), atls_tx.clone());
            let (issuer, clients) = (issuer.clone(), clients.clone());
            tokio::spawn(async move {
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
                    let (tls, verified) = veil_atls::accept(stream, issuer, clients)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(Some(Route::Atls(Box::new(AtlsConnection {
                        tls,
                        peer: PeerInfo {
                            addr: Some(addr),
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

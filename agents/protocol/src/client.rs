//! The caller side: gRPC channels to a node's agent port, plain (activation) or over
//! aTLS (everything else).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};
use veil_atls::{EvidenceIssuer, EvidenceValidator};
use veil_attest::Verified;

use crate::{HANDSHAKE_TIMEOUT, ProtocolError};

/// How long one call may take. Generous: Init on a cluster with integrity-protected
/// state disks writes the node's whole state partition before it answers (a minute
/// per GiB or so under emulation). Connecting and the handshake have their own,
/// short, limits.
const CALL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn endpoint() -> Endpoint {
    // The scheme only tells tonic "HTTP/2 without TLS of its own"; the connector below
    // makes the connection (and the aTLS handshake) itself.
    Endpoint::from_static("http://veil-node")
        .connect_timeout(HANDSHAKE_TIMEOUT)
        .timeout(CALL_TIMEOUT)
}

async fn tcp(node: &str) -> Result<TcpStream, ProtocolError> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(node)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(ProtocolError::Connect {
            node: node.into(),
            source,
        }),
        Err(_) => Err(ProtocolError::Timeout {
            node: node.into(),
            what: "connecting",
            secs: HANDSHAKE_TIMEOUT.as_secs(),
        }),
    }
}

/// A channel over `first` (already connected, so its error was the caller's to
/// report precisely); when tonic reconnects later, `reconnect` makes each new stream.
async fn channel<S, R, F>(node: &str, first: S, reconnect: R) -> Result<Channel, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Fn(String) -> F + Clone + Send + 'static,
    F: Future<Output = Result<S, ProtocolError>> + Send + 'static,
{
    let first = Arc::new(Mutex::new(Some(first)));
    let node_owned = node.to_owned();
    let connector = tower::service_fn(move |_: Uri| {
        let (node, first, reconnect) = (node_owned.clone(), first.clone(), reconnect.clone());
        async move {
            let ready = first.lock().ok().and_then(|mut f| f.take());
            let stream = match ready {
                Some(stream) => stream,
                None => reconnect(node).await.map_err(io::Error::other)?,
            };
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    });
    endpoint()
        .connect_with_connector(connector)
        .await
        .map_err(|source| ProtocolError::Channel {
            node: node.into(),
            source,
        })
}

/// A plain HTTP/2 channel to `node` (HOST:PORT): for the Activation service only.
pub async fn plain(node: &str) -> Result<Channel, ProtocolError> {
    let first = tcp(node).await?;
    channel(node, first, |node: String| async move { tcp(&node).await }).await
}

async fn handshake(
    node: &str,
    own: Option<Arc<dyn EvidenceIssuer>>,
    validator: Arc<dyn EvidenceValidator>,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Verified), ProtocolError> {
    let stream = tcp(node).await?;
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        veil_atls::connect(stream, own, validator),
    )
    .await
    {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(source)) => Err(ProtocolError::Atls {
            node: node.into(),
            source,
        }),
        Err(_) => Err(ProtocolError::Timeout {
            node: node.into(),
            what: "in the aTLS handshake",
            secs: HANDSHAKE_TIMEOUT.as_secs(),
        }),
    }
}

/// An aTLS channel to `node` (HOST:PORT) and what the node's evidence proved. With
/// `own`, we present evidence too (mutual aTLS); without, we stay anonymous.
///
/// Every connection the channel makes, including reconnects, goes through the same
/// handshake and `validator`, so no call ever travels to an unverified node.
pub async fn atls(
    node: &str,
    own: Option<Arc<dyn EvidenceIssuer>>,
    validator: Arc<dyn EvidenceValidator>,
) -> Result<(Channel, Verified), ProtocolError> {
    // The first handshake runs here, so its error (e.g. which PCR was wrong) reaches
    // the caller as it is rather than wrapped in a transport error.
    let (first, verified) = handshake(node, own.clone(), validator.clone()).await?;
    let reconnect = move |node: String| {
        let (own, validator) = (own.clone(), validator.clone());
        async move { Ok(handshake(&node, own, validator).await?.0) }
    };
    Ok((channel(node, first, reconnect).await?, verified))
}

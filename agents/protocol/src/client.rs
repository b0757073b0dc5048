//! The caller side: gRPC channels to a node's agent port, plain (activation) or over
//! aTLS (everything else).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};
use veil_atls::{EvidenceIssuer, EvidenceValidator};
use veil_attest::Verified;

use crate::{HANDSHAKE_TIMEOUT, ProtocolError};

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

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

/// A plain HTTP/2 channel to `node` (HOST:PORT): for the Activation service only.
pub async fn plain(node: &str) -> Result<Channel, ProtocolError> {
    // Connect once here for a precise error; tonic reconnects on its own later.
    drop(tcp(node).await?);
    endpoint()
        .connect_with_connector(tower::service_fn({
            let node = node.to_owned();
            move |_: Uri| {
                let node = node.clone();
                async move {
                    let s = TcpStream::connect(node).await?;
                    Ok::<_, io::Error>(TokioIo::new(s))
                }
            }
        }))
        .await
        .map_err(|source| ProtocolError::Channel {
            node: node.into(),
            source,
        })
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
    let first = Arc::new(Mutex::new(Some(first)));
    let node_owned = node.to_owned();
    let connector = tower::service_fn(move |_: Uri| {
        let (node, own, validator, first) = (
            node_owned.clone(),
            own.clone(),
            validator.clone(),
            first.clone(),
        );
        async move {
            let ready = first.lock().ok().and_then(|mut f| f.take());
            let tls = match ready {
                Some(tls) => tls,
                None => handshake(&node, own, validator)
                    .await
                    .map(|(tls, _)| tls)
                    .map_err(io::Error::other)?,
            };
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    });
    let channel = endpoint()
        .connect_with_connector(connector)
        .await
        .map_err(|source| ProtocolError::Channel {
            node: node.into(),
            source,
        })?;
    Ok((channel, verified))
}

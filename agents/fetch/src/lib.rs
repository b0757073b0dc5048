//! Fetching from services outside the TEE: a cloud's metadata service, certificate
//! servers, Intel's PCS. The host can answer any of them as it likes, so nothing here
//! is believed for having been fetched: every answer is checked by the verifier
//! (against roots pinned in `veil-attest`) before it counts. What this crate adds is
//! that a hostile answer cannot stall or swamp the caller: every request has a deadline
//! for its headers and for its body, and a size bound.
//!
//! Shared by the node's agents (`veil-cloud`, the bootstrapper, the join service) and
//! by `veil` on a workstation, which is why it needs no TPM library.

pub mod pcs;

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;

/// What callers build requests from, so that they need no hyper of their own.
pub use hyper::Method;
pub use hyper::body::Bytes;

/// How long a metadata or certificate server may take, for its headers and again for
/// its body.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Certificates and metadata answers are a few KiB.
const HTTP_MAX_BYTES: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("a request for {url} cannot be made: {reason}")]
    Request { url: String, reason: String },
    #[error("{url} did not answer within {HTTP_TIMEOUT:?}")]
    Timeout { url: String },
    #[error("asking {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("reading {url}'s answer (at most {max_bytes} bytes): {reason}")]
    Body {
        url: String,
        max_bytes: usize,
        reason: String,
    },
    #[error("{url} answered {status}: {excerpt}")]
    Status {
        url: String,
        status: hyper::StatusCode,
        excerpt: String,
    },
    #[error("fetching Intel's collateral: {0}")]
    Pcs(String),
    #[error("Intel's collateral for the TD quote: {0}")]
    Collateral(#[source] veil_attest::tdx::pcs::PcsError),
}

impl FetchError {
    /// Whether the service could not be reached at all (as opposed to answering
    /// something wrong): where a caller may fall back to "nothing there".
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Transport { .. } | Self::Timeout { .. })
    }
}

/// One plain HTTP GET with `headers`: the body of a 2xx answer. Used only for what
/// the verifier checks against pinned roots (VCEKs, intermediates, TD quotes).
pub async fn http_get(url: &str, headers: &[(&str, &str)]) -> Result<Bytes, FetchError> {
    http_request(Method::GET, url, headers, Bytes::new()).await
}

/// [`http_get`] for any method, with a body.
pub async fn http_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Bytes, FetchError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    send(&client, method, url, headers, body, HTTP_MAX_BYTES)
        .await
        .map(|(_, body)| body)
}

/// [`http_get`], where a 404 means there is nothing (no user data, say).
pub async fn http_get_optional(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Option<Bytes>, FetchError> {
    match http_get(url, headers).await {
        Err(FetchError::Status { status, .. }) if status == hyper::StatusCode::NOT_FOUND => {
            Ok(None)
        }
        other => other.map(Some),
    }
}

/// One request through `client`: the headers and body (at most `max_bytes`) of a 2xx
/// answer; any other status is an error with the start of the body.
pub(crate) async fn send<C>(
    client: &Client<C, Full<Bytes>>,
    method: hyper::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    max_bytes: usize,
) -> Result<(hyper::HeaderMap, Bytes), FetchError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| FetchError::Request {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    let response = tokio::time::timeout(HTTP_TIMEOUT, client.request(request))
        .await
        .map_err(|_| FetchError::Timeout {
            url: url.to_owned(),
        })?
        .map_err(|e| FetchError::Transport {
            url: url.to_owned(),
            reason: with_sources(&e),
        })?;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(HTTP_TIMEOUT, Limited::new(body, max_bytes).collect())
        .await
        .map_err(|_| FetchError::Timeout {
            url: url.to_owned(),
        })?
        .map_err(|e| FetchError::Body {
            url: url.to_owned(),
            max_bytes,
            reason: e.to_string(),
        })?
        .to_bytes();
    if !parts.status.is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: parts.status,
            excerpt: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        });
    }
    Ok((parts.headers, body))
}

/// `e` and what caused it (hyper's own message is only "client error (Connect)").
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    reason
}

/// TEST SUPPORT: a TEST DOUBLE of Intel's PCS, and what HTTP test doubles share
/// (this crate's, `veil-cloud`'s, `veil`'s). Never in the image.
#[cfg(any(test, feature = "test-support"))]
pub mod test_support {
    use std::collections::BTreeMap;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use veil_attest::tdx::pcs::{
        CollateralRequest, PCK_CRL_ISSUER_CHAIN, PcsAnswers, QE_IDENTITY_ISSUER_CHAIN,
        TCB_INFO_ISSUER_CHAIN,
    };

    /// One answer of the test double: status, headers, body.
    pub type Answer = (&'static str, Vec<(&'static str, String)>, Vec<u8>);

    trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
    impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

    /// The routes a PCS serves `answers` at for `request`, with the root CA's CRL at
    /// `root_crl_path`.
    pub fn pcs_routes(
        request: &CollateralRequest,
        answers: PcsAnswers,
        root_crl_path: &str,
    ) -> BTreeMap<String, Answer> {
        let part = |name, a: veil_attest::tdx::pcs::PcsAnswer| {
            let headers = a.issuer_chain.map(|c| vec![(name, c)]).unwrap_or_default();
            ("200 OK", headers, a.body)
        };
        BTreeMap::from([
            (
                request.tcb_info_url(""),
                part(TCB_INFO_ISSUER_CHAIN, answers.tcb_info),
            ),
            (
                request.qe_identity_url(""),
                part(QE_IDENTITY_ISSUER_CHAIN, answers.qe_identity),
            ),
            (
                request.pck_crl_url(""),
                part(PCK_CRL_ISSUER_CHAIN, answers.pck_crl),
            ),
            (
                root_crl_path.to_owned(),
                ("200 OK", Vec::new(), answers.root_ca_crl),
            ),
        ])
    }

    /// A TEST DOUBLE of a PCS (or any HTTP service): serves `routes` by request path,
    /// one connection each, for `connections` requests, over TLS with `tls` or plain
    /// HTTP; its base URL, and the paths it was asked for.
    pub async fn serve(
        routes: BTreeMap<String, Answer>,
        connections: usize,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", listener.local_addr().expect("addr"));
        let served = tokio::spawn(async move {
            let mut paths = Vec::new();
            for _ in 0..connections {
                let (tcp, _) = listener.accept().await.expect("accept");
                let mut s: Box<dyn Stream> = match &tls {
                    Some(tls) => match tls.accept(tcp).await {
                        Ok(s) => Box::new(s),
                        // A client that refuses the certificate: nothing to serve.
                        Err(_) => continue,
                    },
                    None => Box::new(tcp),
                };
                let request = String::from_utf8_lossy(&read_request(&mut s).await).into_owned();
                let path = request.split(' ').nth(1).unwrap_or_default().to_owned();
                let (status, headers, body) = routes.get(&path).cloned().unwrap_or((
                    "404 Not Found",
                    Vec::new(),
                    b"no such path".to_vec(),
                ));
                let mut head = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                s.write_all(head.as_bytes()).await.expect("write");
                s.write_all(&body).await.expect("write");
                s.shutdown().await.ok();
                paths.push(path);
            }
            paths
        });
        (base, served)
    }

    /// A whole HTTP/1.1 request from `s`: headers, then as many bytes as
    /// content-length says.
    pub async fn read_request(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.expect("read");
            request.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
            let Some(end) = text.find("\r\n\r\n") else {
                if n == 0 {
                    break;
                }
                continue;
            };
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if n == 0 || request.len() >= end + 4 + length {
                break;
            }
        }
        request
    }
}

//! The accepting side.

use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{Acceptor, ServerConfig};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use veil_attest::Verified;

use crate::binding::{fresh_nonce, user_data};
use crate::verify::{self, PeerCheck};
use crate::{ALPN, AtlsError, EvidenceIssuer, EvidenceValidator, cert, nonce};

/// What the server asks of clients.
#[derive(Clone)]
pub enum ClientAuth {
    /// Clients are not asked for evidence (a node that verifies no peers yet).
    Anonymous,
    /// Every client must present evidence that `0` accepts (mutual aTLS).
    Required(Arc<dyn EvidenceValidator>),
    /// A client may stay anonymous; if it presents evidence, `0` must accept it. The
    /// services behind decide per request what an anonymous peer may do (an operator's
    /// tool has nothing to attest, a joining node must).
    Optional(Arc<dyn EvidenceValidator>),
}

impl ClientAuth {
    fn validator(&self) -> Option<&Arc<dyn EvidenceValidator>> {
        match self {
            ClientAuth::Anonymous => None,
            ClientAuth::Required(v) | ClientAuth::Optional(v) => Some(v),
        }
    }
}

/// This connection's certificate, whatever the client asks for (aTLS has no names).
#[derive(Debug)]
struct FixedCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[derive(Debug)]
struct ClientCheck {
    peer: PeerCheck,
    hints: Vec<DistinguishedName>,
    mandatory: bool,
}

impl ClientCertVerifier for ClientCheck {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.peer.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(verify::no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        verify::tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify::schemes()
    }
}

/// Runs the server side of an aTLS handshake on `stream` and returns the connection
/// with what the client's evidence proved (`None` for an anonymous client, which only
/// [`ClientAuth::Optional`] admits).
///
/// Fails — before any application data — if the client offers no nonce, or presents
/// evidence that does not verify or is bound to another nonce or key. Producing our
/// evidence may block (a TPM quote); it runs on tokio's blocking pool. Callers bound
/// the whole handshake with a timeout: a stalled peer must not hold a connection slot.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    issuer: Arc<dyn EvidenceIssuer>,
    client: ClientAuth,
) -> Result<(TlsStream<S>, Option<Verified>), AtlsError> {
    let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
    let client_nonce =
        start
            .client_hello()
            .alpn()
            .and_then(nonce::find)
            .ok_or(AtlsError::NoNonce(
                "no veil-nonce entry in the client's ALPN list",
            ))?;

    let key = cert::FreshKey::generate()?;
    let bound = user_data(&client_nonce, &key.spki_der());
    let evidence = tokio::task::spawn_blocking(move || issuer.issue(&bound))
        .await
        .map_err(|e| AtlsError::Issue(format!("the evidence task failed: {e}")))??;
    let certified = key.certify(&evidence)?;

    let check = client.validator().map(|validator| {
        let server_nonce = fresh_nonce();
        Arc::new(ClientCheck {
            peer: PeerCheck::new(server_nonce, validator.clone()),
            hints: vec![DistinguishedName::from(nonce::encode(&server_nonce))],
            mandatory: matches!(client, ClientAuth::Required(_)),
        })
    });
    let builder = ServerConfig::builder_with_provider(verify::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match &check {
        Some(check) => builder.with_client_cert_verifier(check.clone()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(FixedCert(certified)));
    config.alpn_protocols = vec![ALPN.to_vec()];
    let refusal = || check.as_ref().and_then(|c| c.peer.refusal());
    let tls = start
        .into_stream(Arc::new(config))
        .await
        .map_err(|e| refusal().map_or(AtlsError::Io(e), AtlsError::Refused))?;
    // An anonymous client leaves no outcome; one that presented evidence left its
    // verdict (a refusal already failed the handshake above).
    let verified = check.as_ref().and_then(|c| c.peer.take().ok());
    if verified.is_none() && matches!(client, ClientAuth::Required(_)) {
        return Err(AtlsError::NotVerified);
    }
    Ok((tls, verified))
}

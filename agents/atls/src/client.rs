//! The connecting side.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, ResolvesClientCert};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use veil_attest::Verified;

use crate::binding::{fresh_nonce, user_data};
use crate::verify::{self, PeerCheck};
use crate::{ALPN, AtlsError, EvidenceIssuer, EvidenceValidator, cert, nonce};

#[derive(Debug)]
struct ServerCheck(PeerCheck);

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // No names, no chains: the server is trusted for what its evidence proves.
        self.0.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(verify::no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify::tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        verify::schemes()
    }
}

/// Makes the client certificate once the server's nonce is known (it arrives in the
/// CertificateRequest, after the client's own flight).
struct ClientCert {
    issuer: Arc<dyn EvidenceIssuer>,
    error: Mutex<Option<String>>,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCert").finish_non_exhaustive()
    }
}

impl ClientCert {
    fn make(&self, hints: &[&[u8]]) -> Result<Arc<CertifiedKey>, AtlsError> {
        let server_nonce = nonce::find(hints.iter().copied()).ok_or(AtlsError::NoNonce(
            "no veil-nonce hint in the server's CertificateRequest",
        ))?;
        let key = cert::FreshKey::generate()?;
        let evidence = self
            .issuer
            .issue(&user_data(&server_nonce, &key.spki_der()))?;
        key.certify(&evidence)
    }
}

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        match self.make(root_hint_subjects) {
            Ok(k) => Some(k),
            Err(e) => {
                if let Ok(mut slot) = self.error.lock() {
                    *slot = Some(e.to_string());
                }
                None
            }
        }
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Runs the client side of an aTLS handshake on `stream` and returns the connection
/// with what the server's evidence proved. With `own`, the client presents its own
/// evidence (mutual aTLS); without, it stays anonymous (one-way: an operator's tool
/// has nothing to attest).
///
/// Fails — before any application data — if the server's evidence does not verify or
/// is bound to another nonce or key. Our own evidence is made inside the handshake
/// (it needs the server's nonce), so a slow attester blocks this task meanwhile.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    own: Option<Arc<dyn EvidenceIssuer>>,
    validator: Arc<dyn EvidenceValidator>,
) -> Result<(TlsStream<S>, Verified), AtlsError> {
    let own = own.map(|issuer| {
        Arc::new(ClientCert {
            issuer,
            error: Mutex::new(None),
        })
    });
    let client_nonce = fresh_nonce();
    let check = Arc::new(ServerCheck(PeerCheck::new(client_nonce, validator)));
    let builder = ClientConfig::builder_with_provider(verify::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(check.clone());
    let mut config = match &own {
        Some(own) => builder.with_client_cert_resolver(own.clone()),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec(), nonce::encode(&client_nonce)];
    // The name is not checked (see ServerCheck) but TLS needs one.
    let name = ServerName::try_from("veil-node")
        .map_err(|e| AtlsError::Certificate(format!("server name: {e}")))?;
    let tls = match TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
    {
        Ok(tls) => tls,
        Err(e) => {
            let ours = own
                .as_ref()
                .and_then(|o| o.error.lock().ok().and_then(|mut s| s.take()));
            return Err(match (check.0.refusal(), ours) {
                (Some(reason), _) => AtlsError::Refused(reason),
                (None, Some(ours)) => AtlsError::Issue(ours),
                (None, None) => AtlsError::Io(e),
            });
        }
    };
    // TLS 1.3: the client finishes before the server has checked the client's
    // certificate; a refusal shows up as an alert on the first read.
    let verified = check.0.take()?;
    Ok((tls, verified))
}

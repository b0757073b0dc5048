//! The accepting side.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{Acceptor, ServerConfig, ServerConnection};
use rustls::{DigitallySignedStruct, SignatureScheme, StreamOwned};
use veil_attest::Verified;

use crate::binding::{fresh_nonce, user_data};
use crate::verify::{self, PeerCheck};
use crate::{ALPN, AtlsError, EvidenceIssuer, EvidenceValidator, cert, nonce};

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
}

impl ClientCertVerifier for ClientCheck {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
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
/// with what the client's evidence proved. Fails — before any application data — if
/// the client offers no nonce, its evidence does not verify, or it is bound to another
/// nonce or key.
pub fn accept<S: Read + Write>(
    stream: S,
    issuer: &dyn EvidenceIssuer,
    validator: Arc<dyn EvidenceValidator>,
) -> Result<(StreamOwned<ServerConnection, S>, Verified), AtlsError> {
    let server_nonce = fresh_nonce();
    let check = Arc::new(ClientCheck {
        peer: PeerCheck::new(server_nonce, validator),
        hints: vec![DistinguishedName::from(nonce::encode(&server_nonce))],
    });
    let conn = handshake(stream, issuer, Some(check.clone()))
        .map_err(|e| check.peer.refusal().map_or(e, AtlsError::Refused))?;
    let verified = check.peer.take()?;
    Ok((conn, verified))
}

/// One-way aTLS: the server proves what it runs; the client stays anonymous (an
/// operator's tool has nothing to attest). Only for endpoints that hand out nothing
/// secret, such as the node's attestation endpoint.
pub fn accept_one_way<S: Read + Write>(
    stream: S,
    issuer: &dyn EvidenceIssuer,
) -> Result<StreamOwned<ServerConnection, S>, AtlsError> {
    handshake(stream, issuer, None)
}

fn handshake<S: Read + Write>(
    mut stream: S,
    issuer: &dyn EvidenceIssuer,
    client_check: Option<Arc<ClientCheck>>,
) -> Result<StreamOwned<ServerConnection, S>, AtlsError> {
    let mut acceptor = Acceptor::default();
    let accepted = loop {
        acceptor.read_tls(&mut stream)?;
        match acceptor.accept() {
            Ok(Some(accepted)) => break accepted,
            Ok(None) => continue,
            Err((e, mut alert)) => {
                let _ = alert.write_all(&mut stream);
                return Err(e.into());
            }
        }
    };
    let client_nonce =
        accepted
            .client_hello()
            .alpn()
            .and_then(nonce::find)
            .ok_or(AtlsError::NoNonce(
                "no veil-nonce entry in the client's ALPN list",
            ))?;

    let key = cert::FreshKey::generate()?;
    let evidence = issuer.issue(&user_data(&client_nonce, &key.spki_der()))?;
    let certified = key.certify(&evidence)?;

    let builder = ServerConfig::builder_with_provider(verify::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match client_check {
        Some(check) => builder.with_client_cert_verifier(check),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(FixedCert(certified)));
    config.alpn_protocols = vec![ALPN.to_vec()];
    let mut conn = match accepted.into_connection(Arc::new(config)) {
        Ok(c) => c,
        Err((e, mut alert)) => {
            let _ = alert.write_all(&mut stream);
            return Err(e.into());
        }
    };
    while conn.is_handshaking() {
        conn.complete_io(&mut stream)?;
    }
    Ok(StreamOwned::new(conn, stream))
}

//! aTLS handshakes between two real software TPMs (swtpm), each with an EK certificate
//! from a local CA and an activated attestation key.

#[path = "../../attest/tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use support::{LocalCa, Swtpm};
use veil_atls::{AtlsError, AttesterIssuer, EvidenceIssuer, EvidenceValidator, VerifierValidator};
use veil_attest::tpm::{TpmAttester, TpmAttesterConfig, TpmVerifier};
use veil_attest::{EvidencePlatform, Verified};

fn attester(tpm: &Swtpm) -> TpmAttester {
    let mut config = TpmAttesterConfig::with_tcti(tpm.tcti());
    config.event_log = None;
    TpmAttester::open(&config).expect("open swtpm")
}

/// A verifier that trusts `att`'s AK after activating it against its EK certificate.
fn verifier_for(att: &mut TpmAttester, ca: &LocalCa) -> TpmVerifier {
    let mut verifier = TpmVerifier::new(ca.trust());
    let (challenge, pending) = verifier.challenge(att.identity()).expect("challenge");
    let secret = att.activate(&challenge).expect("activate");
    verifier.add_trusted_ak(pending.finish(&secret).expect("secret matches"));
    verifier
}

type ServerResult = Result<Verified, AtlsError>;

/// Serves one aTLS connection; on success answers "hello".
fn serve(
    issuer: Arc<dyn EvidenceIssuer>,
    validator: Arc<dyn EvidenceValidator>,
) -> (u16, thread::JoinHandle<ServerResult>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = thread::spawn(move || {
        let (sock, _) = listener.accept().expect("accept");
        let (mut conn, verified) = veil_atls::accept(sock, issuer.as_ref(), validator)?;
        conn.write_all(b"hello")?;
        conn.flush()?;
        conn.conn.send_close_notify();
        let _ = conn.flush();
        Ok(verified)
    });
    (port, handle)
}

struct Pair {
    ca: &'static LocalCa,
    server_tpm: Swtpm,
    client_tpm: Swtpm,
}

impl Pair {
    fn new() -> Pair {
        let ca = LocalCa::shared();
        Pair {
            ca,
            server_tpm: Swtpm::start(ca),
            client_tpm: Swtpm::start(ca),
        }
    }
}

#[test]
fn mutual_handshake_verifies_both_sides_before_data() {
    let p = Pair::new();
    let mut server_att = attester(&p.server_tpm);
    let mut client_att = attester(&p.client_tpm);
    // Each side knows (has activated) the other's AK.
    let trusts_server = verifier_for(&mut server_att, p.ca);
    let trusts_client = verifier_for(&mut client_att, p.ca);

    let (port, server) = serve(
        Arc::new(AttesterIssuer(Mutex::new(server_att))),
        Arc::new(VerifierValidator(trusts_client)),
    );
    let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (mut conn, verified) = veil_atls::connect(
        sock,
        Arc::new(AttesterIssuer(Mutex::new(client_att))),
        Arc::new(VerifierValidator(trusts_server)),
    )
    .expect("client handshake");
    assert_eq!(verified.platform, EvidencePlatform::Tpm);
    assert_eq!(verified.pcrs.len(), 16);
    let mut got = Vec::new();
    conn.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"hello");
    let server_saw = server
        .join()
        .expect("server thread")
        .expect("server handshake");
    assert_eq!(server_saw.platform, EvidencePlatform::Tpm);
}

#[test]
fn server_refuses_a_client_whose_ak_it_never_activated() {
    let p = Pair::new();
    let mut server_att = attester(&p.server_tpm);
    let client_att = attester(&p.client_tpm);
    let trusts_server = verifier_for(&mut server_att, p.ca);
    // The server's verifier knows the right CA but has activated no AK.
    let knows_nobody = TpmVerifier::new(p.ca.trust());

    let (port, server) = serve(
        Arc::new(AttesterIssuer(Mutex::new(server_att))),
        Arc::new(VerifierValidator(knows_nobody)),
    );
    let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let client = veil_atls::connect(
        sock,
        Arc::new(AttesterIssuer(Mutex::new(client_att))),
        Arc::new(VerifierValidator(trusts_server)),
    );
    // TLS 1.3: the client may finish before the server rejects it; then its first
    // read fails. Either way no data arrives.
    if let Ok((mut conn, _)) = client {
        let mut buf = Vec::new();
        assert!(conn.read_to_end(&mut buf).is_err() || buf.is_empty());
    }
    let err = server.join().expect("server thread").expect_err("refused");
    let msg = err.to_string();
    assert!(matches!(err, AtlsError::Refused(_)), "{msg}");
    assert!(msg.to_lowercase().contains("activat"), "{msg}");
}

/// A test double for an attacker: a server that answers every handshake with evidence
/// it recorded from an earlier one (a genuine TPM quote, but for another nonce and key).
struct ReplayingIssuer {
    recorded: Vec<u8>,
}

impl EvidenceIssuer for ReplayingIssuer {
    fn issue(&self, _user_data: &[u8; 32]) -> Result<Vec<u8>, AtlsError> {
        Ok(self.recorded.clone())
    }
}

#[test]
fn client_refuses_replayed_server_evidence() {
    let p = Pair::new();
    let mut server_att = attester(&p.server_tpm);
    let mut client_att = attester(&p.client_tpm);
    let trusts_server = verifier_for(&mut server_att, p.ca);
    let trusts_client = verifier_for(&mut client_att, p.ca);
    // Genuine evidence from the server's TPM, bound to some earlier user data.
    let recorded = AttesterIssuer(Mutex::new(server_att))
        .issue(&[0x11; 32])
        .expect("record evidence");

    let (port, server) = serve(
        Arc::new(ReplayingIssuer { recorded }),
        Arc::new(VerifierValidator(trusts_client)),
    );
    let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let err = veil_atls::connect(
        sock,
        Arc::new(AttesterIssuer(Mutex::new(client_att))),
        Arc::new(VerifierValidator(trusts_server)),
    )
    .map(|_| ())
    .expect_err("replayed evidence must be refused");
    let msg = err.to_string();
    assert!(matches!(err, AtlsError::Refused(_)), "{msg}");
    assert!(msg.contains("replayed"), "{msg}");
    assert!(server.join().expect("server thread").is_err());
}

#[test]
fn plain_tls_client_without_a_nonce_is_refused() {
    let p = Pair::new();
    let server_att = attester(&p.server_tpm);
    let (port, server) = serve(
        Arc::new(AttesterIssuer(Mutex::new(server_att))),
        Arc::new(VerifierValidator(TpmVerifier::new(p.ca.trust()))),
    );
    // A TLS client that does not speak aTLS: no veil-nonce in its ALPN list.
    let config = rustls_client_without_nonce();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut conn = rustls::ClientConnection::new(
        config,
        rustls::pki_types::ServerName::try_from("veil-node").expect("name"),
    )
    .expect("client");
    let _ = conn.complete_io(&mut sock);
    let err = server.join().expect("server thread").expect_err("no nonce");
    assert!(matches!(err, AtlsError::NoNonce(_)), "{err}");
}

fn rustls_client_without_nonce() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AcceptAnything;
    impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("versions")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAnything))
    .with_no_client_auth();
    config.alpn_protocols = vec![veil_atls::ALPN.to_vec()];
    Arc::new(config)
}

#[test]
fn one_way_handshake_proves_the_server_only() {
    let p = Pair::new();
    let mut server_att = attester(&p.server_tpm);
    let trusts_server = verifier_for(&mut server_att, p.ca);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let issuer = AttesterIssuer(Mutex::new(server_att));
    let server = thread::spawn(move || -> Result<(), AtlsError> {
        let (sock, _) = listener.accept().expect("accept");
        let mut conn = veil_atls::accept_one_way(sock, &issuer)?;
        conn.write_all(b"measured")?;
        conn.conn.send_close_notify();
        let _ = conn.flush();
        Ok(())
    });
    let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (mut conn, verified) =
        veil_atls::connect_one_way(sock, Arc::new(VerifierValidator(trusts_server)))
            .expect("one-way handshake");
    assert_eq!(verified.platform, EvidencePlatform::Tpm);
    let mut got = Vec::new();
    conn.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"measured");
    server.join().expect("server thread").expect("server side");
}

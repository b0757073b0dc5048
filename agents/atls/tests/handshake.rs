//! aTLS handshakes between two real software TPMs (swtpm), each with an EK certificate
//! from a local CA and an activated attestation key.

#[path = "../../attest/tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};

use support::{LocalCa, Swtpm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use veil_atls::{
    AtlsError, AttesterIssuer, ClientAuth, EvidenceIssuer, EvidenceValidator, VerifierValidator,
};
use veil_attest::tpm::{TpmAttester, TpmAttesterConfig, TpmVerifier};
use veil_attest::{Attester, EvidencePlatform, Verified};

fn attester(tpm: &Swtpm) -> TpmAttester {
    let mut config = TpmAttesterConfig::with_tcti(tpm.tcti());
    config.event_log = None;
    config.systemd_log = None;
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

type ServerResult = Result<Option<Verified>, AtlsError>;

/// Serves one aTLS connection; on success answers "hello".
async fn serve(
    issuer: Arc<dyn EvidenceIssuer>,
    client: ClientAuth,
) -> (u16, JoinHandle<ServerResult>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.expect("accept");
        let (mut conn, verified) = veil_atls::accept(sock, issuer, client).await?;
        conn.write_all(b"hello").await?;
        conn.shutdown().await?;
        Ok(verified)
    });
    (port, handle)
}

async fn dial(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect")
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

fn tpm_issuer(att: TpmAttester) -> Arc<dyn EvidenceIssuer> {
    Arc::new(AttesterIssuer(Mutex::new(att)))
}

fn validator(verifier: TpmVerifier) -> Arc<dyn EvidenceValidator> {
    Arc::new(VerifierValidator(verifier))
}

async fn read_all<S: tokio::io::AsyncRead + Unpin>(conn: &mut S) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    conn.read_to_end(&mut got).await.map(|_| got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_handshake_verifies_both_sides_before_data() {
    let p = Pair::new();
    let mut server_att = attester(&p.server_tpm);
    let mut client_att = attester(&p.client_tpm);
    // Each side knows (has activated) the other's AK.
    let trusts_server = verifier_for(&mut server_att, p.ca);
    let trusts_client = verifier_for(&mut client_att, p.ca);

    let (port, server) = serve(
        tpm_issuer(server_att),
        ClientAuth::Required(validator(trusts_client)),
    )
    .await;
    let (mut conn, verified) = veil_atls::connect(
        dial(port).await,
        Some(tpm_issuer(client_att)),
        validator(trusts_server),
    )
    .await
    .expect("client handshake");
    assert_eq!(verified.platform, EvidencePlatform::Tpm);
    assert_eq!(verified.pcrs.len(), 16);
    assert_eq!(read_all(&mut conn).await.expect("read"), b"hello");
    let server_saw = server
        .await
        .expect("server task")
        .expect("server handshake")
        .expect("client attested");
    assert_eq!(server_saw.platform, EvidencePlatform::Tpm);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refuses_a_client_whose_ak_it_never_activated() {
    let p = Pair::new();
    let mut server_att = attester(&p.server_tpm);
    let client_att = attester(&p.client_tpm);
    let trusts_server = verifier_for(&mut server_att, p.ca);
    // The server's verifier knows the right CA but has activated no AK.
    let knows_nobody = TpmVerifier::new(p.ca.trust());

    let (port, server) = serve(
        tpm_issuer(server_att),
        ClientAuth::Optional(validator(knows_nobody)),
    )
    .await;
    let client = veil_atls::connect(
        dial(port).await,
        Some(tpm_issuer(client_att)),
        validator(trusts_server),
    )
    .await;
    // TLS 1.3: the client may finish before the server rejects it; then its first
    // read fails. Either way no data arrives.
    if let Ok((mut conn, _)) = client {
        assert!(read_all(&mut conn).await.map_or(true, |b| b.is_empty()));
    }
    // Presented evidence must verify even where anonymous clients are admitted.
    let err = server.await.expect("server task").expect_err("refused");
    let msg = err.to_string();
    assert!(matches!(err, AtlsError::Refused(_)), "{msg}");
    assert!(msg.to_lowercase().contains("activat"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_client_is_admitted_only_where_optional() {
    let p = Pair::new();
    let mut server_att = attester(&p.server_tpm);
    let trusts_server = validator(verifier_for(&mut server_att, p.ca));
    let server_issuer = tpm_issuer(server_att);

    let (port, server) = serve(
        server_issuer.clone(),
        ClientAuth::Optional(validator(TpmVerifier::new(p.ca.trust()))),
    )
    .await;
    let (mut conn, verified) = veil_atls::connect(dial(port).await, None, trusts_server.clone())
        .await
        .expect("one-way handshake");
    assert_eq!(verified.platform, EvidencePlatform::Tpm);
    assert_eq!(read_all(&mut conn).await.expect("read"), b"hello");
    let seen = server.await.expect("server task").expect("server side");
    assert!(seen.is_none(), "an anonymous client must not look attested");

    // The same client where the server requires evidence: refused, no data.
    let (port, server) = serve(
        server_issuer,
        ClientAuth::Required(validator(TpmVerifier::new(p.ca.trust()))),
    )
    .await;
    if let Ok((mut conn, _)) = veil_atls::connect(dial(port).await, None, trusts_server).await {
        assert!(read_all(&mut conn).await.map_or(true, |b| b.is_empty()));
    }
    assert!(server.await.expect("server task").is_err());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_replayed_server_evidence() {
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
        ClientAuth::Required(validator(trusts_client)),
    )
    .await;
    let err = veil_atls::connect(
        dial(port).await,
        Some(tpm_issuer(client_att)),
        validator(trusts_server),
    )
    .await
    .map(|_| ())
    .expect_err("replayed evidence must be refused");
    let msg = err.to_string();
    assert!(matches!(err, AtlsError::Refused(_)), "{msg}");
    assert!(msg.contains("replayed"), "{msg}");
    assert!(server.await.expect("server task").is_err());
}

/// A test double for an attacker who has a genuine TPM and sees the server's nonce, but
/// presents the resulting evidence in a certificate for another key than the one
/// the evidence names (e.g. evidence relayed from a real node into a MITM's handshake).
#[derive(Debug)]
struct KeySwappingClient {
    tpm: Mutex<TpmAttester>,
}

impl rustls::client::ResolvesClientCert for KeySwappingClient {
    fn resolve(
        &self,
        hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let server_nonce = veil_atls::nonce::find(hints.iter().copied())?;
        let named = veil_atls::cert::FreshKey::generate().ok()?;
        let used = veil_atls::cert::FreshKey::generate().ok()?;
        let bound = veil_atls::binding::user_data(&server_nonce, &named.spki_der());
        let evidence = self.tpm.lock().ok()?.evidence(&bound).ok()?;
        used.certify(&evidence.encode()).ok()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refuses_evidence_bound_to_another_tls_key() {
    let p = Pair::new();
    let server_att = attester(&p.server_tpm);
    let mut client_att = attester(&p.client_tpm);
    let trusts_client = verifier_for(&mut client_att, p.ca);
    let (port, server) = serve(
        tpm_issuer(server_att),
        ClientAuth::Required(validator(trusts_client)),
    )
    .await;

    let client_nonce = veil_atls::binding::fresh_nonce();
    let mut config = rustls_client(Arc::new(KeySwappingClient {
        tpm: Mutex::new(client_att),
    }));
    config.alpn_protocols = vec![
        veil_atls::ALPN.to_vec(),
        veil_atls::nonce::encode(&client_nonce),
    ];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("veil-node").expect("name");
    if let Ok(mut conn) = connector.connect(name, dial(port).await).await {
        assert!(read_all(&mut conn).await.map_or(true, |b| b.is_empty()));
    }
    let err = server.await.expect("server task").expect_err("refused");
    let msg = err.to_string();
    assert!(matches!(err, AtlsError::Refused(_)), "{msg}");
    // The nonce is right; what fails is the binding to the certificate's key.
    assert!(msg.contains("user data"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tls_client_without_a_nonce_is_refused() {
    let p = Pair::new();
    let server_att = attester(&p.server_tpm);
    let (port, server) = serve(
        tpm_issuer(server_att),
        ClientAuth::Optional(validator(TpmVerifier::new(p.ca.trust()))),
    )
    .await;
    // A TLS client that does not speak aTLS: no veil-nonce in its ALPN list.
    let mut config = rustls_client_anonymous();
    config.alpn_protocols = vec![veil_atls::ALPN.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("veil-node").expect("name");
    assert!(connector.connect(name, dial(port).await).await.is_err());
    let err = server.await.expect("server task").expect_err("no nonce");
    assert!(matches!(err, AtlsError::NoNonce(_)), "{err}");
}

/// A test double: a TLS client that accepts any server (these tests are about what
/// the *server* accepts).
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
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn rustls_builder() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>
{
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything))
}

fn rustls_client(own: Arc<dyn rustls::client::ResolvesClientCert>) -> rustls::ClientConfig {
    rustls_builder().with_client_cert_resolver(own)
}

fn rustls_client_anonymous() -> rustls::ClientConfig {
    rustls_builder().with_no_client_auth()
}

/// Genuine hardware evidence recorded on real machines (veil-attest's test vectors):
/// what an attacker who once saw such evidence could replay.
fn recorded_hardware_evidence() -> [(veil_attest::Evidence, &'static str); 3] {
    let report = hex::decode(include_str!("../../attest/tests/data/snp/report_milan.hex").trim())
        .expect("hex test vector");
    let snp = veil_attest::Evidence::SevSnp(veil_attest::SnpEvidence {
        report,
        vcek: include_bytes!("../../attest/tests/data/snp/vcek_milan.der").to_vec(),
        cert_chain: None,
    });
    let tdx = veil_attest::Evidence::Tdx(veil_attest::TdxEvidence {
        quote: include_bytes!("../../attest/tests/data/tdx/tdx_quote.bin").to_vec(),
        collateral: Some(
            include_str!("../../attest/tests/data/tdx/tdx_quote_collateral.json").to_owned(),
        ),
    });
    let azure = veil_attest::Evidence::AzureSevSnp(veil_attest::azure::AzureSnpEvidence {
        hcl_report: include_bytes!("../../attest/tests/data/azure/genoa-hcl-report.bin").to_vec(),
        vcek: include_bytes!("../../attest/tests/data/azure/genoa-vcek.der").to_vec(),
        cert_chain: None,
        quote: include_bytes!("../../attest/tests/data/azure/genoa-quote.bin").to_vec(),
        signature: include_bytes!("../../attest/tests/data/azure/genoa-quote.sig").to_vec(),
        pcrs: include_bytes!("../../attest/tests/data/azure/genoa-quote-pcrs.bin")
            .chunks(32)
            .enumerate()
            .map(|(i, v)| {
                let v: [u8; 32] = v.try_into().expect("32-byte PCR values");
                (i as u32, veil_attest::Digest32(v))
            })
            .collect(),
    });
    [(snp, "SEV-SNP"), (tdx, "TDX"), (azure, "Azure SEV-SNP")]
}

/// The launch measurement in the recorded Genoa HCL report (Azure's paravisor).
fn genoa_paravisor_measurement() -> [u8; 48] {
    let hcl = include_bytes!("../../attest/tests/data/azure/genoa-hcl-report.bin");
    hcl[32 + 0x90..32 + 0x90 + 48].try_into().expect("48 bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_snp_tdx_and_azure_evidence_reaches_its_verifier_and_is_refused() {
    use veil_attest::snp::SnpPolicy;
    use veil_attest::tdx::{TdxPolicy, TdxVerifier};
    use veil_attest::tpm::EkTrust;
    use veil_attest::{PlatformPolicy, PlatformVerifier};
    // No TPM evidence is exchanged here: the TPM verifiers trust no EK CA at all.

    for (evidence, platform) in recorded_hardware_evidence() {
        let issuer: Arc<dyn EvidenceIssuer> = Arc::new(ReplayingIssuer {
            recorded: evidence.encode(),
        });
        // Policies that accept the recorded vectors' platforms, their chips and their
        // report-data layout: all that can fail is the binding to this handshake.
        let accepting = PlatformPolicy {
            sev_snp: Some(SnpPolicy {
                require_zero_report_data_tail: false,
                ..SnpPolicy::default()
            }),
            azure_tdx: None,
            azure_sev_snp: Some(SnpPolicy {
                product: veil_attest::SnpProduct::Genoa,
                allowed_measurements: vec![genoa_paravisor_measurement()],
                ..SnpPolicy::default()
            }),
            tdx: None,
            tdx_collateral: None,
            require_hardware: false,
            profile: None,
            gcp: false,
        };
        let verifier = PlatformVerifier::new(
            TpmVerifier::new(EkTrust::default()),
            &accepting,
            "test policy",
        )
        .expect("verifier")
        .with_tdx(TdxVerifier::new(TdxPolicy {
            now: Some(1_751_328_000),
            ignore_report_data_tail: true,
            ..TdxPolicy::default()
        }));
        let (port, server) = serve(
            issuer.clone(),
            ClientAuth::Optional(validator(TpmVerifier::new(EkTrust::default()))),
        )
        .await;
        let err = veil_atls::connect(
            dial(port).await,
            None,
            Arc::new(VerifierValidator(verifier)),
        )
        .await
        .map(|_| ())
        .expect_err("replayed hardware evidence must be refused");
        let msg = err.to_string();
        assert!(matches!(err, AtlsError::Refused(_)), "{msg}");
        assert!(
            msg.contains(&format!("{platform} evidence refused")),
            "{msg}"
        );
        assert!(msg.contains("replayed"), "{msg}");
        let _ = server.await;

        // A TPM-only policy refuses the same evidence for its platform alone.
        let (port, server) = serve(
            issuer,
            ClientAuth::Optional(validator(TpmVerifier::new(EkTrust::default()))),
        )
        .await;
        let tpm_only = PlatformVerifier::tpm_only(TpmVerifier::new(EkTrust::default()));
        let err = veil_atls::connect(
            dial(port).await,
            None,
            Arc::new(VerifierValidator(tpm_only)),
        )
        .await
        .map(|_| ())
        .expect_err("platform not in the policy");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "{platform} evidence, which the policy does not accept"
            )),
            "{msg}"
        );
        let _ = server.await;
    }
}

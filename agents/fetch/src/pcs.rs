//! Intel's collateral for a TD quote, fetched when it is needed: an Azure TDX joiner
//! has nothing else to check its join service's TD quote with (its evidence carries no
//! collateral, and a joiner has no cluster policy yet); a join service keeps its own
//! fresh; `veil` on a workstation fetches it for the node it verifies.
//!
//! The answers come over HTTPS checked against the system's CA roots, but that is for
//! availability only: every part is signed by Intel and checked by the verifier against
//! the Intel root pinned in `veil-attest`. Whoever sits in between (the cloud's network)
//! can withhold collateral, or replay older collateral Intel signed that is still inside
//! its dates (weeks), and nothing more. The service's address is a constant of the
//! image, not read from anything the host writes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use veil_attest::tdx::pcs::{
    CollateralRequest, INTEL_PCS_URL, INTEL_ROOT_CA_CRL_URL, PCK_CRL_ISSUER_CHAIN, PcsAnswer,
    PcsAnswers, QE_IDENTITY_ISSUER_CHAIN, TCB_INFO_ISSUER_CHAIN, assemble,
};

use veil_attest::{Evidence, PlatformPolicy};

use crate::{FetchError, send};

/// TCB info and CRLs are tens of KiB at most; a bound keeps a hostile answer small.
const PCS_MAX_BYTES: usize = 1024 * 1024;

/// How long fetched collateral is reused in this process.
pub const CACHE_FOR: Duration = Duration::from_secs(3600);

type CacheKey = (String, CollateralRequest);

/// Collateral fetched in this process, by service and platform.
static CACHE: Mutex<BTreeMap<CacheKey, (Instant, String)>> = Mutex::new(BTreeMap::new());

fn cached(key: &CacheKey) -> Option<String> {
    let cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .get(key)
        .filter(|(at, _)| at.elapsed() < CACHE_FOR)
        .map(|(_, json)| json.clone())
}

/// Where a PCCS serves the root CA's CRL.
pub const PCCS_ROOT_CA_CRL_PATH: &str = "/sgx/certification/v4/rootcacrl";

/// The system's CA roots (the image has `ca-certificates`).
fn system_roots() -> Result<rustls::RootCertStore, FetchError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(FetchError::Pcs(format!(
            "no CA certificate in the system's store to check a PCS's TLS certificate with ({} errors: {:?})",
            found.errors.len(),
            found.errors.first().map(ToString::to_string)
        )));
    }
    Ok(roots)
}

/// Where collateral is fetched from.
#[derive(Clone)]
pub struct PcsClient {
    base: String,
    root_ca_crl_url: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for PcsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcsClient")
            .field("base", &self.base)
            .field("root_ca_crl_url", &self.root_ca_crl_url)
            .finish()
    }
}

impl PcsClient {
    /// Intel's PCS, over TLS checked against the system's CA roots. The roots are read
    /// once per process: a joiner asks at every join attempt.
    pub fn intel() -> Result<Self, FetchError> {
        static INTEL: OnceLock<PcsClient> = OnceLock::new();
        if let Some(client) = INTEL.get() {
            return Ok(client.clone());
        }
        // A failure is not kept: a CA bundle installed later is then found.
        let client = Self::with_roots(INTEL_PCS_URL, INTEL_ROOT_CA_CRL_URL, system_roots()?)?;
        Ok(INTEL.get_or_init(|| client).clone())
    }

    /// The PCCS (Intel's caching service, PCS API v4) at `base`, for networks that do
    /// not reach Intel: HTTPS against the system's CA roots, or plain HTTP where `base`
    /// says so. Its root CA CRL is its own `rootcacrl` (hex, which [`assemble`] reads).
    pub fn pccs(base: &str) -> Result<Self, FetchError> {
        let base = base.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(FetchError::Pcs(format!(
                "{base} is not an http:// or https:// URL"
            )));
        }
        Self::with_roots(
            base,
            &format!("{base}{PCCS_ROOT_CA_CRL_PATH}"),
            system_roots()?,
        )
    }

    /// Another PCS-compatible service at `base` (a PCCS, or a test double), with the
    /// root CA CRL at `root_ca_crl_url`; HTTPS against `roots`, or plain HTTP where the
    /// URLs say so.
    pub fn with_roots(
        base: &str,
        root_ca_crl_url: &str,
        roots: rustls::RootCertStore,
    ) -> Result<Self, FetchError> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Pcs(format!("TLS settings: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            base: base.to_owned(),
            root_ca_crl_url: root_ca_crl_url.to_owned(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The service asked.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The collateral (`QuoteCollateralV3` JSON) for the platform of the PCK
    /// certificate in `quote`: its TCB info, the TD QE's identity, its PCK CA's CRL
    /// and the root CA's CRL.
    ///
    /// Kept in this process for [`CACHE_FOR`]: a member reconnecting to its join
    /// service asks again, and Intel's answers change only at a TCB recovery.
    pub async fn collateral_for(&self, quote: &[u8]) -> Result<String, FetchError> {
        let request = CollateralRequest::for_quote(quote).map_err(FetchError::Collateral)?;
        let key = (self.base.clone(), request);
        if let Some(json) = cached(&key) {
            return Ok(json);
        }
        let json = self.fetch(&request).await?;
        CACHE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (Instant::now(), json.clone()));
        Ok(json)
    }

    async fn fetch(&self, request: &CollateralRequest) -> Result<String, FetchError> {
        let urls = [
            request.tcb_info_url(&self.base),
            request.qe_identity_url(&self.base),
            request.pck_crl_url(&self.base),
        ];
        let (tcb_info, qe_identity, pck_crl, root_ca_crl) = tokio::try_join!(
            self.get(&urls[0], TCB_INFO_ISSUER_CHAIN),
            self.get(&urls[1], QE_IDENTITY_ISSUER_CHAIN),
            self.get(&urls[2], PCK_CRL_ISSUER_CHAIN),
            self.get(&self.root_ca_crl_url, ""),
        )?;
        let answers = PcsAnswers {
            tcb_info,
            qe_identity,
            pck_crl,
            root_ca_crl: root_ca_crl.body,
        };
        let collateral = assemble(request, &answers).map_err(FetchError::Collateral)?;
        tracing::info!(
            fmspc = %request.fmspc_hex(),
            service = %self.base,
            "fetched Intel's collateral for the TD quote's platform"
        );
        Ok(collateral)
    }

    /// Fills in Intel's collateral for the platform of `own`'s TD quote where `policy`
    /// checks TD quotes of its kind and holds none: what a joiner holds its join
    /// service's TD quote to. Whether it fetched anything.
    pub async fn complete_policy(
        &self,
        own: &Evidence,
        policy: &mut PlatformPolicy,
    ) -> Result<bool, FetchError> {
        let (Some(quote), Some(slot)) = (
            veil_attest::cvm::td_quote(own),
            policy.missing_tdx_collateral(own),
        ) else {
            return Ok(false);
        };
        *slot = Some(self.collateral_for(quote).await?);
        Ok(true)
    }

    /// One answer, with the issuer-chain header `chain_header` if it has one.
    async fn get(&self, url: &str, chain_header: &str) -> Result<PcsAnswer, FetchError> {
        let (headers, body) = send(
            &self.client,
            hyper::Method::GET,
            url,
            &[],
            Bytes::new(),
            PCS_MAX_BYTES,
        )
        .await?;
        let issuer_chain = match chain_header {
            "" => None,
            name => headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };
        Ok(PcsAnswer {
            body: body.to_vec(),
            issuer_chain,
        })
    }
}

/// TEST DATA shared with `veil-attest`'s tests: Intel's answers from recorded collateral.
#[cfg(test)]
#[path = "../../attest/tests/pcs_support/mod.rs"]
mod pcs_support;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::pcs::pcs_support;
    use crate::test_support::{Answer, pcs_routes, serve as pcs_test_double_over};

    async fn pcs_test_double(
        routes: BTreeMap<String, Answer>,
        connections: usize,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        pcs_test_double_over(routes, connections, None).await
    }

    const AZURE_QUOTE: &[u8] = include_bytes!("../../attest/tests/data/azure/tdx-td-quote.bin");
    const AZURE_COLLATERAL: &str =
        include_str!("../../attest/tests/data/azure/tdx-collateral-00806f050000.json");
    const ROOT_CRL_PATH: &str = "/IntelSGXRootCA.der";

    /// What Intel's PCS served for the recorded Azure TD quote's platform.
    fn intel_routes() -> BTreeMap<String, Answer> {
        pcs_routes(
            &CollateralRequest::for_quote(AZURE_QUOTE).expect("request"),
            pcs_support::served(AZURE_COLLATERAL),
            ROOT_CRL_PATH,
        )
    }

    fn client(base: &str) -> PcsClient {
        PcsClient::with_roots(
            base,
            &format!("{base}{ROOT_CRL_PATH}"),
            rustls::RootCertStore::empty(),
        )
        .expect("client")
    }

    #[tokio::test]
    async fn the_collateral_for_a_td_quote_is_fetched_and_verifies_it() {
        let (base, served) = pcs_test_double(intel_routes(), 4).await;
        let collateral = client(&base)
            .collateral_for(AZURE_QUOTE)
            .await
            .expect("collateral");
        // Asked again (a member reconnecting): kept from the first time.
        let again = client(&base)
            .collateral_for(AZURE_QUOTE)
            .await
            .expect("cached");
        assert_eq!(again, collateral);
        let mut paths = served.await.expect("served");
        paths.sort();
        assert_eq!(
            paths,
            [
                ROOT_CRL_PATH,
                "/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
                "/tdx/certification/v4/qe/identity",
                "/tdx/certification/v4/tcb?fmspc=00806F050000",
            ],
            "each part asked for once, for this platform"
        );
        let parsed = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("JSON");
        assert_eq!(parsed(&collateral), parsed(AZURE_COLLATERAL));

        // It checks the recorded quote's chain up to Intel's verdict (OutOfDate by
        // this 2025 collateral; allowed here to see the verdict), at a time inside it.
        let quote = veil_attest::tdx::TdQuote::parse(AZURE_QUOTE).expect("quote");
        let verifier = veil_attest::tdx::TdxVerifier::new(veil_attest::tdx::TdxPolicy {
            allowed_mrtd: vec![quote.mr_td],
            now: Some(1_748_736_000),
            allowed_tcb_status: vec!["OutOfDate".into()],
            ..Default::default()
        })
        .with_collateral_json(&collateral)
        .expect("collateral parses");
        let evidence = pcs_support::recorded_azure_tdx();
        let verified = veil_attest::azure::verify_azure_tdx(&evidence, &verifier, b"challenge")
            .expect("the recorded Azure TDX evidence verifies with the fetched collateral");
        assert_eq!(verified.tdx.expect("TDX facts").tcb_status, "OutOfDate");
    }

    #[tokio::test]
    async fn a_joiners_policy_gets_collateral_for_its_own_td_quote_where_it_has_none() {
        let own = Evidence::AzureTdx(pcs_support::recorded_azure_tdx());
        let mut policy = veil_attest::peer::cloud_policy_like_own(&own).expect("policy");
        let (base, served) = pcs_test_double(intel_routes(), 4).await;
        assert!(
            client(&base)
                .complete_policy(&own, &mut policy)
                .await
                .expect("fetched")
        );
        assert_eq!(served.await.expect("served").len(), 4);
        let held = policy.azure_tdx.as_ref().and_then(|(_, c)| c.as_deref());
        let parsed = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("JSON");
        assert_eq!(held.map(parsed), Some(parsed(AZURE_COLLATERAL)));

        // Held already, or no TD quote to fetch for: nothing is asked (nothing listens
        // at this address).
        let nowhere = client("http://127.0.0.1:9");
        assert!(
            !nowhere
                .complete_policy(&own, &mut policy)
                .await
                .expect("held")
        );
        let mut snp_policy = PlatformPolicy::default();
        let snp = Evidence::SevSnp(veil_attest::snp::SnpEvidence {
            report: vec![0; 1184],
            vcek: Vec::new(),
            cert_chain: None,
        });
        assert!(
            !nowhere
                .complete_policy(&snp, &mut snp_policy)
                .await
                .expect("no TD")
        );
    }

    #[tokio::test]
    async fn a_pccs_is_asked_at_its_own_paths_and_its_hex_root_crl_read() {
        let mut routes = intel_routes();
        let (status, headers, der) = routes.remove(ROOT_CRL_PATH).expect("root CRL");
        // A PCCS sends the root CA's CRL as hex text.
        routes.insert(
            PCCS_ROOT_CA_CRL_PATH.into(),
            (status, headers, hex::encode(der).into_bytes()),
        );
        let (base, served) = pcs_test_double(routes, 4).await;
        let pccs = PcsClient::pccs(&format!("{base}/")).expect("client");
        assert_eq!(pccs.base(), base);
        let collateral = pccs.collateral_for(AZURE_QUOTE).await.expect("collateral");
        let parsed = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("JSON");
        assert_eq!(parsed(&collateral), parsed(AZURE_COLLATERAL));
        assert!(
            served
                .await
                .expect("served")
                .contains(&PCCS_ROOT_CA_CRL_PATH.to_owned())
        );

        let e = PcsClient::pccs("pccs.example:8081").expect_err("no scheme");
        assert!(
            e.to_string().contains("not an http:// or https:// URL"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_missing_part_or_header_is_named() {
        let mut routes = intel_routes();
        routes.remove("/tdx/certification/v4/qe/identity");
        let (base, _served) = pcs_test_double(routes, 4).await;
        let e = client(&base)
            .collateral_for(AZURE_QUOTE)
            .await
            .expect_err("no QE identity");
        let text = e.to_string();
        assert!(
            text.contains("/tdx/certification/v4/qe/identity answered 404 Not Found"),
            "{text}"
        );

        let mut routes = intel_routes();
        routes
            .get_mut("/tdx/certification/v4/tcb?fmspc=00806F050000")
            .expect("TCB info")
            .1
            .clear();
        let (base, _served) = pcs_test_double(routes, 4).await;
        let e = client(&base)
            .collateral_for(AZURE_QUOTE)
            .await
            .expect_err("no issuer chain");
        let text = format!(
            "{e}: {}",
            std::error::Error::source(&e).map_or(String::new(), |s| s.to_string())
        );
        assert!(
            text.contains("TCB-Info-Issuer-Chain header: missing"),
            "{text}"
        );

        let e = client("http://127.0.0.1:9")
            .collateral_for(&AZURE_QUOTE[..100])
            .await
            .expect_err("not a quote");
        assert!(matches!(e, FetchError::Collateral(_)), "{e}");
    }

    #[tokio::test]
    async fn the_answers_come_over_tls_checked_against_the_roots_given() {
        // The double's certificate, for 127.0.0.1, from a CA of its own.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));

        let (base, served) = pcs_test_double_over(intel_routes(), 4, Some(acceptor.clone())).await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).expect("root");
        let pcs =
            PcsClient::with_roots(&base, &format!("{base}{ROOT_CRL_PATH}"), roots).expect("client");
        let collateral = pcs.collateral_for(AZURE_QUOTE).await.expect("over TLS");
        let parsed = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("JSON");
        assert_eq!(parsed(&collateral), parsed(AZURE_COLLATERAL));
        assert_eq!(served.await.expect("served").len(), 4);

        // The same server under roots that do not include its CA: refused, named.
        let (base, _served) = pcs_test_double_over(intel_routes(), 4, Some(acceptor)).await;
        let pcs = PcsClient::with_roots(
            &base,
            &format!("{base}{ROOT_CRL_PATH}"),
            rustls::RootCertStore::empty(),
        )
        .expect("client");
        let e = pcs
            .collateral_for(AZURE_QUOTE)
            .await
            .expect_err("unknown CA");
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    }

    #[test]
    fn intels_pcs_is_reached_over_tls_with_the_systems_roots() {
        // The image and this machine both have a CA bundle (ca-certificates).
        let pcs = PcsClient::intel().expect("system roots");
        assert_eq!(pcs.base, INTEL_PCS_URL);
        assert!(pcs.root_ca_crl_url.starts_with("https://"));
    }
}

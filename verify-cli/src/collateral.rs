//! `--fetch-collateral`: Intel's collateral for the node's TD quote, fetched from
//! Intel's PCS (or a PCCS) where the platform policy checks TD quotes and holds none.
//! Without it an operator would have to copy Intel's collateral into the policy file
//! by hand, and again whenever it expires (weeks).
//!
//! Which platform to fetch for is read from the node's own TD quote (its PCK
//! certificate), taken in a first aTLS handshake that this side refuses on purpose.
//! The node cannot steer what is believed by that: the collateral is signed by Intel,
//! fetched by this side over TLS, and checked against the Intel root pinned in
//! `veil-attest`; a quote that names another platform only gets that platform's
//! collateral, which its PCK certificate must then still chain to. The node's answer
//! in the second handshake is verified as without this flag.

use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow};
use veil_atls::{AtlsError, EvidenceValidator};
use veil_attest::tdx::pcs::CollateralRequest;
use veil_attest::{Evidence, PlatformPolicy, Verified};
use veil_fetch::pcs::PcsClient;

/// What was fetched, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The platform (FMSPC) of the node's PCK certificate, hex.
    pub fmspc: String,
    /// The service it came from.
    pub from: String,
}

/// Takes the evidence a node presents and refuses it: a handshake only to learn which
/// platform the node's TD quote is from.
#[derive(Default)]
struct Probe(Mutex<Option<Result<Evidence, String>>>);

impl EvidenceValidator for Probe {
    fn validate(&self, evidence: &[u8], _user_data: &[u8; 32]) -> Result<Verified, AtlsError> {
        let decoded = Evidence::decode(evidence).map_err(|e| e.to_string());
        if let Ok(mut taken) = self.0.lock() {
            *taken = Some(decoded);
        }
        Err(AtlsError::Refused(
            "only read for its TD quote's platform".into(),
        ))
    }
}

/// The PCS to fetch from: Intel's, or the PCS-compatible service (a PCCS) at `url`.
pub fn pcs(url: Option<&str>) -> anyhow::Result<PcsClient> {
    match url {
        None => PcsClient::intel().context("reaching Intel's PCS"),
        Some(url) => PcsClient::pccs(url).with_context(|| format!("reaching the PCCS at {url}")),
    }
}

/// Where `policy` checks TD quotes and holds no collateral, fetches it from `pcs`
/// for the platform of `node`'s TD quote. What was fetched, if anything.
pub async fn complete(
    node: &str,
    policy: &mut PlatformPolicy,
    pcs: &PcsClient,
) -> anyhow::Result<Option<Fetched>> {
    if !policy.lacks_tdx_collateral() {
        return Ok(None);
    }
    let probe = Arc::new(Probe::default());
    let refused = veil_protocol::client::atls(node, None, probe.clone()).await;
    let taken = probe.0.lock().ok().and_then(|mut t| t.take());
    let evidence = match (taken, refused) {
        (Some(Ok(evidence)), _) => evidence,
        (Some(Err(e)), _) => {
            return Err(anyhow!(
                "{node} presented evidence that cannot be read: {e}"
            ));
        }
        (None, Err(e)) => {
            return Err(anyhow::Error::new(e).context(format!(
                "asking {node} for its evidence, to fetch Intel's collateral for its platform"
            )));
        }
        (None, Ok(_)) => return Err(anyhow!("{node}: the probe handshake was not refused")),
    };
    complete_for(&evidence, policy, pcs).await
}

/// [`complete`] for evidence already taken.
pub async fn complete_for(
    evidence: &Evidence,
    policy: &mut PlatformPolicy,
    pcs: &PcsClient,
) -> anyhow::Result<Option<Fetched>> {
    // Evidence with no TD quote, or of a kind this policy does not check with
    // collateral: nothing to fetch, and verification says what is wrong with it.
    let Some(quote) = veil_attest::cvm::td_quote(evidence) else {
        return Ok(None);
    };
    let Some(slot) = policy.missing_tdx_collateral(evidence) else {
        return Ok(None);
    };
    let fmspc = CollateralRequest::for_quote(quote)
        .context("the node's TD quote names no platform to fetch collateral for")?
        .fmspc_hex();
    *slot = Some(
        pcs.collateral_for(quote)
            .await
            .with_context(|| format!("fetching Intel's collateral for FMSPC {fmspc}"))?,
    );
    Ok(Some(Fetched {
        fmspc,
        from: pcs.base().to_owned(),
    }))
}

/// TEST DATA shared with `veil-attest`'s tests: Intel's answers from recorded collateral.
#[cfg(test)]
#[path = "../../agents/attest/tests/pcs_support/mod.rs"]
pub(crate) mod pcs_support;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use veil_atls::EvidenceIssuer;
    use veil_fetch::test_support::{pcs_routes, serve};

    const AZURE_QUOTE: &[u8] =
        include_bytes!("../../agents/attest/tests/data/azure/tdx-td-quote.bin");
    const AZURE_COLLATERAL: &str =
        include_str!("../../agents/attest/tests/data/azure/tdx-collateral-00806f050000.json");

    /// A TEST DOUBLE of a node: presents the recorded Azure TDX evidence (not bound to
    /// any handshake) on its aTLS port, for `connections` handshakes.
    struct Recorded(Vec<u8>);

    impl EvidenceIssuer for Recorded {
        fn issue(&self, _user_data: &[u8; 32]) -> Result<Vec<u8>, AtlsError> {
            Ok(self.0.clone())
        }
    }

    pub(crate) async fn node_double(evidence: Vec<u8>, connections: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let issuer: Arc<dyn EvidenceIssuer> = Arc::new(Recorded(evidence));
        tokio::spawn(async move {
            for _ in 0..connections {
                let (tcp, _) = listener.accept().await.expect("accept");
                // The client refuses the evidence: the handshake ends there.
                let _ =
                    veil_atls::accept(tcp, issuer.clone(), veil_atls::ClientAuth::Anonymous).await;
            }
        });
        addr
    }

    pub(crate) fn pcs_double_routes()
    -> std::collections::BTreeMap<String, veil_fetch::test_support::Answer> {
        pcs_routes(
            &CollateralRequest::for_quote(AZURE_QUOTE).expect("request"),
            pcs_support::served(AZURE_COLLATERAL),
            veil_fetch::pcs::PCCS_ROOT_CA_CRL_PATH,
        )
    }

    #[tokio::test]
    async fn collateral_is_fetched_for_the_platform_of_the_nodes_td_quote() {
        let own = Evidence::AzureTdx(pcs_support::recorded_azure_tdx());
        let node = node_double(own.encode(), 1).await;
        let (base, served) = serve(pcs_double_routes(), 4, None).await;
        let service = pcs(Some(&base)).expect("PCCS client");
        let mut policy = veil_attest::peer::cloud_policy_like_own(&own).expect("policy");
        assert!(policy.lacks_tdx_collateral());

        let fetched = complete(&node, &mut policy, &service)
            .await
            .expect("fetched")
            .expect("something fetched");
        assert_eq!(
            fetched,
            Fetched {
                fmspc: "00806F050000".into(),
                from: base.clone(),
            }
        );
        assert_eq!(served.await.expect("served").len(), 4);
        let held = policy.azure_tdx.as_ref().and_then(|(_, c)| c.as_deref());
        let parsed = |s: &str| serde_json::from_str::<serde_json::Value>(s).expect("JSON");
        assert_eq!(held.map(parsed), Some(parsed(AZURE_COLLATERAL)));
        assert!(!policy.lacks_tdx_collateral());

        // Held now: the node is not asked again, nor the PCS (nothing listens there).
        let nowhere = pcs(Some("http://127.0.0.1:9")).expect("client");
        assert_eq!(
            complete("127.0.0.1:9", &mut policy, &nowhere)
                .await
                .expect("nothing to do"),
            None
        );
    }

    #[tokio::test]
    async fn a_node_whose_evidence_cannot_be_read_or_that_cannot_be_reached_is_named() {
        let own = Evidence::AzureTdx(pcs_support::recorded_azure_tdx());
        let nowhere = pcs(Some("http://127.0.0.1:9")).expect("client");

        let node = node_double(b"not evidence".to_vec(), 1).await;
        let mut policy = veil_attest::peer::cloud_policy_like_own(&own).expect("policy");
        let e = complete(&node, &mut policy, &nowhere)
            .await
            .expect_err("unreadable");
        assert!(
            format!("{e:#}").contains("presented evidence that cannot be read"),
            "{e:#}"
        );
        assert!(policy.lacks_tdx_collateral(), "nothing was filled in");

        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let e = complete(&closed, &mut policy, &nowhere)
            .await
            .expect_err("unreachable");
        assert!(format!("{e:#}").contains("asking 127.0.0.1:"), "{e:#}");

        // A PCS that is down: named with the platform asked for.
        let node = node_double(own.encode(), 1).await;
        let e = complete(&node, &mut policy, &nowhere)
            .await
            .expect_err("PCS down");
        assert!(
            format!("{e:#}").contains("Intel's collateral for FMSPC 00806F050000"),
            "{e:#}"
        );
    }
}

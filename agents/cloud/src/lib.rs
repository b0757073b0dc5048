//! A Veil node's cloud evidence: on a cloud's confidential VM, what the node presents
//! instead of the plain TPM quote, to verifiers on its agent port and to the join
//! service when it joins (and, on a control-plane node, what the join port presents):
//! on Azure the paravisor's HCL report with the vTPM's quote (and the VCEK, or the TD
//! quote, from the instance metadata service), on GCP Google's certified AK with its
//! quote and the CPU's report (and the AK certificate's intermediate).
//!
//! Which cloud is found from the TPM's NV (the paravisor's report, Google's AK
//! certificate). That only picks what to present: a verifier decides by the evidence
//! and its profile, so a host that fakes or hides these indices gains nothing. What
//! is fetched over plain HTTP (certificates, TD quotes) is checked by the verifier
//! against pinned roots; nothing fetched here is believed by the node itself.
//!
//! The requests themselves, bounded in time and size, are `veil-fetch`'s.

pub mod user_data;

use std::sync::{Arc, Mutex};

use thiserror::Error;
use veil_atls::{AttesterIssuer, EvidenceIssuer};
use veil_attest::HardwareAttester;
use veil_attest::azure::attester::{
    AzureSnpAttester, AzureTdxAttester, hcl_report_present, read_hcl_report,
};
use veil_attest::azure::{
    AzureError, HclKind, HclReport, IMDS_TD_QUOTE_URL, THIM_VCEK_URL, td_quote_from_answer,
    td_quote_request, thim_vcek,
};
use veil_attest::gcp::attester::{GcpAttester, ak_cert_present};
use veil_attest::gcp::{GcpError, issuer_url};
use veil_attest::tpm::TpmAttestError;
use veil_fetch::{Bytes, FetchError, Method, http_get, http_request};

#[derive(Debug, Error)]
pub enum CloudError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the answer of {url}: {source}")]
    Answer {
        url: String,
        #[source]
        source: AzureError,
    },
    #[error("the Azure HCL report: {0}")]
    Hcl(#[source] AzureError),
    #[error("{what}: {source}")]
    Tpm {
        what: &'static str,
        #[source]
        source: TpmAttestError,
    },
    #[error("the GCE AK certificate: {0}")]
    Gcp(#[source] GcpError),
    #[error("the instance's user data from {url}: {reason}")]
    UserData { url: String, reason: String },
    #[error(transparent)]
    Launch(#[from] veil_protocol::launch::LaunchError),
}

/// The chip's VCEK (DER), from Azure's metadata service at `url`.
pub async fn fetch_vcek(url: &str) -> Result<Vec<u8>, CloudError> {
    let body = http_get(url, &[("Metadata", "true")]).await?;
    thim_vcek(&body).map_err(|source| CloudError::Answer {
        url: url.to_owned(),
        source,
    })
}

/// The TD quote of the TD report in the HCL report `hcl`, from Azure's metadata
/// service at `url`.
pub async fn fetch_td_quote(url: &str, hcl: &[u8]) -> Result<Vec<u8>, CloudError> {
    let report = HclReport::parse(hcl).map_err(CloudError::Hcl)?;
    let body = http_request(
        Method::POST,
        url,
        &[("Metadata", "true"), ("Content-Type", "application/json")],
        Bytes::from(td_quote_request(report.hw_report())),
    )
    .await?;
    td_quote_from_answer(&body).map_err(|source| CloudError::Answer {
        url: url.to_owned(),
        source,
    })
}

/// What a cloud node presents, and its name for the console.
pub struct CloudEvidence {
    pub platform: &'static str,
    pub issuer: Arc<dyn EvidenceIssuer>,
}

/// The cloud attester for the TPM at `tcti`, if it is an Azure or GCE vTPM; `pcrs`
/// are quoted, `hardware` is the configfs-tsm report source (GCP). A TPM whose NV
/// cannot be listed is taken for a plain one: the node then presents TPM evidence,
/// which a verifier under a cloud profile refuses.
pub async fn attester(
    tcti: &str,
    pcrs: Vec<u32>,
    hardware: Option<HardwareAttester>,
) -> Result<Option<CloudEvidence>, CloudError> {
    let found = |what: &str, r: Result<bool, _>| match r {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!("cannot look for {what} in the TPM's NV: {e}");
            false
        }
    };
    let tpm = |what: &'static str| move |source| CloudError::Tpm { what, source };
    if found("an Azure HCL report", hcl_report_present(tcti)) {
        let hcl = read_hcl_report(tcti).map_err(tpm("reading the Azure HCL report"))?;
        let kind = HclReport::parse(&hcl)
            .map(|r| r.kind())
            .map_err(CloudError::Hcl)?;
        if kind == HclKind::Tdx {
            let td_quote = fetch_td_quote(IMDS_TD_QUOTE_URL, &hcl).await?;
            let attester = AzureTdxAttester::open(tcti, pcrs, hcl, td_quote)
                .map_err(tpm("opening the Azure vTPM's attestation key"))?;
            return Ok(Some(CloudEvidence {
                platform: "azure-tdx",
                issuer: Arc::new(AttesterIssuer(Mutex::new(attester))),
            }));
        }
        let vcek = fetch_vcek(THIM_VCEK_URL).await?;
        let attester = AzureSnpAttester::open(tcti, pcrs, vcek, None)
            .map_err(tpm("opening the Azure vTPM's attestation key"))?;
        return Ok(Some(CloudEvidence {
            platform: "azure-sev-snp",
            issuer: Arc::new(AttesterIssuer(Mutex::new(attester))),
        }));
    }
    if found("a GCE AK certificate", ak_cert_present(tcti)) {
        let attester = GcpAttester::open(tcti, pcrs, Vec::new(), hardware)
            .map_err(tpm("opening the GCE vTPM's attestation key"))?;
        let intermediates = match issuer_url(attester.ak_cert()).map_err(CloudError::Gcp)? {
            Some(url) => vec![http_get(&url, &[]).await?.to_vec()],
            None => Vec::new(),
        };
        let attester = attester.with_intermediates(intermediates);
        return Ok(Some(CloudEvidence {
            platform: "gcp-vtpm",
            issuer: Arc::new(AttesterIssuer(Mutex::new(attester))),
        }));
    }
    Ok(None)
}

/// What a node presents on its aTLS ports (the agent port, a control-plane node's
/// join port) and to a join service when it joins.
pub struct Presented {
    /// What verifiers get: the cloud's evidence, or the TPM's own quote.
    pub issuer: Arc<dyn EvidenceIssuer>,
    /// Its name for the console and the logs ("tpm", "sev-snp+vtpm", "azure-sev-snp", …).
    pub platform: &'static str,
    /// Whether it is the cloud's own evidence (Azure's, GCE's).
    pub from_cloud: bool,
    /// Whether it stands without credential activation at a join service: a cloud's
    /// evidence names its AK itself, and on AWS the TPM quote is bound by the SEV-SNP
    /// report over the AK (NitroTPM has no EK certificate to activate against).
    pub without_activation: bool,
}

/// Picks what this node presents, the one choice the bootstrapper and the join
/// service share: the cloud's evidence when the TPM is a cloud's vTPM, else `tpm`'s
/// quotes (configured by `config`, with its hardware report in a CVM).
pub async fn presented(
    config: &veil_attest::tpm::TpmAttesterConfig,
    tpm: veil_protocol::activation::SharedTpm,
) -> Result<Presented, CloudError> {
    if let Some(cloud) =
        attester(&config.tcti, config.pcrs.clone(), config.hardware.clone()).await?
    {
        return Ok(Presented {
            issuer: cloud.issuer,
            platform: cloud.platform,
            from_cloud: true,
            without_activation: true,
        });
    }
    let no_ek_cert = tpm
        .0
        .lock()
        .map(|a| a.identity().ek_cert.is_empty())
        .unwrap_or(false);
    Ok(Presented {
        issuer: tpm,
        platform: match &config.hardware {
            None => "tpm",
            Some(HardwareAttester::SevSnp(_)) => "sev-snp+vtpm",
            Some(HardwareAttester::Tdx(_)) => "tdx+vtpm",
        },
        from_cloud: false,
        without_activation: no_ek_cert && config.hardware.is_some(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    pub(crate) use veil_fetch::test_support::read_request;

    /// A TEST DOUBLE of the metadata service: answers one request with `status` and
    /// `body`, and hands back what it was asked.
    async fn metadata_test_double(
        status: &'static str,
        body: String,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let (base, served) = metadata_test_double_of(vec![(status, body)]).await;
        let served =
            tokio::spawn(async move { served.await.expect("served").pop().expect("one request") });
        (format!("{base}/metadata/THIM/amd/certification"), served)
    }

    /// The same TEST DOUBLE for several requests in turn (one connection each, as the
    /// client closes them): its base URL, and the requests it was sent.
    pub(crate) async fn metadata_test_double_of(
        answers: Vec<(&'static str, String)>,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let served = tokio::spawn(async move {
            let mut requests = Vec::new();
            for (status, body) in answers {
                let (mut s, _) = listener.accept().await.expect("accept");
                let request = read_request(&mut s).await;
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(answer.as_bytes()).await.expect("write");
                requests.push(String::from_utf8_lossy(&request).into_owned());
            }
            requests
        });
        (base, served)
    }

    #[tokio::test]
    async fn the_vcek_is_asked_for_with_the_metadata_header_and_read_from_pem() {
        let body = serde_json::json!({
            "vcekCert": "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n",
            "certificateChain": "",
        })
        .to_string();
        let (url, served) = metadata_test_double("200 OK", body).await;
        let vcek = fetch_vcek(&url).await.expect("vcek");
        assert_eq!(vcek, vec![0, 1, 2]);
        let request = served.await.expect("served").to_ascii_lowercase();
        assert!(
            request.starts_with("get /metadata/thim/amd/certification http/1.1"),
            "{request}"
        );
        assert!(request.contains("metadata: true"), "{request}");
    }

    #[tokio::test]
    async fn the_td_report_is_posted_and_a_bad_quote_named() {
        let hcl = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../attest/tests/data/azure/tdx-hcl-report.bin"
        ))
        .expect("recorded HCL report");
        let quote = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../attest/tests/data/azure/tdx-td-quote.bin"
        ))
        .expect("recorded TD quote");
        use base64::Engine as _;
        let answer = serde_json::json!({
            "quote": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&quote)
        })
        .to_string();
        let (url, served) = metadata_test_double("200 OK", answer).await;
        let got = fetch_td_quote(&url, &hcl).await.expect("TD quote");
        assert_eq!(got, quote);
        let request = served.await.expect("served");
        assert!(request.starts_with("POST /metadata/THIM"), "{request}");
        let report = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&hcl[32..32 + 1024]);
        assert!(request.contains(&report), "the TD report is posted");

        let (url, _served) = metadata_test_double("200 OK", r#"{"quote": "AAAA"}"#.into()).await;
        let e = fetch_td_quote(&url, &hcl).await.expect_err("not a quote");
        assert!(
            format!("{e:#}").contains("TD quote answer cannot be read"),
            "{e:#}"
        );
    }

    #[tokio::test]
    async fn an_error_status_or_a_bad_body_is_named_and_a_large_one_cut() {
        let (url, _served) = metadata_test_double("404 Not Found", "no such path".into()).await;
        let e = fetch_vcek(&url).await.expect_err("404");
        assert!(
            format!("{e:#}").contains("answered 404 Not Found: no such path"),
            "{e:#}"
        );
        let (url, _served) = metadata_test_double("200 OK", "{}".into()).await;
        let e = fetch_vcek(&url).await.expect_err("no vcekCert");
        assert!(format!("{e:#}").contains("vcekCert"), "{e:#}");
        let (url, _served) = metadata_test_double("200 OK", "x".repeat(100_000)).await;
        let e = http_get(&url, &[]).await.expect_err("too large");
        assert!(format!("{e:#}").contains("at most 65536 bytes"), "{e:#}");
    }
}

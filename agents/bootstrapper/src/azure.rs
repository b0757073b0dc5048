//! On an Azure CVM: the VCEK from the instance metadata service, and the attester
//! that presents the paravisor's HCL report with the vTPM's quote on the agent port.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use veil_attest::azure::attester::{AzureSnpAttester, hcl_report_present};
use veil_attest::azure::{THIM_VCEK_URL, thim_vcek};

/// How long the metadata service may take.
const THIM_TIMEOUT: Duration = Duration::from_secs(10);
/// THIM's answer is a few KiB of PEM.
const THIM_MAX_BYTES: usize = 64 * 1024;

/// The chip's VCEK (DER), from the metadata service at `url`.
pub async fn fetch_vcek(url: &str) -> Result<Vec<u8>> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = hyper::Request::get(url)
        .header("Metadata", "true")
        .body(Empty::new())
        .with_context(|| format!("a request for {url}"))?;
    let response = tokio::time::timeout(THIM_TIMEOUT, client.request(request))
        .await
        .map_err(|_| anyhow!("{url} did not answer within {THIM_TIMEOUT:?}"))?
        .with_context(|| format!("asking {url} for the VCEK"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), THIM_MAX_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow!("reading {url}'s answer (at most {THIM_MAX_BYTES} bytes): {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(anyhow!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    thim_vcek(&body).with_context(|| format!("the answer of {url}"))
}

/// The Azure attester, if the TPM at `tcti` is an Azure CVM's vTPM (its paravisor's
/// HCL report is in NV); `pcrs` are quoted. A TPM whose NV cannot be listed is taken
/// for a plain one: the node then presents TPM evidence, which a verifier under the
/// Azure profile refuses, so nothing is gained by making the host fail this.
pub async fn attester(tcti: &str, pcrs: Vec<u32>) -> Result<Option<AzureSnpAttester>> {
    match hcl_report_present(tcti) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) => {
            tracing::warn!("cannot look for an Azure HCL report in the TPM's NV: {e}");
            return Ok(None);
        }
    }
    let vcek = fetch_vcek(THIM_VCEK_URL).await?;
    let attester = AzureSnpAttester::open(tcti, pcrs, vcek, None)
        .context("opening the Azure vTPM's attestation key")?;
    Ok(Some(attester))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TEST DOUBLE of the metadata service: answers one request with `status` and
    /// `body`, and hands back what it was asked.
    async fn metadata_test_double(
        status: &'static str,
        body: String,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/metadata/THIM/amd/certification",
            listener.local_addr().expect("addr")
        );
        let served = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut request = vec![0u8; 4096];
            let n = s.read(&mut request).await.expect("read");
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(answer.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (url, served)
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
    async fn an_error_status_or_a_bad_body_is_named() {
        let (url, _served) = metadata_test_double("404 Not Found", "no such path".into()).await;
        let e = fetch_vcek(&url).await.expect_err("404");
        assert!(
            format!("{e:#}").contains("answered 404 Not Found: no such path"),
            "{e:#}"
        );
        let (url, _served) = metadata_test_double("200 OK", "{}".into()).await;
        let e = fetch_vcek(&url).await.expect_err("no vcekCert");
        assert!(format!("{e:#}").contains("vcekCert"), "{e:#}");
    }
}

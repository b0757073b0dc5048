//! A cloud node's launch settings: on a cloud there is no fw_cfg, so the operator puts
//! Veil's settings ([`CloudLaunch`]) in the instance's user data, and the node reads
//! them from the metadata service before anything else, then measures them as it
//! would fw_cfg's.
//!
//! Which cloud this is comes from the firmware's DMI strings, the usual way (cloud-init
//! does the same). The host writes those too, and the user data: neither is trusted.
//! They only decide what the node is told, which it measures into PCR 14 for every
//! verifier to see; a host that lies here can stop the node from being initialized or
//! joining (as it always can), never make a verifier accept it.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use veil_protocol::launch::{CloudLaunch, MAX_USER_DATA};

use veil_fetch::{Bytes, Method, http_get_optional, http_request};

use crate::CloudError;

/// The metadata service's address on all three clouds.
pub const METADATA_BASE: &str = "http://169.254.169.254";
/// The GCE instance attribute that holds Veil's settings.
pub const GCE_ATTRIBUTE: &str = "veil-launch";
/// Azure's chassis asset tag, the same on every Azure VM.
const AZURE_ASSET_TAG: &str = "7783-7084-3265-9085-8269-3286-77";

/// A cloud whose metadata service holds the instance's user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Azure,
    Gcp,
    Aws,
}

impl Cloud {
    /// The cloud the DMI strings under `root` (`/`, but in tests) name, if any.
    pub fn from_dmi(root: &Path) -> Option<Cloud> {
        let dmi = |name: &str| {
            std::fs::read_to_string(root.join("sys/class/dmi/id").join(name))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        if dmi("chassis_asset_tag") == AZURE_ASSET_TAG {
            Some(Cloud::Azure)
        } else if dmi("product_name") == "Google Compute Engine" {
            Some(Cloud::Gcp)
        } else if dmi("sys_vendor") == "Amazon EC2" {
            Some(Cloud::Aws)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cloud::Azure => "azure",
            Cloud::Gcp => "gcp",
            Cloud::Aws => "aws",
        }
    }

    /// The instance's user data from the metadata service at `base`, None if there is
    /// none: Azure's `userData` (base64), GCE's `veil-launch` attribute, AWS's
    /// `user-data` through an IMDSv2 session token.
    pub async fn user_data(self, base: &str) -> Result<Option<Vec<u8>>, CloudError> {
        let got = match self {
            Cloud::Azure => {
                let url = format!(
                    "{base}/metadata/instance/compute/userData?api-version=2021-01-01&format=text"
                );
                match http_get_optional(&url, &[("Metadata", "true")]).await? {
                    Some(b64) => Some(Bytes::from(
                        base64::engine::general_purpose::STANDARD
                            .decode(b64.trim_ascii())
                            .map_err(|e| CloudError::UserData {
                                url: url.clone(),
                                reason: format!("not base64: {e}"),
                            })?,
                    )),
                    None => None,
                }
            }
            Cloud::Gcp => {
                let url = format!("{base}/computeMetadata/v1/instance/attributes/{GCE_ATTRIBUTE}");
                http_get_optional(&url, &[("Metadata-Flavor", "Google")]).await?
            }
            Cloud::Aws => {
                let token = http_request(
                    Method::PUT,
                    &format!("{base}/latest/api/token"),
                    &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
                    Bytes::new(),
                )
                .await?;
                let token = std::str::from_utf8(&token)
                    .ok()
                    .map(str::trim)
                    .filter(|t| !t.is_empty() && t.len() < 256)
                    .ok_or_else(|| CloudError::UserData {
                        url: format!("{base}/latest/api/token"),
                        reason: "the session token is not a short line of text".into(),
                    })?
                    .to_owned();
                http_get_optional(
                    &format!("{base}/latest/user-data"),
                    &[("X-aws-ec2-metadata-token", &token)],
                )
                .await?
            }
        };
        Ok(got.filter(|b| !b.is_empty()).map(|b| b.to_vec()))
    }
}

/// Veil's launch settings from this cloud's user data, None where there are none (no
/// user data, or someone else's). The network may still be coming up when the node
/// starts, so a metadata service that cannot be reached is asked again (`attempts`
/// times, `pause` apart); an answer that is wrong is an error at once.
pub async fn launch_settings(
    cloud: Cloud,
    base: &str,
    attempts: u32,
    pause: Duration,
) -> Result<Option<CloudLaunch>, CloudError> {
    let mut tried = 0;
    let data = loop {
        tried += 1;
        match cloud.user_data(base).await {
            Err(CloudError::Fetch(e)) if e.is_unreachable() && tried < attempts => {
                tracing::info!(
                    cloud = cloud.name(),
                    "the metadata service is not reachable yet: {e}"
                );
                tokio::time::sleep(pause).await;
            }
            other => break other?,
        }
    };
    match data {
        Some(d) if d.len() > MAX_USER_DATA && !d.starts_with(b"veil-launch/") => Ok(None),
        Some(d) => Ok(CloudLaunch::parse(&d)?),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::metadata_test_double_of;

    fn settings() -> String {
        format!(
            "veil-launch/v1\ncluster-id={}\njoin-endpoint=10.0.0.4:7001\n",
            "ab".repeat(32)
        )
    }

    #[test]
    fn the_cloud_is_named_by_its_dmi_strings_or_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dmi = dir.path().join("sys/class/dmi/id");
        std::fs::create_dir_all(&dmi).expect("mkdir");
        assert_eq!(Cloud::from_dmi(dir.path()), None);
        for (file, value, cloud) in [
            ("sys_vendor", "Amazon EC2\n", Cloud::Aws),
            ("product_name", "Google Compute Engine\n", Cloud::Gcp),
            (
                "chassis_asset_tag",
                "7783-7084-3265-9085-8269-3286-77\n",
                Cloud::Azure,
            ),
        ] {
            std::fs::write(dmi.join(file), value).expect("write");
            assert_eq!(Cloud::from_dmi(dir.path()), Some(cloud), "{file}");
        }
        // QEMU's strings name no cloud.
        let dir = tempfile::tempdir().expect("tempdir");
        let dmi = dir.path().join("sys/class/dmi/id");
        std::fs::create_dir_all(&dmi).expect("mkdir");
        std::fs::write(dmi.join("sys_vendor"), "QEMU\n").expect("write");
        assert_eq!(Cloud::from_dmi(dir.path()), None);
    }

    #[tokio::test]
    async fn each_cloud_is_asked_its_own_way() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(settings());
        let (base, served) = metadata_test_double_of(vec![("200 OK", b64)]).await;
        let got = launch_settings(Cloud::Azure, &base, 1, Duration::ZERO)
            .await
            .expect("azure")
            .expect("settings");
        assert_eq!(got.launch.cluster_id, Some([0xab; 32]));
        let asked = served.await.expect("served").join("").to_ascii_lowercase();
        assert!(
            asked.starts_with("get /metadata/instance/compute/userdata?"),
            "{asked}"
        );
        assert!(asked.contains("metadata: true"), "{asked}");

        let (base, served) = metadata_test_double_of(vec![("200 OK", settings())]).await;
        let got = launch_settings(Cloud::Gcp, &base, 1, Duration::ZERO)
            .await
            .expect("gcp")
            .expect("settings");
        assert_eq!(got.join_endpoint.as_deref(), Some("10.0.0.4:7001"));
        let asked = served.await.expect("served").join("").to_ascii_lowercase();
        assert!(
            asked.starts_with("get /computemetadata/v1/instance/attributes/veil-launch"),
            "{asked}"
        );
        assert!(asked.contains("metadata-flavor: google"), "{asked}");

        let (base, served) =
            metadata_test_double_of(vec![("200 OK", "token-123".into()), ("200 OK", settings())])
                .await;
        let got = launch_settings(Cloud::Aws, &base, 1, Duration::ZERO)
            .await
            .expect("aws")
            .expect("settings");
        assert_eq!(got.launch.cluster_id, Some([0xab; 32]));
        let asked = served.await.expect("served");
        let (put, get) = (asked[0].to_ascii_lowercase(), asked[1].to_ascii_lowercase());
        assert!(put.starts_with("put /latest/api/token"), "{put}");
        assert!(
            put.contains("x-aws-ec2-metadata-token-ttl-seconds: 60"),
            "{put}"
        );
        assert!(get.starts_with("get /latest/user-data"), "{get}");
        assert!(get.contains("x-aws-ec2-metadata-token: token-123"), "{get}");
    }

    #[tokio::test]
    async fn none_bad_or_unreachable_user_data_is_told_apart() {
        // No user data: no settings.
        let (base, _s) = metadata_test_double_of(vec![("404 Not Found", String::new())]).await;
        let got = launch_settings(Cloud::Gcp, &base, 1, Duration::ZERO).await;
        assert_eq!(got.expect("no user data"), None);
        // Someone else's: no settings.
        let (base, _s) = metadata_test_double_of(vec![("200 OK", "#cloud-config\n".into())]).await;
        let got = launch_settings(Cloud::Gcp, &base, 1, Duration::ZERO).await;
        assert_eq!(got.expect("cloud-init's"), None);
        // Veil's, wrong: an error naming the line.
        let (base, _s) =
            metadata_test_double_of(vec![("200 OK", "veil-launch/v1\nrole=boss\n".into())]).await;
        let e = launch_settings(Cloud::Gcp, &base, 1, Duration::ZERO)
            .await
            .expect_err("bad role");
        assert!(e.to_string().contains("line 2: role 'boss'"), "{e}");
        // Azure's answer that is not base64.
        let (base, _s) = metadata_test_double_of(vec![("200 OK", "***".into())]).await;
        let e = launch_settings(Cloud::Azure, &base, 1, Duration::ZERO)
            .await
            .expect_err("not base64");
        assert!(e.to_string().contains("not base64"), "{e}");
        // Nobody listening: asked again, then the error.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}", l.local_addr().expect("addr"))
        };
        let e = launch_settings(Cloud::Gcp, &closed, 2, Duration::from_millis(10))
            .await
            .expect_err("unreachable");
        assert!(
            matches!(
                e,
                CloudError::Fetch(veil_fetch::FetchError::Transport { .. })
            ),
            "{e}"
        );
    }
}

//! Measuring the node's launch configuration (veil-protocol's [`launch`]) into
//! [`LAUNCH_PCR`] before anything uses it.
//!
//! Exactly one extend per boot: if the bootstrapper restarts, it finds the PCR
//! already holding this configuration and leaves it; a PCR holding anything else
//! means something other than this code extended it, and the node refuses to go on
//! (its quotes could no longer say what it was told).
//!
//! On a cloud (no fw_cfg) the settings come from the instance's user data first
//! ([`from_cloud`]).
//!
//! [`launch`]: veil_protocol::launch

use std::path::Path;
use std::time::Duration;

use veil_attest::tpm::TpmAttester;
use veil_protocol::launch::{CloudLaunch, LAUNCH_PCR, LaunchConfig};

/// How long a cloud node waits for its metadata service (the network may still be
/// coming up): attempts, and the pause between them.
const METADATA_ATTEMPTS: u32 = 24;
const METADATA_PAUSE: Duration = Duration::from_secs(5);

/// The launch settings in a cloud instance's user data, where `root` has no fw_cfg
/// and its DMI strings name a cloud. Settings that cannot be read are reported on the
/// console and taken as none: the node still serves attestation, and says why it can
/// be neither initialized nor join.
pub fn from_cloud(root: &Path) -> Option<CloudLaunch> {
    if root.join("sys/firmware/qemu_fw_cfg").exists() {
        return None;
    }
    let cloud = veil_cloud::user_data::Cloud::from_dmi(root)?;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            println!("veil-launch-failed starting a runtime for the metadata service: {e}");
            return None;
        }
    };
    match runtime.block_on(veil_cloud::user_data::launch_settings(
        cloud,
        veil_cloud::user_data::METADATA_BASE,
        METADATA_ATTEMPTS,
        METADATA_PAUSE,
    )) {
        Ok(Some(settings)) => {
            println!("veil-launch-source cloud={}", cloud.name());
            Some(settings)
        }
        Ok(None) => {
            println!(
                "veil-launch-source cloud={} (no Veil settings in the user data)",
                cloud.name()
            );
            None
        }
        Err(e) => {
            tracing::error!("the launch settings in the user data: {e}");
            println!("veil-launch-failed cloud={} {e}", cloud.name());
            None
        }
    }
}

/// Whether this call extended the PCR (false: it held this configuration already).
pub fn measure(tpm: &mut TpmAttester, launch: &LaunchConfig) -> Result<bool, String> {
    let read = |tpm: &mut TpmAttester| {
        tpm.read_pcrs(&[LAUNCH_PCR])
            .map_err(|e| format!("reading PCR {LAUNCH_PCR}: {e}"))?
            .get(&LAUNCH_PCR)
            .copied()
            .ok_or_else(|| format!("the TPM did not return PCR {LAUNCH_PCR}"))
    };
    let expected = launch.expected_pcr();
    match read(tpm)? {
        v if v == expected => Ok(false),
        v if v == [0; 32] => {
            tpm.extend_pcr(LAUNCH_PCR, &launch.event())
                .map_err(|e| format!("extending PCR {LAUNCH_PCR}: {e}"))?;
            Ok(true)
        }
        v => Err(format!(
            "PCR {LAUNCH_PCR} holds {}, not zero or this launch configuration's {}: \
             something else extended it, so the node's quotes could not show what it \
             was launched with",
            crate::hex_lower(&v),
            crate::hex_lower(&expected)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_machine_without_fw_cfg_that_names_a_cloud_asks_a_metadata_service() {
        // QEMU: fw_cfg is there, whatever the DMI strings say.
        let qemu = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(qemu.path().join("sys/firmware/qemu_fw_cfg")).expect("mkdir");
        let dmi = qemu.path().join("sys/class/dmi/id");
        std::fs::create_dir_all(&dmi).expect("mkdir");
        std::fs::write(dmi.join("product_name"), "Google Compute Engine\n").expect("write");
        assert_eq!(from_cloud(qemu.path()), None);
        // Neither fw_cfg nor a cloud's DMI strings: nothing to ask.
        let bare = tempfile::tempdir().expect("tempdir");
        assert_eq!(from_cloud(bare.path()), None);
    }
}

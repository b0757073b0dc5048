//! Measuring the node's launch configuration (veil-protocol's [`launch`]) into
//! [`LAUNCH_PCR`] before anything uses it.
//!
//! Exactly one extend per boot: if the bootstrapper restarts, it finds the PCR
//! already holding this configuration and leaves it; a PCR holding anything else
//! means something other than this code extended it, and the node refuses to go on
//! (its quotes could no longer say what it was told).
//!
//! [`launch`]: veil_protocol::launch

use veil_attest::tpm::TpmAttester;
use veil_protocol::launch::{LAUNCH_PCR, LaunchConfig};

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

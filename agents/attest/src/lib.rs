//! Attestation for Veil nodes: finding out which confidential-computing platform a node
//! runs on, and reading the evidence that platform offers.
//!
//! Everything here reads real kernel interfaces (`/dev/tpmrm0`, `/dev/sev-guest`,
//! configfs-tsm, the TPM's sysfs PCR files). Paths are taken relative to a root
//! directory so the logic can be tested against a fake sysfs tree in a temp dir.

pub mod pcr;
pub mod platform;

pub use pcr::{PcrBank, PcrError, read_sysfs_pcrs};
pub use platform::{Platform, detect};

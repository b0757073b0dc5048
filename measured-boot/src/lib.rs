//! Computes, offline and from an image file alone, the sha256-bank PCR values a Veil
//! node measures when it boots — so a verifier can enforce them — and replays TPM event
//! logs to explain, component by component, why a node's PCRs differ.
//!
//! The boot modelled: OVMF loads the UKI directly from `EFI/BOOT/BOOTX64.EFI` on the ESP
//! (PCR 4), systemd-stub 257 measures the UKI sections (PCR 11) and starts Linux 6.12,
//! whose EFI stub measures the command line and the initrd (PCR 9); systemd-pcrphase
//! then extends PCR 11 per boot phase. [`pcr`] documents each event with its source.
//!
//! ```no_run
//! let image = measured_boot::Image::open("veil.raw")?;
//! let expected = measured_boot::expected_pcrs(&image.uki)?;
//! println!("PCR 11 = {}", expected.pcr11);
//! # Ok::<(), measured_boot::Error>(())
//! ```
//!
//! Everything is pure Rust and reads only what it needs: never a whole disk image.

pub mod authenticode;
pub mod diff;
pub mod digest;
pub mod error;
pub mod esp;
pub mod eventlog;
pub mod gpt;
pub mod image;
pub mod initrd;
pub mod pcr;
pub mod pe;
pub mod reference;
pub mod uki;

#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use authenticode::authenticode_sha256;
pub use diff::{Difference, diff_against_log, diff_expected, diff_reference_against_log};
pub use digest::Digest;
pub use error::{Error, Result};
pub use eventlog::EventLog;
pub use image::Image;
pub use pcr::{
    BootConfig, Component, ExpectedPcrs, Measurement, expected_pcrs, expected_pcrs_with,
};
pub use reference::ReferenceMeasurements;
pub use uki::{Uki, UnifiedSection};

//! The sha256-bank PCR values a Veil node measures when OVMF boots its UKI directly
//! (no boot menu), systemd-stub 257 runs, and Linux 6.12's EFI stub starts.
//!
//! Every extend is listed as a named [`Component`] in boot order, so a difference can be
//! explained by component. What each PCR receives, and the evidence:
//!
//! **PCR 4** (boot manager code; measured by the firmware):
//! 1. `EV_EFI_ACTION` "Calling EFI Application from Boot Option" (no NUL) — EDK2
//!    `Tcg2Dxe.c` `OnReadyToBoot`, first boot attempt;
//! 2. `EV_SEPARATOR`, digest of the 4 bytes `00 00 00 00` — same place, separators for
//!    PCR 0–6;
//! 3. `EV_EFI_BOOT_SERVICES_APPLICATION`: Authenticode hash of the UKI
//!    (`DxeTpm2MeasureBootLib`, when the boot manager loads `\EFI\BOOT\BOOTX64.EFI`);
//! 4. `EV_EFI_BOOT_SERVICES_APPLICATION`: Authenticode hash of the kernel PE from
//!    `.linux` (`VirtualSize` bytes). systemd `src/boot/linux.c` `linux_exec` →
//!    `load_image` calls `BS->LoadImage` on the in-memory kernel, and the firmware's
//!    measure-boot handler measures it. With **Secure Boot on**, `load_image` first
//!    installs a security override (`src/boot/secure-boot.c`,
//!    `install_security_override`, a no-op when Secure Boot is off) whose hooks return
//!    `EFI_SUCCESS` without calling the firmware's handler, so the kernel is then *not*
//!    measured: see [`BootConfig::kernel_in_pcr4`].
//!
//! **PCR 11** (systemd-stub `measure_sections` in `src/boot/stub.c`): for each section of
//! `unified_sections[]` (`src/fundamental/uki.c`) that is present and measured (all but
//! `.pcrsig`), one extend with SHA-256 of the name *including* its NUL
//! (`strsize8`), then one with SHA-256 of the section's `VirtualSize` bytes
//! (`memory_size`). Then userspace: `systemd-pcrphase-initrd.service` extends
//! "enter-initrd" and, when stopped, "leave-initrd"; `systemd-pcrphase-sysinit.service`
//! "sysinit"; `systemd-pcrphase.service` "ready" (units/*.service.in of 257; later
//! "shutdown" and "final"). A running node stays at "ready".
//!
//! **PCR 9** (Linux EFI stub, `drivers/firmware/efi/libstub/efi-stub-helper.c`):
//! `efi_convert_cmdline` first measures `LoadOptionsSize` bytes of `LoadOptions` as the
//! tagged event "LOADED_IMAGE::LoadOptions" (`EV_EVENT_TAG`, id `0x8F3B22ED`) when the
//! size is non-zero; later `efi_load_initrd` measures the initrd loaded through the
//! `LINUX_EFI_INITRD_MEDIA_GUID` LoadFile2 device path as "Linux initrd" (`0x8F3B22EC`)
//! when non-empty. On x86 `efi_pe_entry` converts the command line before
//! `efi_stub_entry` loads the initrd, hence this order. systemd-stub sets `LoadOptions` to
//! the `.cmdline` converted to UTF-16 (`xstrn8_to_16`), with leading/trailing whitespace
//! removed and control characters turned into spaces (`mangle_stub_cmdline`), and
//! `LoadOptionsSize = strsize16(...)`, i.e. *including* the UTF-16 NUL (`linux.c`).
//! systemd-pcrlock's `lock-kernel-cmdline` predicts the same (`char16_strlen(u)*2+2`).
//! The initrd is described in [`crate::initrd`].
//!
//! **PCR 12** (systemd-stub): the passed command line when it overrides the UKI's
//! (`settle_command_line`; OVMF's auto-created boot option passes none), cmdline/devicetree
//! /initrd/ucode add-ons from the ESP, SMBIOS `io.systemd.stub.kernel-cmdline-extra`
//! (ignored in confidential VMs), credentials from the ESP, confexts, and a non-default
//! profile number. A Veil ESP has none of these, so PCR 12 is never extended: all zeros.
//!
//! **PCR 13** (systemd-stub): the sysext cpio from `<UKI>.extra.d/*.raw`; none on a Veil
//! ESP, so all zeros.
//!
//! Sources read: systemd 257.13 (Debian trixie's source package), Linux libstub
//! (`efi-stub-helper.c`, `x86-stub.c`). Checked: PCR 11 against `systemd-measure
//! calculate` and Authenticode against `pesign --hash` (tests/golden.rs); all five values
//! against a Veil image booted in QEMU (OVMF 2025.02, swtpm, Secure Boot off), which
//! printed exactly the PCR 4, 9, 11, 12 and 13 computed here with the defaults.

use crate::authenticode::authenticode_sha256;
use crate::digest::{Digest, replay};
use crate::error::Result;
use crate::initrd::{InitrdAssembly, initrd_digest};
use crate::uki::{Uki, UnifiedSection};
use std::fmt;

/// The TCG event types used here (TCG PC Client Platform Firmware Profile, §10.4.1).
pub mod event_type {
    pub const EV_PREBOOT_CERT: u32 = 0x0;
    pub const EV_POST_CODE: u32 = 0x1;
    pub const EV_NO_ACTION: u32 = 0x3;
    pub const EV_SEPARATOR: u32 = 0x4;
    pub const EV_ACTION: u32 = 0x5;
    pub const EV_EVENT_TAG: u32 = 0x6;
    pub const EV_IPL: u32 = 0xd;
    pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
    pub const EV_EFI_ACTION: u32 = 0x8000_0007;
}

/// The userspace boot phases systemd-pcrphase measures into PCR 11, in order.
pub const PHASES: [&str; 6] = [
    "enter-initrd",
    "leave-initrd",
    "sysinit",
    "ready",
    "shutdown",
    "final",
];

/// The last phase a running node has reached.
pub const BOOTED_PHASE: &str = "ready";

/// What one extend measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    /// PCR 4: "Calling EFI Application from Boot Option".
    BootAttempt,
    /// PCR 4: the separator between pre-boot and boot.
    Separator,
    /// PCR 4: the UKI's Authenticode hash.
    UkiImage,
    /// PCR 4: the kernel (`.linux`) Authenticode hash.
    KernelImage,
    /// PCR 11: a section's name.
    SectionName(UnifiedSection),
    /// PCR 11: a section's data.
    SectionData(UnifiedSection),
    /// PCR 11: a systemd-pcrphase boot phase.
    Phase(String),
    /// PCR 9: the kernel command line as LoadOptions.
    LoadOptions,
    /// PCR 9: the initrd.
    Initrd,
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Component::BootAttempt => {
                f.write_str("boot attempt (\"Calling EFI Application from Boot Option\")")
            }
            Component::Separator => f.write_str("separator"),
            Component::UkiImage => f.write_str("UKI PE hash"),
            Component::KernelImage => f.write_str("kernel (.linux) PE hash"),
            Component::SectionName(s) => write!(f, "{s} section name"),
            Component::SectionData(s) => write!(f, "{s}"),
            Component::Phase(p) => write!(f, "boot phase \"{p}\""),
            Component::LoadOptions => f.write_str("kernel command line (LoadOptions)"),
            Component::Initrd => f.write_str("initrd"),
        }
    }
}

/// One extend of a PCR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    pub pcr: u32,
    pub event_type: u32,
    pub component: Component,
    pub digest: Digest,
}

/// How LoadOptions is measured into PCR 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadOptionsEncoding {
    /// UTF-16LE with the terminating NUL (systemd 257 + Linux 6.12; the default).
    #[default]
    Utf16WithNul,
    /// UTF-16LE without the NUL.
    Utf16WithoutNul,
    /// Not measured at all (kernels before 6.1 did not measure LoadOptions).
    NotMeasured,
}

/// The choices that change the expected values; the defaults are Veil's boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootConfig {
    /// Whether the firmware measures the kernel into PCR 4 (true with Secure Boot off).
    pub kernel_in_pcr4: bool,
    pub load_options: LoadOptionsEncoding,
    pub initrd: InitrdAssembly,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            kernel_in_pcr4: true,
            load_options: LoadOptionsEncoding::default(),
            initrd: InitrdAssembly::default(),
        }
    }
}

/// The expected values of the PCRs a Veil node's boot determines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPcrs {
    pub pcr4: Digest,
    pub pcr9: Digest,
    /// PCR 11 after the last phase a running node reaches ("ready").
    pub pcr11: Digest,
    /// PCR 11 after systemd-stub ("stub") and after each phase in [`PHASES`].
    pub pcr11_phases: Vec<(String, Digest)>,
    pub pcr12: Digest,
    pub pcr13: Digest,
    /// Every extend up to the booted state, in order.
    pub events: Vec<Measurement>,
}

impl ExpectedPcrs {
    /// The expected value of `pcr`, if this crate predicts it.
    pub fn value(&self, pcr: u32) -> Option<Digest> {
        match pcr {
            4 => Some(self.pcr4),
            9 => Some(self.pcr9),
            11 => Some(self.pcr11),
            12 => Some(self.pcr12),
            13 => Some(self.pcr13),
            _ => None,
        }
    }

    /// The PCRs this crate predicts.
    pub const PCRS: [u32; 5] = [4, 9, 11, 12, 13];

    /// The extends of one PCR, in order.
    pub fn events_for(&self, pcr: u32) -> impl Iterator<Item = &Measurement> {
        self.events.iter().filter(move |m| m.pcr == pcr)
    }
}

/// The UTF-16 string systemd-stub passes as the kernel's LoadOptions (without the NUL),
/// or `None` if the UKI has no `.cmdline` (then LoadOptions stays empty).
pub fn stub_load_options(uki: &Uki) -> Option<Vec<u16>> {
    let raw = uki.section(UnifiedSection::Cmdline)?;
    Some(mangle_stub_cmdline(&utf8_to_16_like_stub(&raw)))
}

/// systemd `src/boot/efi-string.c` `xstrn8_to_16`: stops at NUL, keeps only BMP code
/// points that are not surrogates, drops everything else (including bad UTF-8).
fn utf8_to_16_like_stub(b: &[u8]) -> Vec<u16> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c0) = b.get(i) {
        if c0 == 0 {
            break;
        }
        let (len, init) = match c0 {
            c if c & 0x80 == 0 => (1usize, u32::from(c)),
            c if c & 0xe0 == 0xc0 => (2, u32::from(c & 0x1f)),
            c if c & 0xf0 == 0xe0 => (3, u32::from(c & 0x0f)),
            c if c & 0xf8 == 0xf0 => (4, u32::from(c & 0x07)),
            c if c & 0xfc == 0xf8 => (5, u32::from(c & 0x03)),
            c if c & 0xfe == 0xfc => (6, u32::from(c & 0x01)),
            _ => {
                i += 1;
                continue;
            }
        };
        let left = b.len() - i;
        if len > left {
            // utf8_to_unichar returns `len` and an invalid character: the rest is consumed.
            break;
        }
        let mut cp = Some(init);
        for k in 1..len {
            let cb = b.get(i + k).copied().unwrap_or(0);
            cp = match cp {
                Some(v) if cb & 0xc0 == 0x80 => Some((v << 6) | u32::from(cb & 0x3f)),
                _ => None,
            };
        }
        i += len;
        if let Some(v) = cp {
            if v <= 0xd7ff || (0xe000..=0xffff).contains(&v) {
                if v == 0 {
                    break; // an overlong NUL ends the string for strsize16
                }
                out.push(v as u16);
            }
        }
    }
    out
}

/// systemd `src/boot/util.c` `mangle_stub_cmdline`: whitespace is `<= 0x20` or `0x7f`.
fn mangle_stub_cmdline(s: &[u16]) -> Vec<u16> {
    let ws = |c: u16| c <= 0x20 || c == 0x7f;
    let start = s.iter().position(|&c| !ws(c)).unwrap_or(s.len());
    let end = s.iter().rposition(|&c| !ws(c)).map_or(start, |e| e + 1);
    s.get(start..end.max(start))
        .unwrap_or_default()
        .iter()
        .map(|&c| if ws(c) { u16::from(b' ') } else { c })
        .collect()
}

fn utf16le(units: &[u16], nul: bool) -> Vec<u8> {
    let mut out: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
    if nul {
        out.extend_from_slice(&[0, 0]);
    }
    out
}

/// The expected PCRs for Veil's boot ([`BootConfig::default`]).
pub fn expected_pcrs(uki: &Uki) -> Result<ExpectedPcrs> {
    expected_pcrs_with(uki, &BootConfig::default())
}

/// The expected PCRs for a given boot configuration.
pub fn expected_pcrs_with(uki: &Uki, config: &BootConfig) -> Result<ExpectedPcrs> {
    use event_type::*;
    let mut events = Vec::new();
    let mut push = |pcr, event_type, component, digest| {
        events.push(Measurement {
            pcr,
            event_type,
            component,
            digest,
        })
    };

    // PCR 4.
    push(
        4,
        EV_EFI_ACTION,
        Component::BootAttempt,
        Digest::of(b"Calling EFI Application from Boot Option"),
    );
    push(
        4,
        EV_SEPARATOR,
        Component::Separator,
        Digest::of(&[0, 0, 0, 0]),
    );
    push(
        4,
        EV_EFI_BOOT_SERVICES_APPLICATION,
        Component::UkiImage,
        uki.authenticode()?,
    );
    if config.kernel_in_pcr4 {
        let kernel = uki.kernel();
        let input = format!("{}: .linux", uki.input());
        push(
            4,
            EV_EFI_BOOT_SERVICES_APPLICATION,
            Component::KernelImage,
            authenticode_sha256(&input, &kernel)?,
        );
    }

    // PCR 11, systemd-stub.
    for s in uki.sections().filter(|s| s.measured()) {
        let mut name = s.name().as_bytes().to_vec();
        name.push(0);
        push(11, EV_IPL, Component::SectionName(s), Digest::of(&name));
        let data = uki.section(s).unwrap_or_default();
        push(11, EV_IPL, Component::SectionData(s), Digest::of(&data));
    }

    // PCR 9, Linux EFI stub.
    if let Some(units) = stub_load_options(uki) {
        let bytes = match config.load_options {
            LoadOptionsEncoding::Utf16WithNul => Some(utf16le(&units, true)),
            LoadOptionsEncoding::Utf16WithoutNul => Some(utf16le(&units, false)),
            LoadOptionsEncoding::NotMeasured => None,
        };
        if let Some(b) = bytes.filter(|b| !b.is_empty()) {
            push(9, EV_EVENT_TAG, Component::LoadOptions, Digest::of(&b));
        }
    }
    if let Some(d) = initrd_digest(uki, config.initrd) {
        push(9, EV_EVENT_TAG, Component::Initrd, d);
    }

    let value = |events: &[Measurement], pcr: u32| {
        replay(events.iter().filter(|m| m.pcr == pcr).map(|m| &m.digest))
    };
    let stub = value(&events, 11);
    let mut pcr11_phases = vec![("stub".to_owned(), stub)];
    let mut pcr11 = stub;
    let mut reached_booted = false;
    for phase in PHASES {
        let d = Digest::of(phase.as_bytes());
        let current = pcr11_phases.last().map_or(stub, |(_, v)| *v).extend(&d);
        pcr11_phases.push((phase.to_owned(), current));
        if !reached_booted {
            events.push(Measurement {
                pcr: 11,
                event_type: EV_IPL,
                component: Component::Phase(phase.to_owned()),
                digest: d,
            });
            pcr11 = current;
        }
        reached_booted |= phase == BOOTED_PHASE;
    }

    Ok(ExpectedPcrs {
        pcr4: value(&events, 4),
        pcr9: value(&events, 9),
        pcr11,
        pcr11_phases,
        pcr12: Digest::ZERO,
        pcr13: Digest::ZERO,
        events,
    })
}

//! A Unified Kernel Image: a systemd-stub PE with the kernel, initrd, command line and
//! os-release in named sections (UAPI "Unified Kernel Image" specification).
//!
//! Which sections systemd-stub 257 uses, and in which order it measures them, is
//! `unified_sections[]` in systemd `src/fundamental/uki.c` with `unified_section_measure()`
//! in `uki.h` (every section but `.pcrsig`). Lookup follows `src/boot/pe.c`
//! (`pe_locate_profile_sections`): the first section of a name wins; sections before the
//! first `.profile` are the base, and the sections of profile 0 (from the first `.profile`
//! to the next) override them, because the stub boots profile 0 when it is given no
//! `@N` argument (`src/boot/stub.c`, `find_sections`).

use crate::authenticode::{TrailingPadding, authenticode_sha256_with};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::pe::{PeLayout, Section};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// The UKI sections systemd-stub 257 knows, in its canonical (measurement) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnifiedSection {
    Linux,
    Osrel,
    Cmdline,
    Initrd,
    Ucode,
    Splash,
    Dtb,
    Uname,
    Sbat,
    Pcrsig,
    Pcrpkey,
    Profile,
    Dtbauto,
    Hwids,
}

impl UnifiedSection {
    /// All of them, in systemd's order (`src/fundamental/uki.h`: "PLEASE DO NOT REORDER").
    pub const ALL: [UnifiedSection; 14] = [
        UnifiedSection::Linux,
        UnifiedSection::Osrel,
        UnifiedSection::Cmdline,
        UnifiedSection::Initrd,
        UnifiedSection::Ucode,
        UnifiedSection::Splash,
        UnifiedSection::Dtb,
        UnifiedSection::Uname,
        UnifiedSection::Sbat,
        UnifiedSection::Pcrsig,
        UnifiedSection::Pcrpkey,
        UnifiedSection::Profile,
        UnifiedSection::Dtbauto,
        UnifiedSection::Hwids,
    ];

    /// The PE section name.
    pub fn name(self) -> &'static str {
        match self {
            UnifiedSection::Linux => ".linux",
            UnifiedSection::Osrel => ".osrel",
            UnifiedSection::Cmdline => ".cmdline",
            UnifiedSection::Initrd => ".initrd",
            UnifiedSection::Ucode => ".ucode",
            UnifiedSection::Splash => ".splash",
            UnifiedSection::Dtb => ".dtb",
            UnifiedSection::Uname => ".uname",
            UnifiedSection::Sbat => ".sbat",
            UnifiedSection::Pcrsig => ".pcrsig",
            UnifiedSection::Pcrpkey => ".pcrpkey",
            UnifiedSection::Profile => ".profile",
            UnifiedSection::Dtbauto => ".dtbauto",
            UnifiedSection::Hwids => ".hwids",
        }
    }

    /// Whether systemd-stub measures it into PCR 11. `.pcrsig` holds signatures over
    /// the expected PCR 11 values and so cannot be an input to them.
    pub fn measured(self) -> bool {
        self != UnifiedSection::Pcrsig
    }
}

impl fmt::Display for UnifiedSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed UKI, holding the whole PE file.
#[derive(Clone)]
pub struct Uki {
    input: String,
    bytes: Vec<u8>,
    layout: PeLayout,
    /// Index into `layout.sections` for each located unified section.
    located: BTreeMap<UnifiedSection, usize>,
}

impl fmt::Debug for Uki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uki")
            .field("input", &self.input)
            .field("len", &self.bytes.len())
            .field("sections", &self.located.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Uki {
    /// Parses a UKI held in memory.
    pub fn parse(bytes: Vec<u8>) -> Result<Uki> {
        Uki::parse_named("UKI", bytes)
    }

    /// Parses a UKI; `input` names it in error messages (e.g. its path).
    pub fn parse_named(input: impl Into<String>, bytes: Vec<u8>) -> Result<Uki> {
        let input = input.into();
        let layout = PeLayout::parse(&input, &bytes)?;
        let located = locate_sections(&layout.sections);
        // systemd-stub refuses to boot without `.linux` (stub.c, find_sections).
        if !located.contains_key(&UnifiedSection::Linux) {
            return Err(Error::NotUki { input });
        }
        let uki = Uki {
            input,
            bytes,
            layout,
            located,
        };
        // Check every located section's file range now, so that accessors cannot fail later.
        for &s in uki.located.keys() {
            uki.try_section(s)?;
        }
        Ok(uki)
    }

    /// The name given to this UKI for messages.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// The PE file.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The parsed PE layout.
    pub fn layout(&self) -> &PeLayout {
        &self.layout
    }

    /// SHA-256 of the whole file.
    pub fn sha256(&self) -> Digest {
        Digest::of(&self.bytes)
    }

    /// Authenticode SHA-256 of the UKI, as the firmware measures it into PCR 4.
    pub fn authenticode(&self) -> Result<Digest> {
        authenticode_sha256_with(
            &self.input,
            &self.bytes,
            &self.layout,
            TrailingPadding::None,
        )
    }

    /// The sections systemd-stub will find, in measurement order.
    pub fn sections(&self) -> impl Iterator<Item = UnifiedSection> + '_ {
        self.located.keys().copied()
    }

    /// The section table entry a unified section was found in.
    pub fn section_header(&self, s: UnifiedSection) -> Option<&Section> {
        self.located
            .get(&s)
            .and_then(|&i| self.layout.sections.get(i))
    }

    fn try_section(&self, s: UnifiedSection) -> Result<Option<Cow<'_, [u8]>>> {
        match self.section_header(s) {
            Some(h) => self
                .layout
                .memory_view(&self.input, &self.bytes, h)
                .map(Some),
            None => Ok(None),
        }
    }

    /// The section's data as systemd-stub sees it in memory (VirtualSize bytes).
    pub fn section(&self, s: UnifiedSection) -> Option<Cow<'_, [u8]>> {
        // Checked in `parse_named`, so an error cannot happen here.
        self.try_section(s).ok().flatten()
    }

    /// The kernel PE image (`.linux`).
    pub fn kernel(&self) -> Cow<'_, [u8]> {
        self.section(UnifiedSection::Linux).unwrap_or_default()
    }

    /// `.cmdline` as text, as stored (lossy UTF-8, up to the first NUL).
    pub fn cmdline(&self) -> Option<String> {
        self.section(UnifiedSection::Cmdline).map(|c| text(&c))
    }

    /// The value of `roothash=` on the command line.
    pub fn roothash(&self) -> Option<String> {
        self.cmdline_value("roothash")
    }

    /// The value of `usrhash=` on the command line.
    pub fn usrhash(&self) -> Option<String> {
        self.cmdline_value("usrhash")
    }

    /// The last value of `key=` on the command line (the kernel and systemd let later
    /// arguments win).
    pub fn cmdline_value(&self, key: &str) -> Option<String> {
        let cmdline = self.cmdline()?;
        cmdline
            .split_ascii_whitespace()
            .filter_map(|arg| arg.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.trim_matches('"').to_owned())
            .next_back()
    }

    /// `.osrel` parsed as os-release (KEY=VALUE lines, quotes removed).
    pub fn os_release(&self) -> BTreeMap<String, String> {
        self.section(UnifiedSection::Osrel)
            .map(|o| parse_os_release(&text(&o)))
            .unwrap_or_default()
    }

    /// `.uname`: the kernel release.
    pub fn uname(&self) -> Option<String> {
        self.section(UnifiedSection::Uname)
            .map(|u| text(&u).trim().to_owned())
    }
}

/// Bytes up to the first NUL, as lossy UTF-8.
fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or_default()).into_owned()
}

/// Parses os-release(5) text: `KEY=VALUE`, comments, single or double quotes.
pub fn parse_os_release(s: &str) -> BTreeMap<String, String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (
                k.trim().to_owned(),
                unquoted.replace("\\\"", "\"").replace("\\\\", "\\"),
            )
        })
        .collect()
}

/// Finds the unified sections the way systemd-stub 257 does for profile 0.
fn locate_sections(table: &[Section]) -> BTreeMap<UnifiedSection, usize> {
    let first_profile = table.iter().position(|s| s.name_is(".profile"));
    let base_end = first_profile.unwrap_or(table.len());
    let mut found = locate_in(table, 0, base_end);
    if let Some(start) = first_profile {
        let end = table
            .iter()
            .enumerate()
            .skip(start + 1)
            .find(|(_, s)| s.name_is(".profile"))
            .map_or(table.len(), |(i, _)| i);
        found.extend(locate_in(table, start, end));
    }
    // PE_SECTION_VECTOR_IS_SET: a section found with VirtualSize 0 counts as absent (and,
    // found in profile 0, it hides the base section of that name, as in systemd).
    found.retain(|_, i| table.get(*i).is_some_and(|s| s.virtual_size != 0));
    found
}

fn locate_in(table: &[Section], start: usize, end: usize) -> BTreeMap<UnifiedSection, usize> {
    let mut found = BTreeMap::new();
    for kind in UnifiedSection::ALL {
        // `.dtbauto` is only used when it matches the machine's firmware device tree or
        // hardware IDs (pe.c, pe_use_this_dtb); Veil's x86 VMs have none, so the stub
        // never picks it up.
        if kind == UnifiedSection::Dtbauto {
            continue;
        }
        let hit = table
            .iter()
            .enumerate()
            .take(end)
            .skip(start)
            // The first section of that name wins, as in pe_locate_sections_internal.
            .find(|(_, s)| s.name_is(kind.name()));
        if let Some((i, _)) = hit {
            found.insert(kind, i);
        }
    }
    found
}

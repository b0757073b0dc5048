//! PE/COFF layout of a UEFI image: what the Authenticode hash and the UKI section
//! lookup need. Headers and the section table are parsed with `goblin`; the two
//! file offsets Authenticode must skip (CheckSum and the Certificate Table data
//! directory entry) are computed here from the layout in Microsoft's "PE Format"
//! specification (optional header: CheckSum at offset 64 for both PE32 and PE32+;
//! data directories at 96 (PE32) or 112 (PE32+); the Certificate Table is entry 4).

use crate::error::{Error, Result};
use std::borrow::Cow;

/// Most zero fill (VirtualSize beyond the section's file data) this crate measures.
/// ukify writes VirtualSize equal to the data length, so a real UKI needs none; a
/// tiny damaged file must not make every parse allocate and hash hundreds of MB (the
/// fuzzer found 2 GiB, tests/data/fuzz/image-2gib-section.bin, and then ran at 130
/// inputs/s while 512 MiB was still allowed). systemd-stub would measure a larger
/// fill; refusing it only means `veil measure` names the section instead of
/// predicting PCRs for an image nobody builds.
const MAX_ZERO_FILL: u64 = 1 << 20;

const PE32_MAGIC: u16 = 0x10b;
const PE32PLUS_MAGIC: u16 = 0x20b;
const CERTIFICATE_TABLE_INDEX: u32 = 4;

/// One entry of the section table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The 8 name bytes as stored (NUL-padded).
    pub raw_name: [u8; 8],
    /// The name up to the first NUL, lossily decoded.
    pub name: String,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
}

impl Section {
    /// Compares like systemd's `pe_section_name_equal()`: up to 8 bytes, NUL-terminated.
    pub fn name_is(&self, name: &str) -> bool {
        let want = name.as_bytes();
        if want.len() > 8 {
            return false;
        }
        let mut padded = [0u8; 8];
        padded[..want.len()].copy_from_slice(want);
        self.raw_name == padded
    }
}

/// The parsed layout of a PE image held in memory.
#[derive(Debug, Clone)]
pub struct PeLayout {
    /// File offset of the optional header's CheckSum field.
    pub checksum_offset: usize,
    /// File offset of the Certificate Table data directory entry, if the image has one
    /// (NumberOfRvaAndSizes > 4).
    pub cert_dir_entry_offset: Option<usize>,
    /// File offset and size of the attribute certificate table (0, 0 when unsigned).
    pub cert_table: (u32, u32),
    pub size_of_headers: u32,
    pub is_pe32_plus: bool,
    /// Sections in table order.
    pub sections: Vec<Section>,
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl PeLayout {
    /// Parses the DOS, COFF and optional headers and the section table.
    /// `input` names the bytes in error messages.
    pub fn parse(input: &str, bytes: &[u8]) -> Result<PeLayout> {
        if bytes.get(..2) != Some(b"MZ") {
            return Err(Error::bad_pe(input, "no MZ signature"));
        }
        let header = goblin::pe::header::Header::parse(bytes)
            .map_err(|e| Error::bad_pe(input, format!("headers: {e}")))?;
        let opt = header
            .optional_header
            .ok_or_else(|| Error::bad_pe(input, "no optional header"))?;
        let pe_pointer = header.dos_header.pe_pointer as usize;
        // "PE\0\0" (4) + COFF file header (20).
        let opt_start = pe_pointer
            .checked_add(24)
            .ok_or_else(|| Error::bad_pe(input, "PE header offset overflows"))?;
        let opt_size = usize::from(header.coff_header.size_of_optional_header);
        let (is_pe32_plus, dirs_at) = match opt.standard_fields.magic {
            PE32_MAGIC => (false, 96usize),
            PE32PLUS_MAGIC => (true, 112usize),
            m => {
                return Err(Error::bad_pe(
                    input,
                    format!("unknown optional header magic {m:#x}"),
                ));
            }
        };
        let checksum_offset = opt_start + 64;
        if checksum_offset + 4 > bytes.len() {
            return Err(Error::bad_pe(
                input,
                "optional header truncated before CheckSum",
            ));
        }
        let n_dirs = opt.windows_fields.number_of_rva_and_sizes;
        let entry_rel = dirs_at + (CERTIFICATE_TABLE_INDEX as usize) * 8;
        let cert_dir_entry_offset = (n_dirs > CERTIFICATE_TABLE_INDEX && entry_rel + 8 <= opt_size)
            .then_some(opt_start + entry_rel);
        let cert_table = match cert_dir_entry_offset {
            Some(at) => {
                let off = read_u32(bytes, at)
                    .ok_or_else(|| Error::bad_pe(input, "certificate table entry truncated"))?;
                let size = read_u32(bytes, at + 4)
                    .ok_or_else(|| Error::bad_pe(input, "certificate table entry truncated"))?;
                (off, size)
            }
            None => (0, 0),
        };

        let mut at = opt_start
            .checked_add(opt_size)
            .ok_or_else(|| Error::bad_pe(input, "section table offset overflows"))?;
        let table = header
            .coff_header
            .sections(bytes, &mut at)
            .map_err(|e| Error::bad_pe(input, format!("section table: {e}")))?;
        let sections = table
            .into_iter()
            .map(|s| {
                let end = s.name.iter().position(|&b| b == 0).unwrap_or(8);
                Section {
                    raw_name: s.name,
                    name: String::from_utf8_lossy(s.name.get(..end).unwrap_or_default())
                        .into_owned(),
                    virtual_size: s.virtual_size,
                    virtual_address: s.virtual_address,
                    size_of_raw_data: s.size_of_raw_data,
                    pointer_to_raw_data: s.pointer_to_raw_data,
                }
            })
            .collect();

        Ok(PeLayout {
            checksum_offset,
            cert_dir_entry_offset,
            cert_table,
            size_of_headers: opt.windows_fields.size_of_headers,
            is_pe32_plus,
            sections,
        })
    }

    /// The section as the UEFI loader maps it into memory, which is what systemd-stub
    /// measures and hands on: `min(SizeOfRawData, VirtualSize)` bytes from the file,
    /// zero-filled up to `VirtualSize` (systemd `src/boot/pe.c`, `pe_locate_sections_internal`:
    /// `memory_size = VirtualSize`, `file_size = MIN(SizeOfRawData, VirtualSize)`).
    pub fn memory_view<'a>(
        &self,
        input: &str,
        bytes: &'a [u8],
        s: &Section,
    ) -> Result<Cow<'a, [u8]>> {
        let vsize = u64::from(s.virtual_size);
        let file_size = vsize.min(u64::from(s.size_of_raw_data));
        let start = u64::from(s.pointer_to_raw_data);
        let end = start + file_size;
        let what = || format!("section {}", s.name);
        let data = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(a, b)| bytes.get(a..b))
            .ok_or_else(|| Error::truncated(input, what(), start, end, bytes.len() as u64))?;
        if file_size == vsize {
            return Ok(Cow::Borrowed(data));
        }
        if vsize - file_size > MAX_ZERO_FILL {
            return Err(Error::bad_pe(
                input,
                format!(
                    "section {} has an implausible VirtualSize {vsize:#x}: {:#x} bytes of \
                     zero fill beyond its {file_size:#x} bytes of file data, more than the \
                     {MAX_ZERO_FILL:#x} Veil measures",
                    s.name,
                    vsize - file_size
                ),
            ));
        }
        let mut owned = data.to_vec();
        owned.resize(vsize as usize, 0);
        Ok(Cow::Owned(owned))
    }
}

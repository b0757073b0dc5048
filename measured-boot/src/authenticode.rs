//! The Authenticode PE image hash (SHA-256), as UEFI firmware measures a PE image
//! into PCR 4 (`EV_EFI_BOOT_SERVICES_APPLICATION`).
//!
//! Follows Microsoft's "Windows Authenticode Portable Executable Signature Format"
//! (version 1.0, 2008), section "Calculating the PE Image Hash", steps 1–15:
//!
//! 1. hash the headers from the start of the file up to the optional header's CheckSum
//!    field, skip CheckSum (4 bytes);
//! 2. hash on up to the Certificate Table data directory entry, skip that entry (8 bytes);
//! 3. hash the rest of the headers up to `SizeOfHeaders`; `SUM_OF_BYTES_HASHED` starts at
//!    `SizeOfHeaders`;
//! 4. hash each section with `SizeOfRawData != 0`, in ascending `PointerToRawData` order,
//!    `SizeOfRawData` bytes from `PointerToRawData`, adding to `SUM_OF_BYTES_HASHED`;
//! 5. if the file is longer than `SUM_OF_BYTES_HASHED`, hash the bytes from there to
//!    `FileSize - CertificateTable.Size` (the attribute certificate table is at the end).
//!
//! This is what EDK2 (OVMF) implements in `SecurityPkg/Library/DxeTpm2MeasureBootLib`
//! (`Tcg2MeasurePeImage` → `MeasurePeImageAndExtend`): when `NumberOfRvaAndSizes` is too
//! small to hold a Certificate Table entry, nothing is skipped in step 2 and the
//! certificate size is taken as 0. EDK2 does not pad the trailing data; systemd's
//! `pe_hash()` (`src/shared/pe-binary.c`) and sbsigntool pad it with zeros to a multiple
//! of 8 bytes, which only differs for files whose size is not a multiple of 8 and that
//! have data after the last section — see [`TrailingPadding`].

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::pe::PeLayout;
use sha2::{Digest as _, Sha256};

/// How to treat trailing data whose length is not a multiple of 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrailingPadding {
    /// Hash the bytes as they are (EDK2/OVMF, which measures PCR 4).
    #[default]
    None,
    /// Append zeros up to a multiple of 8 (systemd `pe_hash`, sbsigntool).
    ToMultipleOf8,
}

/// The Authenticode SHA-256 of the PE image `bytes` (EDK2 flavour).
pub fn authenticode_sha256(input: &str, bytes: &[u8]) -> Result<Digest> {
    let layout = PeLayout::parse(input, bytes)?;
    authenticode_sha256_with(input, bytes, &layout, TrailingPadding::None)
}

/// The Authenticode SHA-256 of `bytes` whose layout was already parsed.
pub fn authenticode_sha256_with(
    input: &str,
    bytes: &[u8],
    pe: &PeLayout,
    padding: TrailingPadding,
) -> Result<Digest> {
    let len = bytes.len() as u64;
    let range = |what: &str, start: u64, end: u64| -> Result<&[u8]> {
        usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .filter(|(a, b)| a <= b)
            .and_then(|(a, b)| bytes.get(a..b))
            .ok_or_else(|| {
                Error::truncated(input, format!("Authenticode: {what}"), start, end, len)
            })
    };

    let mut h = Sha256::new();
    let checksum = pe.checksum_offset as u64;
    let headers_end = u64::from(pe.size_of_headers);

    // Steps 1–3: the headers, minus CheckSum and the Certificate Table entry.
    h.update(range("headers before CheckSum", 0, checksum)?);
    let after_checksum = checksum + 4;
    match pe.cert_dir_entry_offset {
        Some(entry) => {
            let entry = entry as u64;
            h.update(range(
                "headers before the Certificate Table entry",
                after_checksum,
                entry,
            )?);
            let after_entry = entry + 8;
            if headers_end < after_entry {
                return Err(Error::bad_pe(
                    input,
                    "SizeOfHeaders ends inside the data directories",
                ));
            }
            h.update(range("rest of the headers", after_entry, headers_end)?);
        }
        None => {
            if headers_end < after_checksum {
                return Err(Error::bad_pe(
                    input,
                    "SizeOfHeaders ends inside the optional header",
                ));
            }
            h.update(range("rest of the headers", after_checksum, headers_end)?);
        }
    }

    // Step 4: sections by file offset. A stable sort keeps equal offsets in table order,
    // as EDK2's insertion sort does.
    let mut sections: Vec<_> = pe
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data != 0)
        .collect();
    sections.sort_by_key(|s| s.pointer_to_raw_data);
    let mut sum = headers_end;
    for s in sections {
        let start = u64::from(s.pointer_to_raw_data);
        let end = start + u64::from(s.size_of_raw_data);
        h.update(range(&format!("section {}", s.name), start, end)?);
        sum += u64::from(s.size_of_raw_data);
    }

    // Step 5: data after the sections, without the attribute certificate table.
    if len > sum {
        let cert_size = u64::from(pe.cert_table.1);
        let end = len
            .checked_sub(cert_size)
            .filter(|&end| end >= sum)
            .ok_or_else(|| {
                Error::bad_pe(
                    input,
                    format!(
                        "certificate table ({cert_size} bytes) does not fit after the sections"
                    ),
                )
            })?;
        h.update(range("trailing data", sum, end)?);
        if padding == TrailingPadding::ToMultipleOf8 && len % 8 != 0 {
            h.update(&[0u8; 8][..(8 - (len % 8)) as usize]);
        }
    }
    Ok(Digest(h.finalize().into()))
}

//! GUID Partition Table reading, per UEFI Specification 2.10 §5.2–5.3: a protective MBR
//! in LBA 0 (one partition of type 0xEE), the GPT header in LBA 1 ("EFI PART", CRC32 over
//! `HeaderSize` bytes with the CRC field zeroed), and the partition entry array at
//! `PartitionEntryLBA` (CRC32 over `NumberOfPartitionEntries * SizeOfPartitionEntry`
//! bytes). If the primary header or its array is damaged, the backup header in the last
//! LBA is used, as firmware does (§5.3.2). 512-byte logical blocks only.

use crate::error::{Error, Result};
use std::fmt;
use std::io::{Read, Seek, SeekFrom};

/// Logical block size this crate supports.
pub const SECTOR: u64 = 512;

/// Partition entry arrays larger than this are refused (the usual one is 16 KiB).
const MAX_ENTRY_ARRAY: u64 = 4 << 20;

/// A GUID in its on-disk (mixed-endian) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The EFI System Partition type, C12A7328-F81F-11D2-BA4B-00A0C93EC93B.
    pub const ESP: Guid = Guid([
        0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9,
        0x3b,
    ]);

    /// Parses the textual form (`8-4-4-4-12` hex digits).
    pub fn parse(s: &str) -> Option<Guid> {
        let hexs: String = s.chars().filter(|c| *c != '-').collect();
        let mut b = [0u8; 16];
        hex::decode_to_slice(hexs, &mut b).ok()?;
        // The first three fields are little-endian on disk.
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        Some(Guid(b))
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for x in &b[10..] {
            write!(f, "{x:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub index: u32,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub name: String,
}

impl Partition {
    /// Byte offset of the partition on the disk.
    pub fn offset(&self) -> u64 {
        self.first_lba.saturating_mul(SECTOR)
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.last_lba
            .saturating_sub(self.first_lba)
            .saturating_add(1)
            .saturating_mul(SECTOR)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The partition table of a disk.
#[derive(Debug, Clone)]
pub struct Gpt {
    pub disk_guid: Guid,
    pub partitions: Vec<Partition>,
    /// True when the primary header was damaged and the backup was used.
    pub used_backup: bool,
}

impl Gpt {
    /// The first EFI System Partition.
    pub fn esp(&self) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.type_guid == Guid::ESP)
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}
fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}
fn guid_at(b: &[u8], at: usize) -> Guid {
    let mut g = [0u8; 16];
    if let Some(s) = b.get(at..at + 16) {
        g.copy_from_slice(s);
    }
    Guid(g)
}

pub(crate) fn read_at<R: Read + Seek>(
    input: &str,
    r: &mut R,
    disk_len: u64,
    what: &str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>> {
    let end = offset
        .checked_add(len)
        .filter(|&e| e <= disk_len)
        .ok_or_else(|| {
            Error::truncated(input, what, offset, offset.saturating_add(len), disk_len)
        })?;
    let n =
        usize::try_from(len).map_err(|_| Error::truncated(input, what, offset, end, disk_len))?;
    let mut buf = vec![0u8; n];
    r.seek(SeekFrom::Start(offset))
        .and_then(|_| r.read_exact(&mut buf))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                Error::truncated(input, what, offset, end, disk_len)
            }
            _ => Error::io(input, e),
        })?;
    Ok(buf)
}

/// Reads and checks the GPT of a disk of `disk_len` bytes.
pub fn read_gpt<R: Read + Seek>(input: &str, r: &mut R, disk_len: u64) -> Result<Gpt> {
    let no_gpt = |reason: &str| Error::NoGpt {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    if disk_len < 3 * SECTOR {
        return Err(no_gpt(&format!("the disk has only {disk_len} bytes")));
    }
    let mbr = read_at(input, r, disk_len, "protective MBR", 0, SECTOR)?;
    if mbr.get(510..512) != Some(&[0x55, 0xaa][..]) {
        return Err(no_gpt("LBA 0 has no MBR boot signature 55 AA"));
    }
    // Four MBR partition records from offset 446, 16 bytes each, OSType at +4.
    let protective = (0..4).any(|i| mbr.get(446 + i * 16 + 4) == Some(&0xee));
    if !protective {
        return Err(no_gpt("the MBR has no protective partition of type 0xEE"));
    }

    let last_lba = disk_len / SECTOR - 1;
    match read_header(input, r, disk_len, 1, "primary GPT header") {
        Ok(gpt) => Ok(gpt),
        Err(primary) => {
            // §5.3.2: if the primary is corrupt, software must check the backup.
            match read_header(input, r, disk_len, last_lba, "backup GPT header") {
                Ok(mut gpt) => {
                    gpt.used_backup = true;
                    Ok(gpt)
                }
                Err(_) => Err(primary),
            }
        }
    }
}

fn read_header<R: Read + Seek>(
    input: &str,
    r: &mut R,
    disk_len: u64,
    lba: u64,
    what: &str,
) -> Result<Gpt> {
    let hdr = read_at(input, r, disk_len, what, lba * SECTOR, SECTOR)?;
    if hdr.get(0..8) != Some(&b"EFI PART"[..]) {
        return Err(Error::NoGpt {
            input: input.to_owned(),
            reason: format!("no \"EFI PART\" signature in the {what} at LBA {lba}"),
        });
    }
    let header_size = le32(&hdr, 12) as usize;
    if !(92..=SECTOR as usize).contains(&header_size) {
        return Err(Error::NoGpt {
            input: input.to_owned(),
            reason: format!("{what} has an invalid HeaderSize {header_size}"),
        });
    }
    let stored = le32(&hdr, 16);
    let mut zeroed = hdr.get(..header_size).unwrap_or_default().to_vec();
    zeroed
        .get_mut(16..20)
        .into_iter()
        .flatten()
        .for_each(|b| *b = 0);
    let computed = crc32fast::hash(&zeroed);
    if stored != computed {
        return Err(Error::BadGptCrc {
            input: input.to_owned(),
            what: what.to_owned(),
            stored,
            computed,
        });
    }
    let my_lba = le64(&hdr, 24);
    if my_lba != lba {
        return Err(Error::NoGpt {
            input: input.to_owned(),
            reason: format!("{what} says it is at LBA {my_lba}, found at LBA {lba}"),
        });
    }
    let disk_guid = guid_at(&hdr, 56);
    let entries_lba = le64(&hdr, 72);
    let n_entries = u64::from(le32(&hdr, 80));
    let entry_size = u64::from(le32(&hdr, 84));
    let entries_crc = le32(&hdr, 88);
    // §5.3.2: SizeOfPartitionEntry is 128 * 2^n.
    if entry_size < 128 || !entry_size.is_power_of_two() {
        return Err(Error::NoGpt {
            input: input.to_owned(),
            reason: format!("{what} has an invalid SizeOfPartitionEntry {entry_size}"),
        });
    }
    let array_len = n_entries * entry_size;
    if array_len > MAX_ENTRY_ARRAY {
        return Err(Error::NoGpt {
            input: input.to_owned(),
            reason: format!("{what} declares a {array_len}-byte partition entry array"),
        });
    }
    let array_what = format!("partition entry array of the {what}");
    let array = read_at(
        input,
        r,
        disk_len,
        &array_what,
        entries_lba.saturating_mul(SECTOR),
        array_len,
    )?;
    let computed = crc32fast::hash(&array);
    if computed != entries_crc {
        return Err(Error::BadGptCrc {
            input: input.to_owned(),
            what: array_what,
            stored: entries_crc,
            computed,
        });
    }
    let mut partitions = Vec::new();
    for (i, e) in array.chunks_exact(entry_size as usize).enumerate() {
        let type_guid = guid_at(e, 0);
        if type_guid.is_zero() {
            continue;
        }
        let units: Vec<u16> = (0..36)
            .map(|k| le16(e, 56 + 2 * k))
            .take_while(|&c| c != 0)
            .collect();
        partitions.push(Partition {
            index: i as u32,
            type_guid,
            unique_guid: guid_at(e, 16),
            first_lba: le64(e, 32),
            last_lba: le64(e, 40),
            name: String::from_utf16_lossy(&units),
        });
    }
    Ok(Gpt {
        disk_guid,
        partitions,
        used_backup: false,
    })
}

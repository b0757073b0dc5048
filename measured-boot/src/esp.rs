//! Reading one file from the EFI System Partition's FAT file system with the `fatfs`
//! crate, through a read-only window onto the partition, so only the FAT, the directories
//! on the path and the file's clusters are read.
//!
//! `fatfs` 0.3 indexes slices with values from the boot sector in a few places, so the
//! BIOS Parameter Block is checked here first (Microsoft "FAT: General Overview of On-Disk
//! Format" 1.03, "Boot Sector and BPB") and a damaged one is reported as an error instead.

use crate::error::{Error, Result};
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Where the firmware looks for the default x86-64 boot loader (UEFI 2.10 §3.5.1.1).
pub const DEFAULT_LOADER_PATH: &str = "EFI/BOOT/BOOTX64.EFI";

/// Files larger than this are not read into memory.
const MAX_FILE: u64 = 2 << 30;

/// A read-only view of `len` bytes at `start` of `inner`. Writes fail: nothing here
/// may change an image it measures.
pub struct Window<R> {
    inner: R,
    start: u64,
    len: u64,
    pos: u64,
}

impl<R: Read + Seek> Window<R> {
    pub fn new(inner: R, start: u64, len: u64) -> Self {
        Window {
            inner,
            start,
            len,
            pos: 0,
        }
    }
}

impl<R: Read + Seek> Read for Window<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<R: Read + Seek> Seek for Window<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let new =
            new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        self.pos = new;
        Ok(new)
    }
}

impl<R> Write for Window<R> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the image is opened read-only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Checks the BPB fields `fatfs` relies on, before mounting.
fn check_bpb(input: &str, boot: &[u8], part_len: u64) -> Result<()> {
    let bad = |reason: String| Error::BadFat {
        input: input.to_owned(),
        reason,
    };
    let u16_at = |at: usize| {
        boot.get(at..at + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        boot.get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if boot.get(510..512) != Some(&[0x55, 0xaa][..]) {
        return Err(bad("no boot sector signature 55 AA".into()));
    }
    let bytes_per_sector = u16_at(11);
    if !(512..=4096).contains(&bytes_per_sector) || !bytes_per_sector.is_power_of_two() {
        return Err(bad(format!("BytesPerSector is {bytes_per_sector}")));
    }
    let spc = boot.get(13).copied().unwrap_or(0);
    if spc == 0 || !spc.is_power_of_two() {
        return Err(bad(format!("SectorsPerCluster is {spc}")));
    }
    if u32::from(bytes_per_sector) * u32::from(spc) > 32 * 1024 {
        return Err(bad("clusters larger than 32 KiB".into()));
    }
    if u16_at(14) == 0 {
        return Err(bad("ReservedSectorCount is 0".into()));
    }
    let n_fats = boot.get(16).copied().unwrap_or(0);
    if n_fats == 0 {
        return Err(bad("NumFATs is 0".into()));
    }
    let total16 = u16_at(19);
    let total32 = u32_at(32);
    let total = if total16 != 0 {
        u32::from(total16)
    } else {
        total32
    };
    if total == 0 {
        return Err(bad("the volume has 0 sectors".into()));
    }
    if u64::from(total) * u64::from(bytes_per_sector) > part_len {
        return Err(bad(format!(
            "the volume ({total} sectors) is larger than its partition ({part_len} bytes)"
        )));
    }
    let fat16 = u16_at(22);
    let fat32 = u32_at(36);
    if fat16 == 0 && fat32 == 0 {
        return Err(bad("FATSz is 0".into()));
    }
    let root_entries = u32::from(u16_at(17));
    let root_sectors = (root_entries * 32).div_ceil(u32::from(bytes_per_sector));
    let fat_size = if fat16 != 0 { u32::from(fat16) } else { fat32 };
    let meta =
        u64::from(u16_at(14)) + u64::from(n_fats) * u64::from(fat_size) + u64::from(root_sectors);
    if meta >= u64::from(total) {
        return Err(bad(
            "the FATs and root directory fill the whole volume".into()
        ));
    }
    Ok(())
}

/// Reads `path` (components separated by `/`, compared case-insensitively as FAT does)
/// from the FAT file system in `part_len` bytes at `part_offset` of `disk`.
pub fn read_file<R: Read + Seek>(
    input: &str,
    disk: R,
    part_offset: u64,
    part_len: u64,
    path: &str,
) -> Result<Vec<u8>> {
    let mut window = Window::new(disk, part_offset, part_len);
    let mut boot = vec![0u8; 512];
    window.read_exact(&mut boot).map_err(|e| Error::BadFat {
        input: input.to_owned(),
        reason: format!("cannot read the boot sector: {e}"),
    })?;
    check_bpb(input, &boot, part_len)?;
    window
        .seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(input, e))?;

    // fatfs does cluster arithmetic on values from the disk; where they are
    // inconsistent (a directory entry naming cluster 0 or 1) its debug builds panic on
    // an overflow. That is a malformed ESP, and said as one. (Release builds have no
    // overflow checks: there the value wraps to an offset outside the partition, which
    // the window refuses to read.)
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_with_fatfs(input, window, part_len, path)
    }))
    .unwrap_or_else(|_| {
        Err(Error::BadFat {
            input: input.to_owned(),
            reason: "its cluster numbers are inconsistent (the FAT reader stopped on them)".into(),
        })
    })
}

fn read_with_fatfs<R: Read + Seek>(
    input: &str,
    window: Window<R>,
    part_len: u64,
    path: &str,
) -> Result<Vec<u8>> {
    let fat_err = |what: &str, e: io::Error| Error::BadFat {
        input: input.to_owned(),
        reason: format!("{what}: {e}"),
    };
    let fs = fatfs::FileSystem::new(window, fatfs::FsOptions::new())
        .map_err(|e| fat_err("cannot mount", e))?;
    let not_found = || Error::NoUkiOnEsp {
        input: input.to_owned(),
        path: path.to_owned(),
    };

    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let (file_name, dirs) = components.split_last().ok_or_else(not_found)?;
    let mut dir = fs.root_dir();
    for want in dirs {
        let mut next = None;
        for entry in dir.iter() {
            let entry = entry.map_err(|e| fat_err("cannot read a directory", e))?;
            if entry.is_dir() && entry.file_name().eq_ignore_ascii_case(want) {
                next = Some(entry.to_dir());
                break;
            }
        }
        dir = next.ok_or_else(not_found)?;
    }
    for entry in dir.iter() {
        let entry = entry.map_err(|e| fat_err("cannot read a directory", e))?;
        if entry.is_file() && entry.file_name().eq_ignore_ascii_case(file_name) {
            let len = entry.len();
            if len > MAX_FILE || len > part_len {
                return Err(fat_err(
                    path,
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("implausible size {len}"),
                    ),
                ));
            }
            let mut data = Vec::with_capacity(len as usize);
            entry
                .to_file()
                .take(len)
                .read_to_end(&mut data)
                .map_err(|e| fat_err(&format!("cannot read {path}"), e))?;
            if data.len() as u64 != len {
                return Err(fat_err(
                    path,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("cluster chain ends after {} of {len} bytes", data.len()),
                    ),
                ));
            }
            return Ok(data);
        }
    }
    Err(not_found())
}

//! Opening what `veil measure` is given: a raw disk image, a fixed VHD (a raw image with a
//! 512-byte "conectix" footer), or a UKI itself. From a disk image only the GPT, the
//! ESP's FAT metadata and the UKI's clusters are read, so time and memory do not grow
//! with the image size (8 GiB sparse images are usual).

use crate::error::{Error, Result};
use crate::esp::{self, DEFAULT_LOADER_PATH};
use crate::gpt::{self, Gpt, Partition};
use crate::uki::Uki;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The container the UKI was found in.
#[derive(Debug, Clone)]
pub enum Source {
    /// The input was a UKI (PE) file.
    Uki,
    /// The input was a disk image; the UKI came from the ESP.
    Disk {
        /// Whether a fixed-VHD footer was stripped.
        vhd: bool,
        /// Length of the disk (without any VHD footer).
        disk_len: u64,
        /// The ESP the UKI was read from.
        esp: Partition,
        /// The path of the UKI on the ESP.
        path: String,
        gpt: Gpt,
    },
}

/// An opened image and the UKI it boots.
#[derive(Debug, Clone)]
pub struct Image {
    pub source: Source,
    pub uki: Uki,
}

const QCOW_MAGIC: &[u8] = b"QFI\xfb";
const VHD_COOKIE: &[u8] = b"conectix";
/// A UKI given directly is read into memory; refuse absurd sizes.
const MAX_UKI: u64 = 2 << 30;

impl Image {
    /// Opens a disk image or a UKI file.
    pub fn open(path: impl AsRef<Path>) -> Result<Image> {
        let path = path.as_ref();
        let input = path.display().to_string();
        let mut f = File::open(path).map_err(|e| Error::io(&input, e))?;
        let len = f.metadata().map_err(|e| Error::io(&input, e))?.len();
        Image::from_reader(&input, &mut f, len)
    }

    /// Opens a disk image or UKI of `len` bytes from any reader (tests and fuzzing use a
    /// `Cursor`). `input` names it in errors.
    pub fn from_reader<R: Read + Seek>(input: &str, r: &mut R, len: u64) -> Result<Image> {
        let mut head = [0u8; 8];
        let got = read_prefix(input, r, 0, &mut head)?;
        let head = head.get(..got).unwrap_or_default();
        if head.starts_with(b"MZ") {
            if len > MAX_UKI {
                return Err(Error::NotAnImage {
                    input: input.to_owned(),
                    reason: format!("a {len}-byte PE file is too large for a UKI"),
                });
            }
            let bytes = gpt::read_at(input, r, len, "UKI", 0, len)?;
            let uki = Uki::parse_named(input, bytes)?;
            return Ok(Image {
                source: Source::Uki,
                uki,
            });
        }
        if head.starts_with(QCOW_MAGIC) {
            return Err(Error::Unsupported {
                input: input.to_owned(),
                reason: "qcow2; convert it with `qemu-img convert -O raw`".into(),
            });
        }
        if head.starts_with(VHD_COOKIE) {
            return Err(Error::Unsupported {
                input: input.to_owned(),
                reason: "dynamic VHD (footer copy at the start); only fixed VHDs are read".into(),
            });
        }
        let mut disk_len = len;
        let mut vhd = false;
        if len >= 512 && len % 512 == 0 {
            let mut footer = [0u8; 8];
            read_prefix(input, r, len - 512, &mut footer)?;
            if footer == VHD_COOKIE {
                disk_len = len - 512;
                vhd = true;
            }
        }
        let mut mbr = [0u8; 512];
        let got = if disk_len >= 512 {
            read_prefix(input, r, 0, &mut mbr)?
        } else {
            0
        };
        if got < 512 || mbr[510..512] != [0x55, 0xaa] {
            return Err(Error::NotAnImage {
                input: input.to_owned(),
                reason: "neither a PE file (MZ) nor a disk image (no MBR boot signature)".into(),
            });
        }
        let gpt = gpt::read_gpt(input, r, disk_len)?;
        let esp = gpt.esp().cloned().ok_or_else(|| Error::NoEsp {
            input: input.to_owned(),
        })?;
        let end = esp.offset().saturating_add(esp.len());
        if esp.last_lba < esp.first_lba || end > disk_len {
            return Err(Error::truncated(
                input,
                "the ESP",
                esp.offset(),
                end,
                disk_len,
            ));
        }
        let bytes = esp::read_file(input, &mut *r, esp.offset(), esp.len(), DEFAULT_LOADER_PATH)?;
        let uki = Uki::parse_named(format!("{input}: ESP {DEFAULT_LOADER_PATH}"), bytes)?;
        Ok(Image {
            source: Source::Disk {
                vhd,
                disk_len,
                esp,
                path: DEFAULT_LOADER_PATH.to_owned(),
                gpt,
            },
            uki,
        })
    }
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many were there.
fn read_prefix<R: Read + Seek>(
    input: &str,
    r: &mut R,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize> {
    r.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(input, e))?;
    let mut got = 0;
    while got < buf.len() {
        let n = r
            .read(buf.get_mut(got..).unwrap_or_default())
            .map_err(|e| Error::io(input, e))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

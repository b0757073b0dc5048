//! Builders for small synthetic PE files, UKIs, FAT file systems and GPT disks, for
//! tests (here and in other crates, through the `test-support` feature). They write the
//! formats from their specifications, independently of the readers in this crate.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::gpt::Guid;
use std::io::{Cursor, Write};

const FILE_ALIGN: u32 = 0x200;
const SECTION_ALIGN: u32 = 0x1000;

fn align(v: u32, a: u32) -> u32 {
    v.div_ceil(a) * a
}

/// One section to put into a PE file.
#[derive(Debug, Clone)]
pub struct PeSection {
    pub name: String,
    pub data: Vec<u8>,
    /// VirtualSize; defaults to the data length.
    pub virtual_size: Option<u32>,
}

/// Writes a PE32+ x86-64 EFI application (Microsoft "PE Format").
#[derive(Debug, Clone, Default)]
pub struct PeBuilder {
    pub sections: Vec<PeSection>,
    /// Bytes after the last section (not in any section).
    pub trailing: Vec<u8>,
    /// An attribute certificate table to append (its bytes are not checked).
    pub certificate: Option<Vec<u8>>,
    /// Number of data directories (16 by default).
    pub data_directories: Option<u32>,
}

impl PeBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn section(mut self, name: &str, data: &[u8]) -> Self {
        self.sections.push(PeSection {
            name: name.to_owned(),
            data: data.to_vec(),
            virtual_size: None,
        });
        self
    }

    pub fn section_with_virtual_size(mut self, name: &str, data: &[u8], virtual_size: u32) -> Self {
        self.sections.push(PeSection {
            name: name.to_owned(),
            data: data.to_vec(),
            virtual_size: Some(virtual_size),
        });
        self
    }

    pub fn trailing(mut self, data: &[u8]) -> Self {
        self.trailing = data.to_vec();
        self
    }

    pub fn certificate(mut self, data: &[u8]) -> Self {
        self.certificate = Some(data.to_vec());
        self
    }

    pub fn data_directories(mut self, n: u32) -> Self {
        self.data_directories = Some(n);
        self
    }

    /// Offset of the CheckSum field and of the Certificate Table entry in the output.
    pub const CHECKSUM_OFFSET: usize = 0x80 + 24 + 64;
    pub const CERT_ENTRY_OFFSET: usize = 0x80 + 24 + 112 + 4 * 8;

    pub fn build(&self) -> Vec<u8> {
        let n_dirs = self.data_directories.unwrap_or(16);
        let opt_size = 112 + 8 * n_dirs;
        let n = self.sections.len() as u32;
        let headers_len = 0x80 + 4 + 20 + opt_size + 40 * n;
        let size_of_headers = align(headers_len, FILE_ALIGN);

        let mut out = vec![0u8; size_of_headers as usize];
        out[0..2].copy_from_slice(b"MZ");
        out[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        out[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        out[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        out[coff + 2..coff + 4].copy_from_slice(&(n as u16).to_le_bytes());
        out[coff + 16..coff + 18].copy_from_slice(&(opt_size as u16).to_le_bytes());
        out[coff + 18..coff + 20].copy_from_slice(&0x0022u16.to_le_bytes());
        let opt = coff + 20;
        out[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        out[opt + 24..opt + 32].copy_from_slice(&0x1_0000_0000u64.to_le_bytes()); // ImageBase
        out[opt + 32..opt + 36].copy_from_slice(&SECTION_ALIGN.to_le_bytes());
        out[opt + 36..opt + 40].copy_from_slice(&FILE_ALIGN.to_le_bytes());
        out[opt + 60..opt + 64].copy_from_slice(&size_of_headers.to_le_bytes());
        // A non-zero CheckSum, which the Authenticode hash must skip.
        out[opt + 64..opt + 68].copy_from_slice(&0x5eed_c0deu32.to_le_bytes());
        out[opt + 68..opt + 70].copy_from_slice(&10u16.to_le_bytes()); // EFI application
        out[opt + 108..opt + 112].copy_from_slice(&n_dirs.to_le_bytes());

        // Sections: file data at FILE_ALIGN, memory at SECTION_ALIGN.
        let mut file_at = size_of_headers;
        let mut va = align(size_of_headers, SECTION_ALIGN);
        let mut table = Vec::new();
        let mut body = Vec::new();
        for s in &self.sections {
            let raw = align(s.data.len() as u32, FILE_ALIGN);
            let vsize = s.virtual_size.unwrap_or(s.data.len() as u32);
            let mut h = [0u8; 40];
            let name = s.name.as_bytes();
            h[..name.len().min(8)].copy_from_slice(&name[..name.len().min(8)]);
            h[8..12].copy_from_slice(&vsize.to_le_bytes());
            h[12..16].copy_from_slice(&va.to_le_bytes());
            h[16..20].copy_from_slice(&raw.to_le_bytes());
            h[20..24].copy_from_slice(&(if raw == 0 { 0 } else { file_at }).to_le_bytes());
            h[36..40].copy_from_slice(&0x4000_0040u32.to_le_bytes()); // initialised, readable
            table.extend_from_slice(&h);
            let mut data = s.data.clone();
            data.resize(raw as usize, 0);
            body.extend_from_slice(&data);
            file_at += raw;
            va += align(vsize.max(1), SECTION_ALIGN);
        }
        let sect_at = opt + opt_size as usize;
        out[sect_at..sect_at + table.len()].copy_from_slice(&table);
        out[opt + 56..opt + 60].copy_from_slice(&va.to_le_bytes()); // SizeOfImage
        out.extend_from_slice(&body);
        out.extend_from_slice(&self.trailing);
        if let Some(cert) = &self.certificate {
            while out.len() % 8 != 0 {
                out.push(0);
            }
            let at = out.len() as u32;
            out.extend_from_slice(cert);
            if n_dirs > 4 {
                let e = opt + 112 + 32;
                out[e..e + 4].copy_from_slice(&at.to_le_bytes());
                out[e + 4..e + 8].copy_from_slice(&(cert.len() as u32).to_le_bytes());
            }
        }
        out
    }
}

/// A small PE standing in for the kernel.
pub fn sample_kernel() -> Vec<u8> {
    PeBuilder::new()
        .section(".text", &[0x90; 1000])
        .section(".data", b"kernel data")
        .build()
}

/// A root hash for tests.
pub const SAMPLE_ROOTHASH: &str =
    "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// The sections of a typical Veil UKI (without `.linux`).
pub fn sample_uki_sections() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            ".osrel",
            b"ID=debian\nVERSION_ID=\"13\"\nPRETTY_NAME=\"Veil (Debian 13)\"\nIMAGE_ID=veil\n"
                .to_vec(),
        ),
        (
            ".cmdline",
            format!(
                "console=ttyS0 roothash={SAMPLE_ROOTHASH} systemd.default_device_timeout_sec=600\n"
            )
            .into_bytes(),
        ),
        (".initrd", (0..5000u32).map(|i| (i % 251) as u8).collect()),
        (".uname", b"6.12.48+deb13-cloud-amd64".to_vec()),
        (
            ".sbat",
            b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n"
                .to_vec(),
        ),
    ]
}

/// A UKI: a stub-like `.text`, then `.linux` and `sections` in the given order.
pub fn build_uki(kernel: &[u8], sections: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = PeBuilder::new().section(".text", &[0xcc; 700]);
    for (name, data) in sections {
        b = b.section(name, data);
    }
    b.section(".linux", kernel).build()
}

/// The sample UKI.
pub fn sample_uki() -> Vec<u8> {
    build_uki(&sample_kernel(), &sample_uki_sections())
}

/// A FAT file system (formatted by `fatfs`) holding `files` (paths with `/`).
pub fn fat_image(files: &[(&str, &[u8])]) -> Vec<u8> {
    let total: usize = files.iter().map(|(_, d)| d.len()).sum();
    fat_image_sized(files, total * 2 + (4 << 20))
}

/// Like [`fat_image`], with the volume size given (small ones make fuzzing seeds).
pub fn fat_image_sized(files: &[(&str, &[u8])], size: usize) -> Vec<u8> {
    let size = size.div_ceil(512) * 512;
    let mut disk = Cursor::new(vec![0u8; size]);
    fatfs::format_volume(&mut disk, fatfs::FormatVolumeOptions::new()).unwrap();
    disk.set_position(0);
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).unwrap();
        for (path, data) in files {
            let parts: Vec<&str> = path.split('/').collect();
            let (file, dirs) = parts.split_last().unwrap();
            let mut dir = fs.root_dir();
            for d in dirs {
                dir = match dir.open_dir(d) {
                    Ok(x) => x,
                    Err(_) => dir.create_dir(d).unwrap(),
                };
            }
            let mut f = dir.create_file(file).unwrap();
            f.truncate().unwrap();
            f.write_all(data).unwrap();
        }
    }
    disk.into_inner()
}

fn guid_bytes(s: &str) -> [u8; 16] {
    Guid::parse(s).unwrap().0
}

/// The Linux root (x86-64) partition type, for a second partition in test disks.
pub const ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";

/// A GPT disk (UEFI 2.10 §5.3) with the given (type GUID, name, contents) partitions,
/// 1 MiB aligned, with primary and backup headers.
pub fn gpt_disk(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    const S: usize = 512;
    let mut layout = Vec::new();
    let mut lba = 2048usize;
    for (_, _, data) in parts {
        let sectors = data.len().div_ceil(S).max(1);
        layout.push((lba, lba + sectors - 1));
        lba = (lba + sectors).div_ceil(2048) * 2048;
    }
    let last_lba = lba + 33;
    let mut disk = vec![0u8; (last_lba + 1) * S];

    // Protective MBR: one partition of type 0xEE covering the disk.
    let p = 446;
    disk[p + 4] = 0xee;
    disk[p + 8..p + 12].copy_from_slice(&1u32.to_le_bytes());
    disk[p + 12..p + 16].copy_from_slice(&(last_lba.min(u32::MAX as usize) as u32).to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xaa;

    let mut entries = vec![0u8; 128 * 128];
    for (i, ((ty, name, data), (first, last))) in parts.iter().zip(&layout).enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[0..16].copy_from_slice(&guid_bytes(ty));
        let mut unique = [0u8; 16];
        unique[0] = i as u8 + 1;
        unique[15] = 0x42;
        e[16..32].copy_from_slice(&unique);
        e[32..40].copy_from_slice(&(*first as u64).to_le_bytes());
        e[40..48].copy_from_slice(&(*last as u64).to_le_bytes());
        for (k, u) in name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * k..58 + 2 * k].copy_from_slice(&u.to_le_bytes());
        }
        disk[first * S..first * S + data.len()].copy_from_slice(data);
    }
    let entries_crc = crc32fast::hash(&entries);

    let header = |my: usize, alt: usize, entries_at: usize| {
        let mut h = vec![0u8; 92];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&(my as u64).to_le_bytes());
        h[32..40].copy_from_slice(&(alt as u64).to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&((last_lba - 33) as u64).to_le_bytes());
        h[56..72].copy_from_slice(&[0x11; 16]);
        h[72..80].copy_from_slice(&(entries_at as u64).to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let primary = header(1, last_lba, 2);
    let backup = header(last_lba, 1, last_lba - 32);
    disk[S..S + 92].copy_from_slice(&primary);
    disk[2 * S..2 * S + entries.len()].copy_from_slice(&entries);
    let b_entries = (last_lba - 32) * S;
    disk[b_entries..b_entries + entries.len()].copy_from_slice(&entries);
    disk[last_lba * S..last_lba * S + 92].copy_from_slice(&backup);
    disk
}

/// A whole Veil-like disk: an ESP holding `uki` as `EFI/BOOT/BOOTX64.EFI` and a root
/// partition.
pub fn disk_with_uki(uki: &[u8]) -> Vec<u8> {
    let esp = fat_image(&[
        ("EFI/BOOT/BOOTX64.EFI", uki),
        ("loader/random-seed", &[7; 32]),
    ]);
    gpt_disk(&[
        (&Guid::ESP.to_string(), "esp", &esp),
        (ROOT_X86_64, "root-x86-64", &[0xab; 4096]),
    ])
}

/// Appends a fixed-VHD footer (only the cookie matters to the reader).
pub fn to_fixed_vhd(mut disk: Vec<u8>) -> Vec<u8> {
    let mut footer = vec![0u8; 512];
    footer[..8].copy_from_slice(b"conectix");
    disk.extend_from_slice(&footer);
    disk
}

/// One record for [`tcg_log`].
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub pcr: u32,
    pub event_type: u32,
    pub sha256: crate::Digest,
    pub data: Vec<u8>,
}

/// A crypto-agile TCG event log (PFP 1.05 §10.2) with SHA-1 and SHA-256 banks, starting
/// with the Spec ID event and a StartupLocality event (locality 0).
pub fn tcg_log(records: &[LogRecord]) -> Vec<u8> {
    let mut spec = Vec::new();
    spec.extend_from_slice(b"Spec ID Event03\0");
    spec.extend_from_slice(&0u32.to_le_bytes()); // platform class
    spec.extend_from_slice(&[0, 2, 0, 2]); // version 2.0, errata 0, uintn size 2
    spec.extend_from_slice(&2u32.to_le_bytes());
    spec.extend_from_slice(&0x0004u16.to_le_bytes());
    spec.extend_from_slice(&20u16.to_le_bytes());
    spec.extend_from_slice(&0x000bu16.to_le_bytes());
    spec.extend_from_slice(&32u16.to_le_bytes());
    spec.push(0); // vendor info size

    let mut out = Vec::new();
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&3u32.to_le_bytes()); // EV_NO_ACTION
    out.extend_from_slice(&[0; 20]);
    out.extend_from_slice(&(spec.len() as u32).to_le_bytes());
    out.extend_from_slice(&spec);

    let mut event2 = |pcr: u32, ty: u32, sha256: [u8; 32], data: &[u8]| {
        out.extend_from_slice(&pcr.to_le_bytes());
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&0x0004u16.to_le_bytes());
        out.extend_from_slice(&[0x11; 20]);
        out.extend_from_slice(&0x000bu16.to_le_bytes());
        out.extend_from_slice(&sha256);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    };
    let mut locality = b"StartupLocality\0".to_vec();
    locality.push(0);
    event2(0, 3, [0; 32], &locality);
    for r in records {
        event2(r.pcr, r.event_type, r.sha256.0, &r.data);
    }
    out
}

fn utf16z(s: &str) -> Vec<u8> {
    let mut v: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
    v.extend_from_slice(&[0, 0]);
    v
}

/// The firmware log a node booted from the UKI would have for PCR 4, 9 and 11 (with
/// event data shaped as OVMF, systemd-stub and Linux write it), and a PCR 0 event.
pub fn firmware_log_for(expected: &crate::ExpectedPcrs) -> Vec<u8> {
    use crate::pcr::Component;
    let mut records = vec![LogRecord {
        pcr: 0,
        event_type: 0x8000_0008, // EV_EFI_PLATFORM_FIRMWARE_BLOB
        sha256: crate::Digest::of(b"OVMF"),
        data: vec![0; 16],
    }];
    for m in &expected.events {
        let data = match &m.component {
            Component::BootAttempt => b"Calling EFI Application from Boot Option".to_vec(),
            Component::Separator => vec![0; 4],
            Component::UkiImage | Component::KernelImage => vec![0; 32],
            Component::SectionName(s) | Component::SectionData(s) => utf16z(s.name()),
            Component::LoadOptions => tagged(0x8F3B_22ED, b"LOADED_IMAGE::LoadOptions\0"),
            Component::Initrd => tagged(0x8F3B_22EC, b"Linux initrd\0"),
            Component::Phase(_) => continue, // userspace
        };
        records.push(LogRecord {
            pcr: m.pcr,
            event_type: m.event_type,
            sha256: m.digest,
            data,
        });
    }
    tcg_log(&records)
}

fn tagged(id: u32, data: &[u8]) -> Vec<u8> {
    let mut v = id.to_le_bytes().to_vec();
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// systemd's userspace log (JSON-SEQ) with the boot phases of `expected`.
pub fn userspace_log_for(expected: &crate::ExpectedPcrs) -> Vec<u8> {
    use crate::pcr::Component;
    let mut out = Vec::new();
    for m in &expected.events {
        if let Component::Phase(p) = &m.component {
            out.push(0x1e);
            let rec = serde_json::json!({
                "pcr": m.pcr,
                "digests": [{"hashAlg": "sha256", "digest": m.digest.to_hex()}],
                "content_type": "systemd",
                "content": {"string": p, "eventType": "phase"},
            });
            out.extend_from_slice(rec.to_string().as_bytes());
            out.push(b'\n');
        }
    }
    out
}

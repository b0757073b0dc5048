//! Reading UKIs out of disk images, and every way an input can be wrong.
#![allow(clippy::unwrap_used)]

use measured_boot::gpt::Guid;
use measured_boot::image::Source;
use measured_boot::testing::{
    PeBuilder, ROOT_X86_64, disk_with_uki, fat_image, gpt_disk, sample_kernel, sample_uki,
    to_fixed_vhd,
};
use measured_boot::{Error, Image};
use std::io::Cursor;

fn open(bytes: &[u8]) -> Result<Image, Error> {
    Image::from_reader("test.img", &mut Cursor::new(bytes), bytes.len() as u64)
}

fn open_file(bytes: &[u8]) -> Result<Image, Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    std::fs::write(&path, bytes).unwrap();
    Image::open(&path)
}

#[test]
fn raw_disk_yields_the_uki_from_the_esp() {
    let uki = sample_uki();
    let image = open_file(&disk_with_uki(&uki)).unwrap();
    assert_eq!(image.uki.bytes(), &uki[..]);
    match &image.source {
        Source::Disk { vhd, esp, path, .. } => {
            assert!(!vhd);
            assert_eq!(esp.type_guid, Guid::ESP);
            assert_eq!(esp.name, "esp");
            assert_eq!(path, "EFI/BOOT/BOOTX64.EFI");
        }
        s => panic!("unexpected source {s:?}"),
    }
}

#[test]
fn fixed_vhd_is_read_like_raw() {
    let uki = sample_uki();
    let image = open(&to_fixed_vhd(disk_with_uki(&uki))).unwrap();
    assert_eq!(image.uki.bytes(), &uki[..]);
    assert!(matches!(image.source, Source::Disk { vhd: true, .. }));
}

#[test]
fn a_uki_file_is_accepted_directly() {
    let uki = sample_uki();
    let image = open_file(&uki).unwrap();
    assert!(matches!(image.source, Source::Uki));
    assert_eq!(image.uki.bytes(), &uki[..]);
}

#[test]
fn file_names_on_the_esp_are_case_insensitive() {
    let uki = sample_uki();
    let esp = fat_image(&[("efi/Boot/bootx64.efi", &uki)]);
    let disk = gpt_disk(&[(&Guid::ESP.to_string(), "ESP", &esp)]);
    assert_eq!(open(&disk).unwrap().uki.bytes(), &uki[..]);
}

#[test]
fn damaged_primary_gpt_falls_back_to_the_backup() {
    let uki = sample_uki();
    let mut disk = disk_with_uki(&uki);
    disk[512 + 40] ^= 0xff; // primary header FirstUsableLBA: CRC no longer matches
    let image = open(&disk).unwrap();
    assert!(matches!(image.source, Source::Disk { ref gpt, .. } if gpt.used_backup));
}

#[test]
fn sparse_file_reads_only_what_it_needs() {
    // The disk at the start of a 4 GiB sparse file (its backup GPT is then not at the
    // end, which only matters when the primary is damaged): reading must not touch,
    // or allocate, the whole file.
    let uki = sample_uki();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.raw");
    std::fs::write(&path, disk_with_uki(&uki)).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(4 << 30).unwrap();
    let start = std::time::Instant::now();
    let image = Image::open(&path).unwrap();
    assert_eq!(image.uki.bytes(), &uki[..]);
    assert!(start.elapsed().as_secs() < 5);
}

fn err_of(bytes: &[u8]) -> String {
    let e = open(bytes).unwrap_err();
    e.to_string()
}

#[test]
fn not_an_image() {
    let msg = err_of(&[b'x'; 4096]);
    assert!(
        msg.starts_with("test.img: not a disk image or a UKI"),
        "{msg}"
    );
    let msg = err_of(b"tiny");
    assert!(msg.contains("not a disk image or a UKI"), "{msg}");
}

#[test]
fn qcow2_is_unsupported() {
    let mut q = b"QFI\xfb\0\0\0\x03".to_vec();
    q.resize(4096, 0);
    assert!(err_of(&q).contains("unsupported image format: qcow2"));
}

#[test]
fn truncated_image() {
    let disk = disk_with_uki(&sample_uki());
    // Keep the GPT but cut inside the ESP.
    let e = open(&disk[..3 << 20]).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("the ESP"), "{e}");
}

#[test]
fn mbr_without_gpt() {
    let mut disk = vec![0u8; 1 << 20];
    disk[446 + 4] = 0x83; // a Linux MBR partition, not protective
    disk[510] = 0x55;
    disk[511] = 0xaa;
    let msg = err_of(&disk);
    assert!(
        msg.contains("no GPT: the MBR has no protective partition"),
        "{msg}"
    );
}

#[test]
fn bad_gpt_crc() {
    let mut disk = disk_with_uki(&sample_uki());
    let len = disk.len();
    disk[512 + 40] ^= 0xff; // primary header
    disk[len - 512 + 40] ^= 0xff; // backup header
    let e = open(&disk).unwrap_err();
    assert!(matches!(e, Error::BadGptCrc { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("bad GPT CRC32 in the primary GPT header"),
        "{e}"
    );

    let mut disk = disk_with_uki(&sample_uki());
    disk[2 * 512 + 60] ^= 1; // primary partition entry array
    disk[len - 33 * 512 + 60] ^= 1; // backup array
    let msg = err_of(&disk);
    assert!(
        msg.contains("bad GPT CRC32 in the partition entry array of the primary GPT header"),
        "{msg}"
    );
}

#[test]
fn no_esp() {
    let disk = gpt_disk(&[(ROOT_X86_64, "root", &[0; 4096])]);
    assert_eq!(
        err_of(&disk),
        "test.img: no EFI System Partition (type C12A7328-F81F-11D2-BA4B-00A0C93EC93B) in the GPT"
    );
}

#[test]
fn no_uki_on_esp() {
    let esp = fat_image(&[("EFI/systemd/systemd-bootx64.efi", b"MZ")]);
    let disk = gpt_disk(&[(&Guid::ESP.to_string(), "esp", &esp)]);
    assert_eq!(
        err_of(&disk),
        "test.img: no UKI on the ESP: EFI/BOOT/BOOTX64.EFI not found"
    );
}

#[test]
fn esp_without_fat() {
    let disk = gpt_disk(&[(&Guid::ESP.to_string(), "esp", &[0u8; 1 << 20])]);
    let msg = err_of(&disk);
    assert!(
        msg.contains("the ESP's FAT file system cannot be read"),
        "{msg}"
    );
}

#[test]
fn esp_holding_a_pe_without_linux() {
    let stub = PeBuilder::new().section(".text", &sample_kernel()).build();
    let disk = disk_with_uki(&stub);
    let msg = err_of(&disk);
    assert_eq!(
        msg,
        "test.img: ESP EFI/BOOT/BOOTX64.EFI: the PE image has no .linux section, so it is not a UKI"
    );
}

#[test]
fn missing_file() {
    let e = Image::open("/nonexistent/veil.raw").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/veil.raw: cannot read"),
        "{e}"
    );
}

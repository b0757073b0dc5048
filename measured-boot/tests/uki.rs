//! UKI section lookup as systemd-stub does it.
#![allow(clippy::unwrap_used)]

use measured_boot::testing::{PeBuilder, SAMPLE_ROOTHASH, sample_kernel, sample_uki};
use measured_boot::{Error, Uki, UnifiedSection};

#[test]
fn sample_uki_facts() {
    let uki = Uki::parse(sample_uki()).unwrap();
    assert_eq!(uki.roothash().as_deref(), Some(SAMPLE_ROOTHASH));
    assert_eq!(uki.usrhash(), None);
    assert_eq!(uki.uname().as_deref(), Some("6.12.48+deb13-cloud-amd64"));
    let osrel = uki.os_release();
    assert_eq!(osrel.get("ID").map(String::as_str), Some("debian"));
    assert_eq!(
        osrel.get("PRETTY_NAME").map(String::as_str),
        Some("Veil (Debian 13)")
    );
    assert_eq!(&*uki.kernel(), &sample_kernel()[..]);
    let order: Vec<_> = uki.sections().collect();
    assert_eq!(
        order,
        [
            UnifiedSection::Linux,
            UnifiedSection::Osrel,
            UnifiedSection::Cmdline,
            UnifiedSection::Initrd,
            UnifiedSection::Uname,
            UnifiedSection::Sbat
        ]
    );
}

#[test]
fn section_data_is_virtual_size_long() {
    // VirtualSize below SizeOfRawData: the file padding is not part of the section.
    let pe = PeBuilder::new()
        .section(".linux", &sample_kernel())
        .section_with_virtual_size(".cmdline", b"quiet\0\0\0junk", 5)
        .section_with_virtual_size(".osrel", b"ID=x", 10)
        .build();
    let uki = Uki::parse(pe).unwrap();
    assert_eq!(&*uki.section(UnifiedSection::Cmdline).unwrap(), b"quiet");
    // VirtualSize above SizeOfRawData... only within the raw data here, so it is zero
    // padded from the file's alignment padding; either way 10 bytes.
    assert_eq!(uki.section(UnifiedSection::Osrel).unwrap().len(), 10);
}

#[test]
fn virtual_size_beyond_raw_data_is_zero_filled() {
    let mut pe = PeBuilder::new()
        .section(".linux", &sample_kernel())
        .section_with_virtual_size(".osrel", b"ID=x", 0x300)
        .build();
    // Make the file junk after the data visible: the loader must not use it.
    let layout = measured_boot::pe::PeLayout::parse("t", &pe).unwrap();
    let s = layout
        .sections
        .iter()
        .find(|s| s.name == ".osrel")
        .unwrap()
        .clone();
    assert_eq!(s.size_of_raw_data, 0x200);
    let at = s.pointer_to_raw_data as usize;
    pe[at + 4..at + 0x200].fill(0xee);
    let uki = Uki::parse(pe).unwrap();
    let data = uki.section(UnifiedSection::Osrel).unwrap();
    assert_eq!(data.len(), 0x300);
    assert_eq!(&data[..4], b"ID=x");
    assert!(data[4..0x200].iter().all(|&b| b == 0xee));
    assert!(data[0x200..].iter().all(|&b| b == 0));
}

#[test]
fn zero_fill_is_measured_up_to_one_mib_and_refused_beyond() {
    // The .osrel data is 4 bytes in a 0x200-byte raw block; the fill is counted from there.
    let build = |vsize: u32| {
        PeBuilder::new()
            .section(".linux", &sample_kernel())
            .section_with_virtual_size(".osrel", b"ID=x", vsize)
            .build()
    };
    let uki = Uki::parse(build(0x200 + (1 << 20))).unwrap();
    assert_eq!(
        uki.section(UnifiedSection::Osrel).unwrap().len(),
        0x200 + (1 << 20)
    );
    let e = Uki::parse(build(0x200 + (1 << 20) + 1)).expect_err("too much zero fill");
    let msg = e.to_string();
    assert!(
        msg.contains(".osrel") && msg.contains("0x100001 bytes of zero fill"),
        "{msg}"
    );
}

#[test]
fn first_section_of_a_name_wins_and_profile_zero_overrides_base() {
    let pe = PeBuilder::new()
        .section(".linux", &sample_kernel())
        .section(".cmdline", b"base")
        .section(".cmdline", b"second")
        .section(".profile", b"ID=default")
        .section(".cmdline", b"profile0")
        .section(".profile", b"ID=debug")
        .section(".cmdline", b"profile1")
        .build();
    let uki = Uki::parse(pe).unwrap();
    assert_eq!(uki.cmdline().as_deref(), Some("profile0"));
    assert_eq!(
        &*uki.section(UnifiedSection::Profile).unwrap(),
        b"ID=default"
    );
}

#[test]
fn pe_without_linux_is_not_a_uki() {
    let pe = PeBuilder::new()
        .section(".text", &[0; 10])
        .section(".cmdline", b"x")
        .build();
    let err = Uki::parse_named("stub.efi", pe).unwrap_err();
    assert!(matches!(err, Error::NotUki { .. }));
    assert_eq!(
        err.to_string(),
        "stub.efi: the PE image has no .linux section, so it is not a UKI"
    );
}

#[test]
fn section_pointing_past_the_end_is_truncation() {
    let mut pe = PeBuilder::new().section(".linux", &sample_kernel()).build();
    pe.truncate(pe.len() - 512);
    let err = Uki::parse_named("cut.efi", pe).unwrap_err();
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("section .linux"), "{err}");
}

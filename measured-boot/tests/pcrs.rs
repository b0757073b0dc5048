//! Expected PCR values, recomputed here by hand from the rules in `pcr.rs`'s docs.
#![allow(clippy::unwrap_used)]

mod common;
use measured_boot::authenticode_sha256;
use measured_boot::initrd::{InitrdAssembly, stub_cpio};
use measured_boot::pcr::{Component, LoadOptionsEncoding};
use measured_boot::testing::{
    PeBuilder, build_uki, sample_kernel, sample_uki, sample_uki_sections,
};
use measured_boot::{
    BootConfig, Digest, Uki, UnifiedSection, diff_expected, expected_pcrs, expected_pcrs_with,
};

fn replay(ds: &[Digest]) -> Digest {
    ds.iter().fold(Digest::ZERO, |p, d| p.extend(d))
}

#[test]
fn pcr4_is_action_separator_uki_kernel() {
    let bytes = sample_uki();
    let uki = Uki::parse(bytes.clone()).unwrap();
    let e = expected_pcrs(&uki).unwrap();
    // Well-known digests of OVMF's PCR 4 preamble.
    let action =
        Digest::from_hex("3d6772b4f84ed47595d72a2c4c5ffd15f5bb72c7507fe26f2aaee2c69d5633ba")
            .unwrap();
    let separator =
        Digest::from_hex("df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119")
            .unwrap();
    let want = replay(&[
        action,
        separator,
        authenticode_sha256("uki", &bytes).unwrap(),
        authenticode_sha256("kernel", &sample_kernel()).unwrap(),
    ]);
    assert_eq!(e.pcr4, want);
    let names: Vec<_> = e.events_for(4).map(|m| m.component.clone()).collect();
    assert_eq!(
        names,
        [
            Component::BootAttempt,
            Component::Separator,
            Component::UkiImage,
            Component::KernelImage
        ]
    );

    // Secure Boot: the stub's security override keeps the kernel out of PCR 4.
    let sb = expected_pcrs_with(
        &uki,
        &BootConfig {
            kernel_in_pcr4: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        sb.pcr4,
        replay(&[
            action,
            separator,
            authenticode_sha256("uki", &bytes).unwrap()
        ])
    );
}

#[test]
fn pcr11_measures_name_with_nul_then_data_in_canonical_order() {
    let kernel = sample_kernel();
    // Deliberately out of canonical order in the file.
    let sections = vec![
        (".sbat", b"sbat,1\n".to_vec()),
        (".cmdline", b"quiet".to_vec()),
        (".pcrsig", b"{}".to_vec()),
        (".pcrpkey", b"-----BEGIN PUBLIC KEY-----".to_vec()),
        (".osrel", b"ID=veil".to_vec()),
    ];
    let uki = Uki::parse(build_uki(&kernel, &sections)).unwrap();
    let e = expected_pcrs(&uki).unwrap();
    let mut want = Vec::new();
    for (name, data) in [
        (".linux", kernel.as_slice()),
        (".osrel", b"ID=veil".as_slice()),
        (".cmdline", b"quiet".as_slice()),
        (".sbat", b"sbat,1\n".as_slice()),
        (".pcrpkey", b"-----BEGIN PUBLIC KEY-----".as_slice()),
    ] {
        want.push(Digest::of(format!("{name}\0").as_bytes()));
        want.push(Digest::of(data));
    }
    let stub = replay(&want);
    assert_eq!(e.pcr11_phases[0], ("stub".to_owned(), stub));
    let mut v = stub;
    for (i, phase) in [
        "enter-initrd",
        "leave-initrd",
        "sysinit",
        "ready",
        "shutdown",
        "final",
    ]
    .iter()
    .enumerate()
    {
        v = v.extend(&Digest::of(phase.as_bytes()));
        assert_eq!(e.pcr11_phases[i + 1], (phase.to_string(), v));
        if *phase == "ready" {
            assert_eq!(e.pcr11, v);
        }
    }
    // .pcrsig is never measured into PCR 11.
    assert!(
        !e.events
            .iter()
            .any(|m| m.component == Component::SectionData(UnifiedSection::Pcrsig))
    );
}

#[test]
fn pcr9_is_utf16_cmdline_with_nul_then_initrd() {
    let uki = Uki::parse(sample_uki()).unwrap();
    let e = expected_pcrs(&uki).unwrap();
    let cmdline = uki.cmdline().unwrap();
    // The stub strips the trailing newline; UTF-16LE plus a UTF-16 NUL.
    let mut lo: Vec<u8> = cmdline
        .trim()
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    lo.extend_from_slice(&[0, 0]);
    // The initrd: .initrd, then the /.extra/os-release cpio, each padded to 4 bytes.
    let mut initrd = uki.section(UnifiedSection::Initrd).unwrap().to_vec();
    while initrd.len() % 4 != 0 {
        initrd.push(0);
    }
    initrd.extend_from_slice(&stub_cpio(
        "os-release",
        &uki.section(UnifiedSection::Osrel).unwrap(),
    ));
    assert_eq!(e.pcr9, replay(&[Digest::of(&lo), Digest::of(&initrd)]));
    let names: Vec<_> = e.events_for(9).map(|m| m.component.clone()).collect();
    assert_eq!(names, [Component::LoadOptions, Component::Initrd]);

    let variant = BootConfig {
        load_options: LoadOptionsEncoding::Utf16WithoutNul,
        initrd: InitrdAssembly::SectionsOnly,
        ..Default::default()
    };
    let e2 = expected_pcrs_with(&uki, &variant).unwrap();
    lo.truncate(lo.len() - 2);
    let initrd_only = uki.section(UnifiedSection::Initrd).unwrap();
    assert_eq!(
        e2.pcr9,
        replay(&[Digest::of(&lo), Digest::of(&initrd_only)])
    );
}

#[test]
fn stub_cpio_layout() {
    let c = stub_cpio("os-release", b"ID=x\n");
    // Directory record: 110-byte header + ".extra\0" padded to 120.
    assert_eq!(&c[..6], b"070701");
    assert_eq!(&c[6..14], b"00000001"); // inode 1
    assert_eq!(&c[14..22], b"0000416d"); // S_IFDIR | 0555
    assert_eq!(&c[94..102], b"00000007"); // name size
    assert_eq!(&c[110..117], b".extra\0");
    // File record at 120: inode 2, mode 0100444, size 5, name ".extra/os-release\0".
    let f = &c[120..];
    assert_eq!(&f[6..14], b"00000002");
    assert_eq!(&f[14..22], b"0000812496"[..8].as_ref());
    assert_eq!(&f[54..62], b"00000005");
    assert_eq!(&f[94..102], b"00000012");
    assert_eq!(&f[110..128], b".extra/os-release\0");
    // 110 + 18 = 128, then the data padded to 8, then the 124-byte trailer.
    assert_eq!(&f[128..133], b"ID=x\n");
    let trailer = &f[136..];
    assert_eq!(trailer.len(), 124);
    assert_eq!(&trailer[94..102], b"0000000B");
    assert_eq!(&trailer[110..120], b"TRAILER!!!");
    assert_eq!(c.len() % 4, 0);
}

#[test]
fn pcr12_and_pcr13_stay_zero() {
    let e = expected_pcrs(&Uki::parse(sample_uki()).unwrap()).unwrap();
    assert_eq!(e.pcr12, Digest::ZERO);
    assert_eq!(e.pcr13, Digest::ZERO);
    assert_eq!(e.events_for(12).count() + e.events_for(13).count(), 0);
}

#[test]
fn cmdline_is_mangled_like_the_stub() {
    let uki = Uki::parse(build_uki(
        &sample_kernel(),
        &[(".cmdline", b"  a\tb\n\nc \n".to_vec())],
    ))
    .unwrap();
    let units = measured_boot::pcr::stub_load_options(&uki).unwrap();
    assert_eq!(String::from_utf16(&units).unwrap(), "a b  c");
}

#[test]
fn diff_names_the_changed_section() {
    let mut sections = sample_uki_sections();
    let a = Uki::parse(build_uki(&sample_kernel(), &sections)).unwrap();
    for s in &mut sections {
        if s.0 == ".cmdline" {
            s.1 = b"console=ttyS0 roothash=ffff".to_vec();
        }
    }
    let b = Uki::parse(build_uki(&sample_kernel(), &sections)).unwrap();
    let d = diff_expected(&expected_pcrs(&a).unwrap(), &expected_pcrs(&b).unwrap());
    let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
    common::assert_cmdline_change_named(&lines);
    // Nothing about the kernel, which did not change.
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(".linux") || l.contains("kernel (.linux)")),
        "{lines:#?}"
    );

    // A kernel change shows up in PCR 4 and PCR 11 as the kernel.
    let other_kernel = PeBuilder::new().section(".text", &[0x91; 1000]).build();
    let c = Uki::parse(build_uki(&other_kernel, &sample_uki_sections())).unwrap();
    let d = diff_expected(&expected_pcrs(&a).unwrap(), &expected_pcrs(&c).unwrap());
    let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PCR 4: kernel (.linux) PE hash changed")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PCR 11: .linux changed")),
        "{lines:#?}"
    );
}

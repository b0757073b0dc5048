//! Authenticode hashing, checked against a computation by a different path: removing
//! the skipped byte ranges from a copy of the file and hashing the rest in one go.
#![allow(clippy::unwrap_used)]

use measured_boot::authenticode::{TrailingPadding, authenticode_sha256, authenticode_sha256_with};
use measured_boot::pe::PeLayout;
use measured_boot::testing::PeBuilder;
use measured_boot::{Digest, Error};

const CS: usize = PeBuilder::CHECKSUM_OFFSET;
const CE: usize = PeBuilder::CERT_ENTRY_OFFSET;

/// For a PE whose sections follow the headers contiguously in table order, the
/// Authenticode hash is the hash of the file minus CheckSum, minus the Certificate
/// Table entry, minus the certificate table at the end.
fn by_removal(file: &[u8], cert_len: usize) -> Digest {
    let mut v = Vec::new();
    v.extend_from_slice(&file[..CS]);
    v.extend_from_slice(&file[CS + 4..CE]);
    v.extend_from_slice(&file[CE + 8..file.len() - cert_len]);
    Digest::of(&v)
}

#[test]
fn unsigned_pe_matches_removal() {
    let pe = PeBuilder::new()
        .section(".text", &[1; 777])
        .section(".data", &[2; 100])
        .build();
    assert_eq!(authenticode_sha256("t", &pe).unwrap(), by_removal(&pe, 0));
}

#[test]
fn signed_pe_excludes_the_certificate_table() {
    let unsigned = PeBuilder::new()
        .section(".text", &[1; 512])
        .trailing(b"12345678");
    let signed = unsigned.clone().certificate(&[0xaa; 40]).build();
    let h = authenticode_sha256("t", &signed).unwrap();
    assert_eq!(h, by_removal(&signed, 40));
    // Signing changes neither the hash of the code nor that of the trailing data.
    assert_eq!(h, authenticode_sha256("t", &unsigned.build()).unwrap());
}

#[test]
fn checksum_and_certificate_bytes_do_not_matter_but_code_does() {
    let pe = PeBuilder::new()
        .section(".text", &[1; 600])
        .certificate(&[5; 16])
        .build();
    let h = authenticode_sha256("t", &pe).unwrap();

    let mut other_checksum = pe.clone();
    other_checksum[CS] ^= 0xff;
    assert_eq!(authenticode_sha256("t", &other_checksum).unwrap(), h);

    let mut other_cert = pe.clone();
    let last = other_cert.len() - 1;
    other_cert[last] ^= 0xff;
    assert_eq!(authenticode_sha256("t", &other_cert).unwrap(), h);

    let mut other_code = pe.clone();
    other_code[0x200] ^= 1;
    assert_ne!(authenticode_sha256("t", &other_code).unwrap(), h);
}

#[test]
fn sections_are_hashed_in_file_order_not_table_order() {
    // Swap the two section table entries: same bytes hashed, in file order.
    let pe = PeBuilder::new()
        .section(".a", &[1; 512])
        .section(".b", &[2; 512])
        .build();
    let mut swapped = pe.clone();
    let table = 0x80 + 24 + 240;
    let (a, b) = (table, table + 40);
    let first: Vec<u8> = swapped[a..a + 40].to_vec();
    let second: Vec<u8> = swapped[b..b + 40].to_vec();
    swapped[a..a + 40].copy_from_slice(&second);
    swapped[b..b + 40].copy_from_slice(&first);
    // The table bytes themselves differ, so compare with the removal computation.
    assert_eq!(
        authenticode_sha256("t", &swapped).unwrap(),
        by_removal(&swapped, 0)
    );
}

#[test]
fn without_a_certificate_directory_only_checksum_is_skipped() {
    let pe = PeBuilder::new()
        .data_directories(2)
        .section(".text", &[3; 100])
        .build();
    let mut v = pe[..CS].to_vec();
    v.extend_from_slice(&pe[CS + 4..]);
    assert_eq!(authenticode_sha256("t", &pe).unwrap(), Digest::of(&v));
}

#[test]
fn trailing_padding_variant_pads_to_eight() {
    let pe = PeBuilder::new()
        .section(".text", &[3; 100])
        .trailing(b"abc")
        .build();
    let layout = PeLayout::parse("t", &pe).unwrap();
    let edk2 = authenticode_sha256_with("t", &pe, &layout, TrailingPadding::None).unwrap();
    let padded =
        authenticode_sha256_with("t", &pe, &layout, TrailingPadding::ToMultipleOf8).unwrap();
    assert_eq!(edk2, by_removal(&pe, 0));
    let mut v = pe[..CS].to_vec();
    v.extend_from_slice(&pe[CS + 4..CE]);
    v.extend_from_slice(&pe[CE + 8..]);
    v.extend_from_slice(&[0; 5]);
    assert_eq!(padded, Digest::of(&v));
}

#[test]
fn truncated_section_is_an_error_naming_it() {
    let pe = PeBuilder::new().section(".text", &[3; 1000]).build();
    let cut = &pe[..pe.len() - 100];
    let err = authenticode_sha256("kernel.efi", cut).unwrap_err();
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("kernel.efi") && msg.contains(".text"), "{msg}");
}

#[test]
fn not_a_pe_is_an_error() {
    let err = authenticode_sha256("x", b"MZ but nothing else").unwrap_err();
    assert!(matches!(err, Error::BadPe { .. }), "{err}");
    let err = authenticode_sha256("x", b"ELF").unwrap_err();
    assert!(err.to_string().contains("no MZ signature"), "{err}");
}

//! The initrd systemd-stub 257 hands to the kernel, which the kernel's EFI stub measures
//! into PCR 9.
//!
//! systemd `src/boot/stub.c` (`run`): the initrds are, in the order of the `INITRD_*`
//! enum — `.ucode`, `.initrd`, then generated cpio archives: credentials
//! (`*.cred` beside the UKI and in `\loader\credentials`), sysexts, confexts (none on a
//! Veil ESP), and the "embedded" ones made by `generate_embedded_initrds`: `.pcrsig` as
//! `/.extra/tpm2-pcr-signature.json`, `.pcrpkey` as `/.extra/tpm2-pcr-public-key.pem`,
//! `.osrel` as `/.extra/os-release`, `.profile` as `/.extra/profile`. Empty ones are
//! skipped (`iovec_array_extend`). With more than one, `combine_initrds` concatenates
//! them, padding each to a multiple of 4 bytes with zeros; a single one is passed as is.
//!
//! The cpio format is `pack_cpio_literal` in `src/boot/cpio.c`: "newc" (`070701`) headers
//! with inode numbers counting from 1, uid/gid/mtime 0, nlink 1, first the directory
//! `.extra` (mode 040555), then the file (mode 0100444), then the `TRAILER!!!` record;
//! names NUL-terminated and padded to 4 bytes, as is the file data.

use crate::uki::{Uki, UnifiedSection};
use sha2::{Digest as _, Sha256};
use std::borrow::Cow;

use crate::digest::Digest;

/// Which initrd assembly to model (to compare against a booted guest if in doubt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitrdAssembly {
    /// systemd-stub 257 as read from its source (the default).
    #[default]
    Stub257,
    /// Only `.ucode` + `.initrd`, as systemd-stub before 257 did when the UKI has no
    /// `.pcrsig`/`.pcrpkey` (no `/.extra/os-release` cpio).
    SectionsOnly,
}

fn cpio_word(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(format!("{v:08x}").as_bytes());
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn cpio_header(out: &mut Vec<u8>, inode: u32, mode: u32, size: u32, name: &[u8]) {
    out.extend_from_slice(b"070701");
    cpio_word(out, inode);
    cpio_word(out, mode);
    cpio_word(out, 0); // uid
    cpio_word(out, 0); // gid
    cpio_word(out, 1); // nlink
    cpio_word(out, 0); // mtime: never propagated, to keep measurements stable
    cpio_word(out, size);
    for _ in 0..4 {
        cpio_word(out, 0); // dev major/minor, rdev major/minor
    }
    cpio_word(out, name.len() as u32 + 1); // name size includes the NUL
    cpio_word(out, 0); // check
    out.extend_from_slice(name);
    out.push(0);
    pad4(out);
}

/// `pack_cpio_trailer` in cpio.c, byte for byte: note the upper-case `B` in the name
/// size, unlike the lower-case hex `write_cpio_word` writes elsewhere.
const TRAILER: &[u8] = b"070701\
0000000000000000000000000000000000000001\
000000000000000000000000000000000000000000000000\
0000000B00000000TRAILER!!!\0\0\0\0";

/// The archive `pack_cpio_literal(data, ".extra", file_name, 0555, 0444, …)` builds.
pub fn stub_cpio(file_name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 512);
    cpio_header(&mut out, 1, 0o040000 | 0o555, 0, b".extra");
    let path = format!(".extra/{file_name}");
    cpio_header(
        &mut out,
        2,
        0o100000 | 0o444,
        data.len() as u32,
        path.as_bytes(),
    );
    out.extend_from_slice(data);
    pad4(&mut out);
    out.extend_from_slice(TRAILER);
    out
}

/// The pieces of the initrd systemd-stub passes, in order.
pub fn initrd_parts(uki: &Uki, assembly: InitrdAssembly) -> Vec<Cow<'_, [u8]>> {
    let mut parts: Vec<Cow<'_, [u8]>> = Vec::new();
    for s in [UnifiedSection::Ucode, UnifiedSection::Initrd] {
        if let Some(d) = uki.section(s) {
            parts.push(d);
        }
    }
    if assembly == InitrdAssembly::Stub257 {
        for (s, file) in [
            (UnifiedSection::Pcrsig, "tpm2-pcr-signature.json"),
            (UnifiedSection::Pcrpkey, "tpm2-pcr-public-key.pem"),
            (UnifiedSection::Osrel, "os-release"),
            (UnifiedSection::Profile, "profile"),
        ] {
            if let Some(d) = uki.section(s) {
                parts.push(Cow::Owned(stub_cpio(file, &d)));
            }
        }
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// SHA-256 of the initrd the kernel loads, or `None` when there is none (then the kernel
/// measures nothing). Hashes the pieces in place instead of concatenating tens of MB.
pub fn initrd_digest(uki: &Uki, assembly: InitrdAssembly) -> Option<Digest> {
    let parts = initrd_parts(uki, assembly);
    if parts.is_empty() {
        return None;
    }
    let pad = parts.len() > 1;
    let mut h = Sha256::new();
    for p in &parts {
        h.update(p);
        if pad {
            let rem = p.len() % 4;
            if rem != 0 {
                h.update(&[0u8; 4][..4 - rem]);
            }
        }
    }
    Some(Digest(h.finalize().into()))
}

//! Rewrites a LUKS2 header's JSON the way a malicious host would: both copies, with
//! their (unkeyed) checksums recomputed, so that libcryptsetup loads the result as a
//! valid header. For tests and the end-to-end tamper checks only; never in the image.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Binary header: magic[6] version[2] hdr_size[8] seqid[8] label[48] csum_alg[32]
/// salt[64] uuid[40] subsystem[48] hdr_offset[8] padding[184] csum[64] ...
const HDR_SIZE_AT: usize = 8;
const CSUM_AT: usize = 448;
const BINARY: usize = 4096;

/// Applies `change` to the JSON of both header copies of the LUKS2 volume that starts
/// at `offset` in `path`, and fixes their checksums.
pub fn rewrite(
    path: &Path,
    offset: u64,
    change: impl Fn(&mut serde_json::Value),
) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut first = [0u8; BINARY];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut first)?;
    if &first[..6] != b"LUKS\xba\xbe" {
        return Err(std::io::Error::other("no LUKS2 header at that offset"));
    }
    let size = u64::from_be_bytes(
        first[HDR_SIZE_AT..HDR_SIZE_AT + 8]
            .try_into()
            .unwrap_or_default(),
    );
    let size = usize::try_from(size).map_err(std::io::Error::other)?;
    for copy in [0u64, size as u64] {
        let mut hdr = vec![0u8; size];
        f.seek(SeekFrom::Start(offset + copy))?;
        f.read_exact(&mut hdr)?;
        let end = hdr[BINARY..]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(size - BINARY);
        let mut json: serde_json::Value =
            serde_json::from_slice(&hdr[BINARY..BINARY + end]).map_err(std::io::Error::other)?;
        change(&mut json);
        let text = serde_json::to_vec(&json).map_err(std::io::Error::other)?;
        if text.len() >= size - BINARY {
            return Err(std::io::Error::other("the new JSON does not fit"));
        }
        hdr[BINARY..].fill(0);
        hdr[BINARY..BINARY + text.len()].copy_from_slice(&text);
        hdr[CSUM_AT..CSUM_AT + 64].fill(0);
        let sum = Sha256::digest(&hdr);
        hdr[CSUM_AT..CSUM_AT + 32].copy_from_slice(&sum);
        f.seek(SeekFrom::Start(offset + copy))?;
        f.write_all(&hdr)?;
    }
    f.sync_all()
}

/// The tampering the tests and the end-to-end checks apply, by name.
pub fn attack(name: &str) -> Option<fn(&mut serde_json::Value)> {
    Some(match name {
        // The data in the clear; the node's key still opens the keyslot.
        "cipher-null" => |j| j["segments"]["0"]["encryption"] = "cipher_null-ecb".into(),
        // A weaker cipher whose parameters look like any other.
        "other-cipher" => |j| j["segments"]["0"]["encryption"] = "aes-cbc-essiv:sha256".into(),
        // Half the key.
        "small-key" => |j| {
            j["segments"]["0"]["encryption"] = "aes-xts-plain64".into();
            j["keyslots"]["0"]["key_size"] = 32.into();
        },
        // The integrity protection gone.
        "no-integrity" => |j| {
            if let Some(s) = j["segments"]["0"].as_object_mut() {
                s.remove("integrity");
            }
        },
        // A keyslot that opens with any key: its area "encrypted" with cipher_null.
        "open-keyslot" => |j| j["keyslots"]["0"]["area"]["encryption"] = "cipher_null".into(),
        // Plausible values, not Veil's (the data moved to where the host wants it; the
        // key still opens the keyslot): only the MAC notices.
        "plausible" => |j| j["segments"]["0"]["offset"] = "33554432".into(),
        _ => return None,
    })
}

//! Reading PCR values from the kernel's TPM sysfs files
//! (`/sys/class/tpm/tpm0/pcr-<bank>/<index>`, one hex digest per file).
//!
//! The sysfs interface goes through the kernel's TPM driver, so reading PCRs needs no
//! TSS library and cannot disturb sessions the attestation code holds on `/dev/tpmrm0`.

use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Hash bank of a PCR read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcrBank {
    Sha1,
    Sha256,
    Sha384,
}

impl PcrBank {
    fn sysfs_name(self) -> &'static str {
        match self {
            PcrBank::Sha1 => "pcr-sha1",
            PcrBank::Sha256 => "pcr-sha256",
            PcrBank::Sha384 => "pcr-sha384",
        }
    }

    /// Digest size in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            PcrBank::Sha1 => 20,
            PcrBank::Sha256 => 32,
            PcrBank::Sha384 => 48,
        }
    }
}

#[derive(Debug, Error)]
pub enum PcrError {
    #[error("cannot read PCR file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("PCR file {path} holds {content:?}, expected {expected_len} bytes of hex")]
    Malformed {
        path: PathBuf,
        content: String,
        expected_len: usize,
    },
}

/// Reads PCRs `indices` of `bank` from the TPM sysfs directory `tpm_dir`
/// (e.g. `/sys/class/tpm/tpm0`).
pub fn read_sysfs_pcrs(
    tpm_dir: &Path,
    bank: PcrBank,
    indices: impl IntoIterator<Item = u32>,
) -> Result<Vec<(u32, Vec<u8>)>, PcrError> {
    let bank_dir = tpm_dir.join(bank.sysfs_name());
    indices
        .into_iter()
        .map(|i| {
            let path = bank_dir.join(i.to_string());
            let text = fs::read_to_string(&path).map_err(|source| PcrError::Read {
                path: path.clone(),
                source,
            })?;
            let trimmed = text.trim();
            match hex::decode(trimmed) {
                Ok(d) if d.len() == bank.digest_len() => Ok((i, d)),
                _ => Err(PcrError::Malformed {
                    path,
                    content: trimmed.chars().take(200).collect(),
                    expected_len: bank.digest_len(),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hex_values_case_insensitively() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bank = dir.path().join("pcr-sha256");
        fs::create_dir(&bank).expect("mkdir");
        fs::write(bank.join("0"), format!("{}\n", "AB".repeat(32))).expect("write");
        fs::write(bank.join("7"), "00".repeat(32)).expect("write");
        let got = read_sysfs_pcrs(dir.path(), PcrBank::Sha256, [0, 7]).expect("read");
        assert_eq!(got, vec![(0, vec![0xab; 32]), (7, vec![0; 32])]);
    }

    #[test]
    fn short_value_is_rejected_with_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bank = dir.path().join("pcr-sha256");
        fs::create_dir(&bank).expect("mkdir");
        fs::write(bank.join("4"), "abcd").expect("write");
        let err = read_sysfs_pcrs(dir.path(), PcrBank::Sha256, [4]).expect_err("short");
        let msg = err.to_string();
        assert!(
            msg.contains("pcr-sha256/4") && msg.contains("32 bytes"),
            "{msg}"
        );
    }

    #[test]
    fn missing_file_names_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_sysfs_pcrs(dir.path(), PcrBank::Sha1, [3]).expect_err("missing");
        assert!(err.to_string().contains("pcr-sha1/3"), "{err}");
    }
}

//! SEV-SNP report generation through configfs-tsm ([`crate::tsm`]): `outblob` is the
//! report, `auxblob` the host's certificate table (VCEK, ASK, ARK); `provider` must be
//! `sev_guest`.

use std::path::PathBuf;

use thiserror::Error;

use super::report::{REPORT_LEN, SnpReport};
use super::{SnpCertChain, SnpEvidence};
use crate::evidence::{Attester, Evidence};

pub use crate::tsm::TSM_REPORT_DIR;
use crate::tsm::{self, TsmError, TsmReport};

/// `provider` of SEV-SNP guests.
pub const SNP_PROVIDER: &str = "sev_guest";

/// GUIDs of the certificate table (GHCB spec, "SNP Extended Guest Request"), in RFC 4122
/// byte order as the table stores them.
const GUID_VCEK: [u8; 16] = guid(0x63da758d, 0xe664, 0x4564, 0xadc5, 0xf4b93be8accd);
/// A cloud's VLEK (AWS), for reports whose signing-key field says VLEK.
const GUID_VLEK: [u8; 16] = guid(0xa8074bc2, 0xa25a, 0x483e, 0xaae6, 0x39c045a0b8a1);
const GUID_ASK: [u8; 16] = guid(0x4ab7b379, 0xbbac, 0x4fe4, 0xa02f, 0x05aef327c782);
const GUID_ARK: [u8; 16] = guid(0xc0b406a4, 0xa803, 0x4952, 0x9743, 0x3fb6014cd0ae);

const fn guid(a: u32, b: u16, c: u16, d: u16, e: u64) -> [u8; 16] {
    let a = a.to_be_bytes();
    let b = b.to_be_bytes();
    let c = c.to_be_bytes();
    let d = d.to_be_bytes();
    let e = e.to_be_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], e[2], e[3], e[4], e[5], e[6],
        e[7],
    ]
}

#[derive(Debug, Error)]
pub enum SnpAttestError {
    #[error(transparent)]
    Tsm(#[from] TsmError),
    #[error("{path}: {reason}")]
    BadOutput { path: PathBuf, reason: String },
    #[error("the host supplied no {key} in auxblob ({path}); fetch it from AMD KDS")]
    NoVcek { key: &'static str, path: PathBuf },
}

/// Produces [`Evidence::SevSnp`] through configfs-tsm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpAttester {
    root: PathBuf,
    entry: Option<String>,
}

impl Default for SnpAttester {
    fn default() -> Self {
        Self::new(TSM_REPORT_DIR)
    }
}

impl SnpAttester {
    /// Uses `root` instead of [`TSM_REPORT_DIR`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SnpAttester {
            root: root.into(),
            entry: None,
        }
    }

    /// Uses a fixed entry name instead of a fresh one per request.
    pub fn with_entry_name(mut self, name: impl Into<String>) -> Self {
        self.entry = Some(name.into());
        self
    }

    /// Requests a report over `report_data` (outblob: the report; auxblob: the
    /// certificate table).
    pub fn raw_report(&self, report_data: &[u8; 64]) -> Result<TsmReport, SnpAttestError> {
        Ok(tsm::request(
            &self.root,
            self.entry.as_deref(),
            SNP_PROVIDER,
            report_data,
            true,
        )?)
    }
}

/// One certificate-table entry: GUID and data.
pub type CertEntry = ([u8; 16], Vec<u8>);

/// Parses the SNP certificate table (`auxblob`): entries of GUID (16 bytes), offset and
/// length (u32 LE, relative to the table's start), ended by an all-zero entry. Returns
/// (GUID, data) pairs; never panics.
pub fn parse_cert_table(aux: &[u8]) -> Result<Vec<CertEntry>, String> {
    let mut out = Vec::new();
    for i in 0.. {
        let at = i * 24;
        let Some(entry) = aux.get(at..at + 24) else {
            return Err(format!("table ends at {at} without a terminating entry"));
        };
        if entry.iter().all(|b| *b == 0) {
            return Ok(out);
        }
        let mut g = [0u8; 16];
        g.copy_from_slice(&entry[..16]);
        let off = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]) as usize;
        let len = u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]) as usize;
        let data = off
            .checked_add(len)
            .and_then(|end| aux.get(off..end))
            .ok_or_else(|| format!("entry {i}: {off}+{len} is outside the {} bytes", aux.len()))?;
        out.push((g, data.to_vec()));
    }
    Ok(out)
}

/// Builds a certificate table (for tests and tools).
pub fn build_cert_table(entries: &[([u8; 16], &[u8])]) -> Vec<u8> {
    let mut head = Vec::new();
    let mut body = Vec::new();
    let base = (entries.len() + 1) * 24;
    for (g, data) in entries {
        head.extend_from_slice(g);
        let off = u32::try_from(base + body.len()).unwrap_or(u32::MAX);
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        head.extend_from_slice(&off.to_le_bytes());
        head.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(data);
    }
    head.extend_from_slice(&[0u8; 24]);
    head.extend_from_slice(&body);
    head
}

/// GUID of the VLEK entry.
pub fn vlek_guid() -> [u8; 16] {
    GUID_VLEK
}

/// GUIDs of the VCEK, ASK and ARK entries.
pub fn cert_guids() -> ([u8; 16], [u8; 16], [u8; 16]) {
    (GUID_VCEK, GUID_ASK, GUID_ARK)
}

impl Attester for SnpAttester {
    type Error = SnpAttestError;

    /// `report_data` = `user_data` followed by 32 zero bytes.
    fn evidence(&mut self, user_data: &[u8; 32]) -> Result<Evidence, SnpAttestError> {
        let mut rd = [0u8; 64];
        rd[..32].copy_from_slice(user_data);
        let TsmReport {
            entry,
            outblob: report,
            auxblob: aux,
        } = self.raw_report(&rd)?;
        let out_path = entry.join("outblob");
        if report.len() != REPORT_LEN {
            return Err(SnpAttestError::BadOutput {
                path: out_path,
                reason: format!("outblob is {} bytes, expected {REPORT_LEN}", report.len()),
            });
        }
        let parsed = SnpReport::parse(&report).map_err(|e| SnpAttestError::BadOutput {
            path: out_path,
            reason: e.to_string(),
        })?;
        let aux_path = entry.join("auxblob");
        let table = if aux.is_empty() {
            Vec::new()
        } else {
            parse_cert_table(&aux).map_err(|reason| SnpAttestError::BadOutput {
                path: aux_path.clone(),
                reason,
            })?
        };
        let find = |g: &[u8; 16]| table.iter().find(|(id, _)| id == g).map(|(_, d)| d.clone());
        // The report says which key signed it: the chip's VCEK (with AMD's ASK/ARK
        // beside it, if the host gave them) or the cloud's VLEK (whose ASVK chain the
        // verifier has pinned; the table's ASK slot would be the wrong one for it).
        let (vcek, cert_chain) = if parsed.signing_key() == 1 {
            let vlek = find(&GUID_VLEK).ok_or(SnpAttestError::NoVcek {
                key: "VLEK",
                path: aux_path,
            })?;
            (vlek, None)
        } else {
            let vcek = find(&GUID_VCEK).ok_or(SnpAttestError::NoVcek {
                key: "VCEK",
                path: aux_path,
            })?;
            let chain = match (find(&GUID_ASK), find(&GUID_ARK)) {
                (Some(ask), Some(ark)) => Some(SnpCertChain { ask, ark }),
                _ => None,
            };
            (vcek, chain)
        };
        Ok(Evidence::SevSnp(SnpEvidence {
            report,
            vcek,
            cert_chain,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_bytes_match_the_text_form() {
        assert_eq!(hex::encode(GUID_VCEK), "63da758de6644564adc5f4b93be8accd");
        assert_eq!(hex::encode(GUID_ARK), "c0b406a4a803495297433fb6014cd0ae");
        assert_eq!(hex::encode(GUID_VLEK), "a8074bc2a25a483eaae639c045a0b8a1");
    }

    #[test]
    fn cert_table_round_trip_and_garbage() {
        let t = build_cert_table(&[(GUID_VCEK, b"vcek"), (GUID_ARK, b"ark!")]);
        let p = parse_cert_table(&t).expect("parses");
        assert_eq!(
            p,
            vec![(GUID_VCEK, b"vcek".to_vec()), (GUID_ARK, b"ark!".to_vec())]
        );
        for n in 0..t.len() {
            let _ = parse_cert_table(&t[..n]);
        }
        let mut bad = t.clone();
        bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_cert_table(&bad).is_err());
    }
}

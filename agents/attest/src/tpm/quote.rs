//! TPMS_ATTEST parsing for quotes (TPM 2.0 Library Part 2 §10.12) and the PCR digest a
//! quote commits to (Part 3 §18.4: the digest of the selected PCR values, concatenated in
//! selection order).

use sha2::{Digest, Sha256};

use super::wire::{ParseError, Reader, alg};

/// TPM_GENERATED_VALUE: a restricted signing key only signs data that starts with this,
/// and only the TPM itself produces such data (Part 2 §6.2).
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE (Part 2 §6.9).
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;

/// One TPMS_PCR_SELECTION: a hash bank and the PCR indices selected in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    pub hash: u16,
    /// Ascending, as the bitmap orders them.
    pub pcrs: Vec<u32>,
}

/// TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
}

/// A parsed quote (TPMS_ATTEST with TPMS_QUOTE_INFO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub qualified_signer: Vec<u8>,
    /// The caller's qualifying data (Veil's user data).
    pub extra_data: Vec<u8>,
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
    pub selections: Vec<PcrSelection>,
    pub pcr_digest: Vec<u8>,
}

impl Quote {
    /// Parses marshalled TPMS_ATTEST bytes. Rejects anything that is not a TPM-generated
    /// quote and any trailing bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        let magic = r.u32("TPMS_ATTEST.magic")?;
        if magic != TPM_GENERATED_VALUE {
            return Err(ParseError::malformed(
                "TPMS_ATTEST.magic",
                format!("{magic:#010x} is not TPM_GENERATED_VALUE {TPM_GENERATED_VALUE:#010x}"),
            ));
        }
        let kind = r.u16("TPMS_ATTEST.type")?;
        if kind != TPM_ST_ATTEST_QUOTE {
            return Err(ParseError::malformed(
                "TPMS_ATTEST.type",
                format!("{kind:#06x} is not TPM_ST_ATTEST_QUOTE {TPM_ST_ATTEST_QUOTE:#06x}"),
            ));
        }
        let qualified_signer = r.tpm2b("TPMS_ATTEST.qualifiedSigner")?.to_vec();
        let extra_data = r.tpm2b("TPMS_ATTEST.extraData")?.to_vec();
        let clock_info = ClockInfo {
            clock: r.u64("TPMS_CLOCK_INFO.clock")?,
            reset_count: r.u32("TPMS_CLOCK_INFO.resetCount")?,
            restart_count: r.u32("TPMS_CLOCK_INFO.restartCount")?,
            safe: r.u8("TPMS_CLOCK_INFO.safe")? != 0,
        };
        let firmware_version = r.u64("TPMS_ATTEST.firmwareVersion")?;
        let count = r.u32("TPML_PCR_SELECTION.count")?;
        // TPM implementations allow one entry per bank (HASH_COUNT); a handful is plenty
        // and caps the work a hostile count can cause.
        if count > 16 {
            return Err(ParseError::malformed(
                "TPML_PCR_SELECTION.count",
                format!("{count} selections"),
            ));
        }
        let mut selections = Vec::new();
        for _ in 0..count {
            let hash = r.u16("TPMS_PCR_SELECTION.hash")?;
            let size = r.u8("TPMS_PCR_SELECTION.sizeofSelect")?;
            let bitmap = r.bytes(usize::from(size), "TPMS_PCR_SELECTION.pcrSelect")?;
            let pcrs = bitmap
                .iter()
                .enumerate()
                .flat_map(|(byte, bits)| {
                    (0..8u32)
                        .filter(move |bit| bits & (1 << bit) != 0)
                        .map(move |bit| byte as u32 * 8 + bit)
                })
                .collect();
            selections.push(PcrSelection { hash, pcrs });
        }
        let pcr_digest = r.tpm2b("TPMS_QUOTE_INFO.pcrDigest")?.to_vec();
        r.finish("TPMS_ATTEST")?;
        Ok(Quote {
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            selections,
            pcr_digest,
        })
    }

    /// The selected SHA-256 PCR indices in selection order. Errors on other banks (Veil
    /// quotes SHA-256 only, and a verifier must not return values it did not check) and on
    /// an index selected twice.
    pub fn sha256_pcrs(&self) -> Result<Vec<u32>, ParseError> {
        let mut out: Vec<u32> = Vec::new();
        for sel in &self.selections {
            if sel.hash != alg::SHA256 {
                return Err(ParseError::malformed(
                    "TPMS_PCR_SELECTION.hash",
                    format!("bank {:#06x} is not SHA-256", sel.hash),
                ));
            }
            for &pcr in &sel.pcrs {
                if out.contains(&pcr) {
                    return Err(ParseError::malformed(
                        "TPML_PCR_SELECTION",
                        format!("PCR {pcr} selected twice"),
                    ));
                }
                out.push(pcr);
            }
        }
        Ok(out)
    }
}

/// Why the PCR values sent with a quote are not the ones it covers.
#[derive(Debug, thiserror::Error)]
pub enum PcrValuesError {
    #[error(transparent)]
    Selection(#[from] ParseError),
    #[error("PCR {0} is given but not covered by the quote")]
    NotQuoted(u32),
    #[error("PCR {0} is quoted but its value is missing")]
    Missing(u32),
    #[error("the quoted PCR digest {quoted} is not the digest of the values sent, {computed}")]
    Digest { quoted: String, computed: String },
}

impl Quote {
    /// Checks that `given` are exactly the quoted SHA-256 PCRs, with the quoted digest:
    /// a verifier believes PCR values only through this. (The values are public, so
    /// the comparison need not be constant-time.)
    pub fn check_pcr_values(
        &self,
        given: &std::collections::BTreeMap<u32, [u8; 32]>,
    ) -> Result<(), PcrValuesError> {
        let selected = self.sha256_pcrs()?;
        if let Some(extra) = given.keys().find(|i| !selected.contains(i)) {
            return Err(PcrValuesError::NotQuoted(*extra));
        }
        let values = selected
            .iter()
            .map(|i| given.get(i).ok_or(PcrValuesError::Missing(*i)))
            .collect::<Result<Vec<_>, _>>()?;
        let computed = pcr_digest(values);
        if computed[..] != self.pcr_digest[..] {
            return Err(PcrValuesError::Digest {
                quoted: hex::encode(&self.pcr_digest),
                computed: hex::encode(computed),
            });
        }
        Ok(())
    }
}

/// Why a signed quote does not speak for this session and these PCR values.
#[derive(Debug, thiserror::Error)]
pub enum QuoteBindingError {
    #[error("the vTPM quote is malformed: {0}")]
    Malformed(String),
    #[error(
        "the vTPM quote was made for nonce {got}, not {expected}: a replayed quote or another session"
    )]
    Nonce { expected: String, got: String },
    #[error(
        "the PCR values do not match the quote's digest (quoted {quoted}, computed {computed})"
    )]
    PcrDigest { quoted: String, computed: String },
}

/// What follows a quote's signature check, where the AK is not an activated one
/// (clouds' vTPMs): the quote parses, carries `nonce`, and covers exactly `pcrs`.
pub fn check_quote_binding(
    attest: &[u8],
    nonce: &[u8],
    pcrs: &std::collections::BTreeMap<u32, [u8; 32]>,
) -> Result<Quote, QuoteBindingError> {
    let quote = Quote::parse(attest).map_err(|e| QuoteBindingError::Malformed(e.to_string()))?;
    if quote.extra_data != nonce {
        return Err(QuoteBindingError::Nonce {
            expected: hex::encode(nonce),
            got: hex::encode(&quote.extra_data),
        });
    }
    quote.check_pcr_values(pcrs).map_err(|e| match e {
        PcrValuesError::Digest { quoted, computed } => {
            QuoteBindingError::PcrDigest { quoted, computed }
        }
        e => QuoteBindingError::Malformed(e.to_string()),
    })?;
    Ok(quote)
}

/// SHA-256 over the PCR values concatenated in selection order (Part 3 §18.4.1).
pub fn pcr_digest<'a>(values: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in values {
        h.update(v);
    }
    h.finalize().into()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A quote over SHA-256 PCRs 0, 1 and 9 with the given extra data.
    pub(crate) fn sample(extra: &[u8]) -> Vec<u8> {
        let mut q = Vec::new();
        q.extend_from_slice(&TPM_GENERATED_VALUE.to_be_bytes());
        q.extend_from_slice(&TPM_ST_ATTEST_QUOTE.to_be_bytes());
        q.extend_from_slice(&[0, 2, 0xaa, 0xbb]);
        q.extend_from_slice(&(extra.len() as u16).to_be_bytes());
        q.extend_from_slice(extra);
        q.extend_from_slice(&[0; 8 + 4 + 4 + 1 + 8]);
        q.extend_from_slice(&1u32.to_be_bytes());
        q.extend_from_slice(&alg::SHA256.to_be_bytes());
        q.extend_from_slice(&[3, 0b0000_0011, 0b0000_0010, 0]);
        q.extend_from_slice(&[0, 32]);
        q.extend_from_slice(&[0x5a; 32]);
        q
    }

    #[test]
    fn parses_selection_in_order() {
        let q = Quote::parse(&sample(b"nonce")).expect("parse");
        assert_eq!(q.extra_data, b"nonce");
        assert_eq!(q.sha256_pcrs().expect("pcrs"), vec![0, 1, 9]);
        assert_eq!(q.pcr_digest, vec![0x5a; 32]);
    }

    #[test]
    fn rejects_every_truncation_and_wrong_magic() {
        let q = sample(b"x");
        for cut in 0..q.len() {
            assert!(
                matches!(Quote::parse(&q[..cut]), Err(ParseError::Truncated { .. })),
                "cut at {cut}"
            );
        }
        let mut bad = q.clone();
        bad[0] = 0;
        assert!(matches!(
            Quote::parse(&bad),
            Err(ParseError::Malformed {
                what: "TPMS_ATTEST.magic",
                ..
            })
        ));
    }
}

//! Parsing of the SEV-SNP `ATTESTATION_REPORT` (AMD SEV-SNP ABI specification, 56860,
//! table "ATTESTATION_REPORT Structure"). Field decoding is `sev`'s
//! [`AttestationReport`]; this wrapper adds the length/version/algorithm checks and
//! keeps the raw bytes, which are what the signature covers.

use serde::{Deserialize, Serialize};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;

use super::verifier::SnpVerifyError;

/// Length of an `ATTESTATION_REPORT`.
pub const REPORT_LEN: usize = 0x4a0;
/// The signature covers bytes `0..SIGNED_LEN`; it follows them.
pub const SIGNED_LEN: usize = 0x2a0;
/// `SIGNATURE_ALGO` value for ECDSA P-384 with SHA-384, the only one defined.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;
/// Report versions this parser accepts (2: Milan/Genoa firmware, 3/4: with CPUID fields,
/// 5: with mitigation vectors).
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 2..=5;

/// Bit 19 of the guest policy: the hypervisor may debug (read/write) guest memory.
pub const POLICY_DEBUG_BIT: u64 = 1 << 19;
/// Guest policy bit 16: the guest may run on a host with SMT enabled.
pub const POLICY_SMT_BIT: u64 = 1 << 16;
/// Guest policy bit 18: a migration agent may be associated with the guest (it could
/// export the guest's memory).
pub const POLICY_MIGRATE_MA_BIT: u64 = 1 << 18;

/// The security version numbers of the platform's firmware components. Compared field
/// by field: a TCB is only "at least" another if every component is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcbVersion {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl TcbVersion {
    /// The first component (in the order bootloader, tee, snp, microcode) that is lower
    /// than in `min`, as `(name, min, got)`.
    pub fn first_below(&self, min: &TcbVersion) -> Option<(&'static str, u8, u8)> {
        [
            ("bootloader", min.bootloader, self.bootloader),
            ("tee", min.tee, self.tee),
            ("snp", min.snp, self.snp),
            ("microcode", min.microcode, self.microcode),
        ]
        .into_iter()
        .find(|(_, min, got)| got < min)
    }
}

impl std::fmt::Display for TcbVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bootloader {} tee {} snp {} microcode {}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

impl From<sev::firmware::host::TcbVersion> for TcbVersion {
    fn from(t: sev::firmware::host::TcbVersion) -> Self {
        TcbVersion {
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
        }
    }
}

/// A parsed report. Nothing in it is authentic until
/// [`SnpVerifier`](super::SnpVerifier) has checked the signature over [`Self::raw`].
#[derive(Debug, Clone)]
pub struct SnpReport {
    raw: Vec<u8>,
    parsed: AttestationReport,
}

impl SnpReport {
    /// Parses `bytes`, which must be exactly one report. Never panics.
    pub fn parse(bytes: &[u8]) -> Result<Self, SnpVerifyError> {
        if bytes.len() < REPORT_LEN {
            return Err(SnpVerifyError::Truncated {
                what: "attestation report",
                len: bytes.len(),
                expected: REPORT_LEN,
            });
        }
        if bytes.len() > REPORT_LEN {
            return Err(SnpVerifyError::Malformed {
                what: "attestation report",
                reason: format!(
                    "{} bytes, expected exactly {REPORT_LEN} ({} trailing bytes)",
                    bytes.len(),
                    bytes.len() - REPORT_LEN
                ),
            });
        }
        let version = le_u32(bytes, 0);
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(SnpVerifyError::Malformed {
                what: "attestation report",
                reason: format!(
                    "report version {version} is not supported (expected {}..={})",
                    SUPPORTED_VERSIONS.start(),
                    SUPPORTED_VERSIONS.end()
                ),
            });
        }
        let sig_algo = le_u32(bytes, 0x34);
        if sig_algo != SIG_ALGO_ECDSA_P384_SHA384 {
            return Err(SnpVerifyError::Malformed {
                what: "attestation report",
                reason: format!(
                    "signature algorithm {sig_algo} is not ECDSA P-384/SHA-384 ({SIG_ALGO_ECDSA_P384_SHA384})"
                ),
            });
        }
        let parsed =
            AttestationReport::from_bytes(bytes).map_err(|e| SnpVerifyError::Malformed {
                what: "attestation report",
                reason: e.to_string(),
            })?;
        Ok(SnpReport {
            raw: bytes.to_vec(),
            parsed,
        })
    }

    /// The report exactly as received.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        self.raw.get(..SIGNED_LEN).unwrap_or_default()
    }

    /// The signature as (r, s), each 72 bytes little-endian in the report.
    pub fn signature_r_s(&self) -> (&[u8], &[u8]) {
        (
            self.raw.get(0x2a0..0x2e8).unwrap_or_default(),
            self.raw.get(0x2e8..0x330).unwrap_or_default(),
        )
    }

    pub fn version(&self) -> u32 {
        self.parsed.version
    }

    /// Which key signed the report (bits 4:2 of the u32 at 0x48): 0 the chip's VCEK,
    /// 1 a cloud's VLEK, 7 none.
    pub fn signing_key(&self) -> u32 {
        (le_u32(&self.raw, 0x48) >> 2) & 0x7
    }

    /// The raw 64-bit guest policy.
    pub fn policy(&self) -> u64 {
        le_u64(&self.raw, 0x08)
    }

    /// Whether the guest policy allows the hypervisor to debug the guest.
    pub fn debug_allowed(&self) -> bool {
        self.policy() & POLICY_DEBUG_BIT != 0
    }

    /// The VMPL the report was requested from (0 is the most privileged).
    pub fn vmpl(&self) -> u32 {
        self.parsed.vmpl
    }

    pub fn report_data(&self) -> &[u8; 64] {
        &self.parsed.report_data
    }

    /// The launch digest of the guest's initial memory (SHA-384).
    pub fn measurement(&self) -> &[u8; 48] {
        &self.parsed.measurement
    }

    pub fn host_data(&self) -> &[u8; 32] {
        &self.parsed.host_data
    }

    /// The TCB the VCEK was derived from (what the VCEK certificate attests to).
    pub fn reported_tcb(&self) -> TcbVersion {
        self.parsed.reported_tcb.into()
    }

    pub fn current_tcb(&self) -> TcbVersion {
        self.parsed.current_tcb.into()
    }

    pub fn chip_id(&self) -> &[u8; 64] {
        &self.parsed.chip_id
    }

    /// `sev`'s decoding of every field.
    pub fn fields(&self) -> &AttestationReport {
        &self.parsed
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MILAN_REPORT_HEX: &str = include_str!("../../tests/data/snp/report_milan.hex");

    fn milan() -> Vec<u8> {
        hex::decode(MILAN_REPORT_HEX.trim()).expect("test vector is hex")
    }

    #[test]
    fn parses_the_recorded_milan_report() {
        let r = SnpReport::parse(&milan()).expect("parses");
        assert_eq!(r.version(), 2);
        assert_eq!(r.policy(), 0x30000);
        assert!(!r.debug_allowed());
        assert_eq!(r.vmpl(), 0);
        assert_eq!(
            r.reported_tcb(),
            TcbVersion {
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 115
            }
        );
        assert_eq!(r.measurement()[..4], [0x7a, 0x1e, 0x5c, 0x26]);
    }

    #[test]
    fn no_panic_on_any_single_byte_change() {
        let good = milan();
        for i in 0..good.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] ^= x;
                let _ = SnpReport::parse(&b);
            }
        }
        for n in 0..=good.len() + 1 {
            let _ = SnpReport::parse(&vec![0xa5; n]);
        }
    }

    #[test]
    fn tcb_comparison_is_per_component() {
        let got = TcbVersion {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
        };
        assert_eq!(got.first_below(&got), None);
        let min = TcbVersion {
            snp: 9,
            ..TcbVersion::default()
        };
        assert_eq!(got.first_below(&min), Some(("snp", 9, 8)));
    }
}

//! Parsing a TD quote into the fields a policy checks. Parsing proves nothing: only
//! [`TdxVerifier`](super::TdxVerifier) establishes that the fields were signed.

use dcap_qvl::quote::{Quote, Report, TDAttributes};

use super::error::TdxVerifyError;

/// TEE type of a TDX quote header (`0x81`).
pub const TEE_TYPE_TDX: u32 = 0x81;

/// TD attributes, TUD group (byte 0): bit 0 is DEBUG, bits 4..=6 enable profiling
/// features that equally expose the TD to the host.
const TUD_DEBUG: u8 = 0x01;
const TUD_ANY: u8 = 0x71;

/// The measured and bound fields of a TD report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdQuote {
    /// Quote format version (4 or 5).
    pub version: u16,
    /// Build-time measurement of the TD (initial memory and configuration).
    pub mr_td: [u8; 48],
    /// Run-time measurement registers 0..=3.
    pub rtmrs: [[u8; 48]; 4],
    /// Caller data the TD put in its report.
    pub report_data: [u8; 64],
    /// TD attributes (little-endian bit field; byte 0 is the TUD group).
    pub td_attributes: [u8; 8],
    /// SERVTD_HASH of the service TDs bound to the TD: MRSERVICETD of a TD 1.5 report,
    /// the initial or else the current binding of a TD 1.5ex report. Zeros when none
    /// are bound, and for a TD 1.0 report, which has no such field.
    pub service_tds: [u8; 48],
}

impl TdQuote {
    /// Parses the header and TD report of a quote. Never panics on arbitrary input.
    pub fn parse(bytes: &[u8]) -> Result<Self, TdxVerifyError> {
        if bytes.len() < 48 {
            return Err(TdxVerifyError::Truncated {
                what: "quote header",
                offset: bytes.len(),
            });
        }
        let quote = Quote::parse(bytes).map_err(|e| {
            let reason = format!("{e:#}");
            if reason.contains("Not enough data") {
                TdxVerifyError::Truncated {
                    what: "quote",
                    offset: bytes.len(),
                }
            } else {
                TdxVerifyError::Malformed {
                    what: "quote",
                    reason,
                }
            }
        })?;
        if quote.header.tee_type != TEE_TYPE_TDX {
            return Err(TdxVerifyError::Unsupported {
                what: "quote TEE type",
                reason: format!(
                    "{:#x} is not TDX ({TEE_TYPE_TDX:#x})",
                    quote.header.tee_type
                ),
            });
        }
        let service_tds = match &quote.report {
            Report::TD15(r) => r.mr_service_td,
            Report::TD15Ex(r) if r.base.mr_service_td != [0; 48] => r.base.mr_service_td,
            Report::TD15Ex(r) => r.cur_service_td_hash,
            _ => [0; 48],
        };
        let td = match &quote.report {
            Report::TD10(r) => r,
            Report::TD15(r) => &r.base,
            Report::TD15Ex(r) => &r.base.base,
            Report::SgxEnclave(_) => {
                return Err(TdxVerifyError::Unsupported {
                    what: "quote body",
                    reason: "SGX enclave report in a TDX quote".into(),
                });
            }
        };
        Ok(Self {
            version: quote.header.version,
            mr_td: td.mr_td,
            rtmrs: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
            report_data: td.report_data,
            td_attributes: td.td_attributes,
            service_tds,
        })
    }

    /// Refuses a TD bound to service TDs: one bound before launch could read or change
    /// its state without any attribute saying so (SERVTD_EXT is checked with the
    /// attributes), and none are part of Veil's design.
    pub fn check_no_service_tds(&self) -> Result<(), TdxVerifyError> {
        if self.service_tds == [0; 48] {
            return Ok(());
        }
        Err(TdxVerifyError::Unsupported {
            what: "TD report",
            reason: format!(
                "service TDs are bound (SERVTD_HASH {})",
                hex::encode(self.service_tds)
            ),
        })
    }

    /// Whether the TD runs with DEBUG (or another TD-under-debug bit) set.
    pub fn is_debug(&self) -> bool {
        self.td_attributes[0] & TUD_ANY != 0
    }
}

/// Rejects a TD whose TD-under-debug attributes (DEBUG, bit 0, or the profiling bits
/// 4..=6) are set, unless `allow_debug`: a debug TD's memory and registers are open to
/// the host, so its measurements prove nothing about confidentiality. Also rejects a
/// migratable TD, one bound to service TDs, one with bits set that the TDX ABI reserves,
/// and, unless `sept_ve_allowed`, one running without SEPT_VE_DISABLE.
pub fn check_td_attributes(
    td_attributes: &[u8; 8],
    allow_debug: bool,
    sept_ve_allowed: bool,
) -> Result<(), TdxVerifyError> {
    let tud = td_attributes[0];
    if tud & TUD_ANY != 0 && !allow_debug {
        return Err(TdxVerifyError::DebugAllowed {
            td_attributes: hex::encode(td_attributes),
            debug_bit: tud & TUD_DEBUG != 0,
        });
    }
    let refuse = |reason: &str| TdxVerifyError::Unsupported {
        what: "TD attributes",
        reason: format!("{reason} (td_attributes {})", hex::encode(td_attributes)),
    };
    let attrs = TDAttributes::parse(*td_attributes).map_err(|e| refuse(&e.to_string()))?;
    if attrs.reserved != 0 {
        return Err(refuse(&format!(
            "bits the TDX ABI reserves are set ({:#018x})",
            attrs.reserved
        )));
    }
    // A migration TD could carry the TD, keys and all, to a host nobody attested.
    if attrs.sec.migratable {
        return Err(refuse("MIGRATABLE is set"));
    }
    // Service TDs bound to it can read its state; none are part of Veil's design.
    if attrs.sec.servtd_ext {
        return Err(refuse("SERVTD_EXT is set: service TDs are bound"));
    }
    // Without SEPT_VE_DISABLE the host can make the TD take #VE on its private pages,
    // a channel Linux refuses to run with. Azure's paravisor takes those #VE itself.
    if !sept_ve_allowed && !attrs.sec.sept_ve_disable {
        return Err(TdxVerifyError::SeptVeEnabled {
            td_attributes: hex::encode(td_attributes),
        });
    }
    Ok(())
}

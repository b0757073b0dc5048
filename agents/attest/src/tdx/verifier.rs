//! Verifying TDX evidence: the quote's signature chain to the Intel SGX Root CA (through
//! `dcap-qvl`), the collateral's validity at the verifier's clock, the binding to the
//! caller's data, and the policy (TCB status, debug, MRTD, RTMRs).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::verify::QuoteVerifier;
use x509_cert::crl::CertificateList;
use x509_cert::der::Decode as _;

use super::INTEL_SGX_ROOT_CA_DER;
use super::dcap;
use super::error::TdxVerifyError;
use super::evidence::TdxEvidence;
use super::quote::{TdQuote, check_td_attributes};
use crate::evidence::{Evidence, EvidencePlatform, Verified, Verifier};

/// TDX-specific facts of a verified quote.
/// Why a TD quote is refused when neither its evidence nor the verifier holds Intel's
/// collateral (tools match it to say how to get some).
pub const NO_COLLATERAL: &str = "the evidence carries no collateral and none is configured";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxVerifiedInfo {
    /// Quote format version (4 or 5).
    pub quote_version: u16,
    pub mr_td: [u8; 48],
    /// RTMR0..=3.
    pub rtmrs: [[u8; 48]; 4],
    pub td_attributes: [u8; 8],
    /// Intel's TCB status of the platform and QE, e.g. `UpToDate`, `SWHardeningNeeded`.
    pub tcb_status: String,
    /// Intel security advisories that apply at this TCB level (`INTEL-SA-…`).
    pub advisory_ids: Vec<String>,
}

/// What a TDX quote must satisfy beyond a valid signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxPolicy {
    /// Accepted MRTD values; empty accepts any.
    pub allowed_mrtd: Vec<[u8; 48]>,
    /// RTMR index (0..=3) → required value.
    pub expected_rtmrs: BTreeMap<u8, [u8; 48]>,
    /// Accepted TCB statuses as Intel names them (default `["UpToDate"]`).
    pub allowed_tcb_status: Vec<String>,
    /// Accept TDs with DEBUG or profiling attributes (never in production).
    pub allow_debug: bool,
    /// Verification time in Unix seconds; `None` reads the system clock. For tests and
    /// for re-checking recorded evidence.
    pub now: Option<u64>,
    /// Compare only `report_data[0..32]` with the user data and ignore the other 32
    /// bytes, which Veil's attester always zeroes. Only for recorded third-party quotes
    /// whose report data is not in Veil's layout; production policies keep it `false`.
    pub ignore_report_data_tail: bool,
}

impl Default for TdxPolicy {
    fn default() -> Self {
        Self {
            allowed_mrtd: Vec::new(),
            expected_rtmrs: BTreeMap::new(),
            allowed_tcb_status: vec!["UpToDate".to_owned()],
            allow_debug: false,
            now: None,
            ignore_report_data_tail: false,
        }
    }
}

/// Whose TD a quote is: which chain check and which attributes apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TdKind {
    /// A TD running Linux itself: dcap-qvl's check, SEPT_VE_DISABLE required.
    Plain,
    /// Azure's paravisor TD (azure-tdx evidence only): SEPT_VE_DISABLE may be clear.
    AzureParavisor,
}

/// Verifies TDX evidence with a pinned root and a [`TdxPolicy`].
#[derive(Debug, Clone)]
pub struct TdxVerifier {
    policy: TdxPolicy,
    root_ca_der: Vec<u8>,
    collateral: Option<QuoteCollateralV3>,
}

impl TdxVerifier {
    /// A verifier trusting the pinned Intel SGX Root CA.
    pub fn new(policy: TdxPolicy) -> Self {
        Self {
            policy,
            root_ca_der: INTEL_SGX_ROOT_CA_DER.to_vec(),
            collateral: None,
        }
    }

    /// Trusts `root_ca_der` instead of the Intel SGX Root CA (a test or private PKI).
    pub fn with_root_ca(mut self, root_ca_der: Vec<u8>) -> Self {
        self.root_ca_der = root_ca_der;
        self
    }

    /// Collateral to use for evidence that carries none (e.g. fetched by an operator
    /// from a PCCS and configured).
    pub fn with_collateral_json(mut self, json: &str) -> Result<Self, TdxVerifyError> {
        self.collateral = Some(parse_collateral(json)?);
        Ok(self)
    }

    pub fn policy(&self) -> &TdxPolicy {
        &self.policy
    }

    /// Takes `json`, collateral fetched for this node's own platform, in place of the
    /// collateral held, where it is fit to be: Intel's chain holds for `own_quote` with
    /// it at the verifier's clock (so it is Intel's, for this platform, and in date),
    /// and no part of it is older than what is held (the TCB info's and QE identity's
    /// evaluation and issue, each CRL's issue), so older collateral replayed by the
    /// network, say a PCK CRL from before a revocation, cannot displace newer.
    /// Collateral held for another platform is kept: the policy's author chose it.
    pub fn refresh_collateral(
        &mut self,
        json: &str,
        own_quote: &[u8],
    ) -> Result<CollateralRefresh, TdxVerifyError> {
        let fresh = parse_collateral(json)?;
        let now = self.now();
        check_collateral_window(&fresh, now)?;
        dcap::verify_chain(own_quote, &fresh, &self.root_ca_der, now)?;
        let fetched = Freshness::of(&fresh)?;
        if let Some(held) = &self.collateral {
            let held = Freshness::of(held)?;
            if !held.fmspc.eq_ignore_ascii_case(&fetched.fmspc) {
                return Ok(CollateralRefresh::KeptOtherPlatform {
                    held: held.fmspc,
                    fetched: fetched.fmspc,
                });
            }
            for ((part, h), (_, f)) in held.parts().into_iter().zip(fetched.parts()) {
                if f < h {
                    return Ok(CollateralRefresh::KeptNewer {
                        part,
                        held: h,
                        fetched: f,
                    });
                }
            }
        }
        self.collateral = Some(fresh);
        Ok(CollateralRefresh::Taken {
            fmspc: fetched.fmspc,
            evaluation: fetched.tcb_info.0,
        })
    }

    fn now(&self) -> u64 {
        match self.policy.now {
            Some(t) => t,
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    /// Verifies `ev` and that it is bound to `expected_user_data`.
    pub fn verify_tdx(
        &self,
        ev: &TdxEvidence,
        expected_user_data: &[u8; 32],
    ) -> Result<Verified, TdxVerifyError> {
        self.verify_td(ev, expected_user_data, TdKind::Plain)
    }

    /// Verifies the TD quote of Azure's TDX paravisor (a TD that partitions itself and
    /// handles #VE for its guest, so runs without SEPT_VE_DISABLE). Only the azure-tdx
    /// evidence kind calls it, after checking the HCL report the quote covers. That
    /// allowance holds only for the firmware the policy pins: without MRTDs to compare
    /// with, any TD (one running Linux directly without SEPT_VE_DISABLE, too) would pass.
    pub(crate) fn verify_paravisor_td(
        &self,
        ev: &TdxEvidence,
        expected_user_data: &[u8; 32],
    ) -> Result<Verified, TdxVerifyError> {
        if self.policy.allowed_mrtd.is_empty() {
            return Err(TdxVerifyError::Unsupported {
                what: "policy",
                reason: "a paravisor TD is accepted only with the paravisor's MRTDs pinned, and none are"
                    .into(),
            });
        }
        self.verify_td(ev, expected_user_data, TdKind::AzureParavisor)
    }

    fn verify_td(
        &self,
        ev: &TdxEvidence,
        expected_user_data: &[u8; 32],
        kind: TdKind,
    ) -> Result<Verified, TdxVerifyError> {
        let td = TdQuote::parse(&ev.quote)?;
        // The verifier's own collateral wins: evidence could carry older collateral,
        // signed by Intel too, under which its TCB looks better than it is today.
        let collateral = match (&ev.collateral, &self.collateral) {
            (_, Some(c)) => c.clone(),
            (Some(json), None) => parse_collateral(json)?,
            (None, None) => {
                return Err(TdxVerifyError::CollateralInvalid {
                    reason: NO_COLLATERAL.into(),
                });
            }
        };
        let now = self.now();
        check_collateral_window(&collateral, now)?;

        let (tcb_status, advisory_ids) = match kind {
            // Debug attributes are checked below with a precise error of our own.
            TdKind::Plain => {
                let report = QuoteVerifier::new(self.root_ca_der.clone())
                    .allow_debug(true)
                    .verify(&ev.quote, &collateral, now)
                    .map_err(|e| classify_dcap_error(&format!("{e:#}")))?;
                (report.status, report.advisory_ids)
            }
            // dcap-qvl refuses this TD outright (SEPT_VE_DISABLE clear): Veil's own
            // walk of the same chain, the attributes left to the check below.
            TdKind::AzureParavisor => {
                let verdict = dcap::verify_chain(&ev.quote, &collateral, &self.root_ca_der, now)?;
                (verdict.status, verdict.advisory_ids)
            }
        };

        check_report_data(
            &td.report_data,
            expected_user_data,
            self.policy.ignore_report_data_tail,
        )?;
        check_td_attributes(
            &td.td_attributes,
            self.policy.allow_debug,
            kind == TdKind::AzureParavisor,
        )?;
        td.check_no_service_tds()?;
        if !self.policy.allowed_tcb_status.contains(&tcb_status) {
            return Err(TdxVerifyError::TcbStatus {
                got: tcb_status,
                allowed: self.policy.allowed_tcb_status.clone(),
            });
        }
        if !self.policy.allowed_mrtd.is_empty() && !self.policy.allowed_mrtd.contains(&td.mr_td) {
            return Err(TdxVerifyError::MrtdMismatch {
                got: hex::encode(td.mr_td),
                allowed: self.policy.allowed_mrtd.len(),
            });
        }
        for (&index, expected) in &self.policy.expected_rtmrs {
            let got =
                td.rtmrs
                    .get(usize::from(index))
                    .ok_or_else(|| TdxVerifyError::Unsupported {
                        what: "policy",
                        reason: format!("RTMR{index} does not exist (TDX has RTMR0..=3)"),
                    })?;
            if got != expected {
                return Err(TdxVerifyError::RtmrMismatch {
                    index,
                    expected: hex::encode(expected),
                    got: hex::encode(got),
                });
            }
        }

        Ok(Verified {
            platform: EvidencePlatform::Tdx,
            user_data: *expected_user_data,
            pcrs: BTreeMap::new(),
            event_log: None,
            systemd_log: None,
            tpm: None,
            tdx: Some(TdxVerifiedInfo {
                quote_version: td.version,
                mr_td: td.mr_td,
                rtmrs: td.rtmrs,
                td_attributes: td.td_attributes,
                tcb_status,
                advisory_ids,
            }),
            snp: None,
            gcp: None,
            azure: None,
        })
    }
}

impl Verifier for TdxVerifier {
    type Error = TdxVerifyError;

    fn verify(
        &self,
        evidence: &Evidence,
        expected_user_data: &[u8; 32],
    ) -> Result<Verified, TdxVerifyError> {
        match evidence {
            Evidence::Tdx(ev) => self.verify_tdx(ev, expected_user_data),
            #[allow(unreachable_patterns)]
            _ => Err(TdxVerifyError::WrongPlatform {
                platform: "non-TDX",
            }),
        }
    }
}

/// `report_data[0..32]` must be the caller's data and, in Veil's layout, the rest zero.
pub fn check_report_data(
    report_data: &[u8; 64],
    expected_user_data: &[u8; 32],
    ignore_tail: bool,
) -> Result<(), TdxVerifyError> {
    let (head, tail) = report_data.split_at(32);
    if head != expected_user_data || (!ignore_tail && tail.iter().any(|&b| b != 0)) {
        let mut expected = [0u8; 64];
        expected[..32].copy_from_slice(expected_user_data);
        let expected = if ignore_tail {
            hex::encode(expected_user_data)
        } else {
            hex::encode(expected)
        };
        return Err(TdxVerifyError::ReportDataMismatch {
            expected,
            got: hex::encode(report_data),
        });
    }
    Ok(())
}

fn parse_collateral(json: &str) -> Result<QuoteCollateralV3, TdxVerifyError> {
    serde_json::from_str(json).map_err(|e| TdxVerifyError::Malformed {
        what: "collateral",
        reason: e.to_string(),
    })
}

/// dcap-qvl reports errors as text; sort them into "the signatures do not check out"
/// and "the collateral does not fit". Time windows are checked before, with precise
/// messages, by [`check_collateral_window`].
fn classify_dcap_error(reason: &str) -> TdxVerifyError {
    let r = reason.to_ascii_lowercase();
    if r.contains("revoked") && r.contains("tcb status") {
        return TdxVerifyError::TcbStatus {
            got: "Revoked".into(),
            allowed: Vec::new(),
        };
    }
    if r.contains("failed to decode quote") {
        return TdxVerifyError::Malformed {
            what: "quote",
            reason: reason.to_owned(),
        };
    }
    if r.starts_with("unsupported")
        || r.contains("unknown qe vendor")
        || r.contains("must have version")
    {
        return TdxVerifyError::Unsupported {
            what: "quote",
            reason: reason.to_owned(),
        };
    }
    let signature = [
        "signature is invalid",
        "hash mismatch",
        "certificate chain",
        "pck certificate",
        "root ca",
        "qe report",
    ];
    if signature.iter().any(|s| r.contains(s)) {
        TdxVerifyError::BadSignature {
            reason: reason.to_owned(),
        }
    } else {
        TdxVerifyError::CollateralInvalid {
            reason: reason.to_owned(),
        }
    }
}

/// What [`TdxVerifier::refresh_collateral`] did with fetched collateral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CollateralRefresh {
    /// Taken: Intel's TCB info for platform `fmspc`, evaluation data number `evaluation`.
    Taken { fmspc: String, evaluation: u32 },
    /// Kept the collateral held: its `part` is newer. `held` and `fetched` are that
    /// part's (evaluation data number, issue time in Unix seconds); a CRL has no
    /// evaluation number (0).
    KeptNewer {
        part: &'static str,
        held: (u32, u64),
        fetched: (u32, u64),
    },
    /// Kept the collateral held: it is for another platform than this node's.
    KeptOtherPlatform { held: String, fetched: String },
}

/// How new each part of a collateral set is.
struct Freshness {
    fmspc: String,
    tcb_info: (u32, u64),
    qe_identity: (u32, u64),
    pck_crl: u64,
    root_ca_crl: u64,
}

impl Freshness {
    fn of(c: &QuoteCollateralV3) -> Result<Self, TdxVerifyError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Dated {
            #[serde(default)]
            fmspc: String,
            tcb_evaluation_data_number: u32,
            issue_date: String,
        }
        let dated = |what: &'static str, json: &str| -> Result<(Dated, u64), TdxVerifyError> {
            let malformed = |reason: String| TdxVerifyError::Malformed { what, reason };
            let d: Dated = serde_json::from_str(json).map_err(|e| malformed(e.to_string()))?;
            let issued = parse_rfc3339_utc(&d.issue_date)
                .ok_or_else(|| malformed(format!("issueDate {:?} unreadable", d.issue_date)))?;
            Ok((d, issued))
        };
        let crl_issued = |what: &'static str, der: &[u8]| {
            CertificateList::from_der(der)
                .map(|crl| crl.tbs_cert_list.this_update.to_unix_duration().as_secs())
                .map_err(|e| TdxVerifyError::Malformed {
                    what,
                    reason: e.to_string(),
                })
        };
        let (tcb, tcb_issued) = dated("TCB info", &c.tcb_info)?;
        let (qe, qe_issued) = dated("QE identity", &c.qe_identity)?;
        Ok(Self {
            fmspc: tcb.fmspc,
            tcb_info: (tcb.tcb_evaluation_data_number, tcb_issued),
            qe_identity: (qe.tcb_evaluation_data_number, qe_issued),
            pck_crl: crl_issued("PCK CRL", &c.pck_crl)?,
            root_ca_crl: crl_issued("root CA CRL", &c.root_ca_crl)?,
        })
    }

    fn parts(&self) -> [(&'static str, (u32, u64)); 4] {
        [
            ("TCB info", self.tcb_info),
            ("QE identity", self.qe_identity),
            ("PCK CRL", (0, self.pck_crl)),
            ("root CA CRL", (0, self.root_ca_crl)),
        ]
    }
}

/// Checks that `now` lies inside the validity window of every dated piece of collateral:
/// TCB info and QE identity (`issueDate`..`nextUpdate`), the root CA CRL and the PCK CRL
/// (`thisUpdate`..`nextUpdate`).
pub fn check_collateral_window(c: &QuoteCollateralV3, now: u64) -> Result<(), TdxVerifyError> {
    let invalid = |reason: String| TdxVerifyError::CollateralInvalid { reason };
    for (what, json) in [("TCB info", &c.tcb_info), ("QE identity", &c.qe_identity)] {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| invalid(format!("{what} is not JSON: {e}")))?;
        let date = |field: &str| -> Result<u64, TdxVerifyError> {
            let s = v
                .get(field)
                .and_then(|f| f.as_str())
                .ok_or_else(|| invalid(format!("{what} has no {field}")))?;
            parse_rfc3339_utc(s).ok_or_else(|| invalid(format!("{what} {field} {s:?} unreadable")))
        };
        window(what, date("issueDate")?, Some(date("nextUpdate")?), now)?;
    }
    for (what, der) in [("root CA CRL", &c.root_ca_crl), ("PCK CRL", &c.pck_crl)] {
        let crl = CertificateList::from_der(der)
            .map_err(|e| invalid(format!("{what} is not a DER CRL: {e}")))?;
        let tbs = &crl.tbs_cert_list;
        window(
            what,
            tbs.this_update.to_unix_duration().as_secs(),
            tbs.next_update.map(|t| t.to_unix_duration().as_secs()),
            now,
        )?;
    }
    Ok(())
}

fn window(what: &str, from: u64, until: Option<u64>, now: u64) -> Result<(), TdxVerifyError> {
    if now < from {
        return Err(TdxVerifyError::CollateralInvalid {
            reason: format!("{what} not yet valid: issued at {from}, now {now} (unix seconds)"),
        });
    }
    if let Some(until) = until.filter(|&u| now > u) {
        return Err(TdxVerifyError::CollateralInvalid {
            reason: format!("{what} expired at {until}, now {now} (unix seconds)"),
        });
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` → Unix seconds (the form Intel PCS uses).
fn parse_rfc3339_utc(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 20
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(13) != Some(&b':')
    {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(16) != Some(&b':') {
        return None;
    }
    let rest = s.get(19..)?;
    let rest = rest
        .strip_prefix('.')
        .map(|r| r.trim_start_matches(|c: char| c.is_ascii_digit()))
        .unwrap_or(rest);
    if rest != "Z" && rest != "z" && rest != "+00:00" {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_utc("2025-06-19T10:16:03Z"),
            Some(1_750_328_163)
        );
        assert_eq!(
            parse_rfc3339_utc("2000-03-01T00:00:00.123Z"),
            Some(951_868_800)
        );
        assert_eq!(parse_rfc3339_utc("2025-06-19T10:16:03"), None);
        assert_eq!(parse_rfc3339_utc("2025-13-19T10:16:03Z"), None);
        assert_eq!(parse_rfc3339_utc("20x5-06-19T10:16:03Z"), None);
        assert_eq!(parse_rfc3339_utc("é"), None);
    }

    #[test]
    fn report_data_binding() {
        let user = [7u8; 32];
        let mut rd = [0u8; 64];
        rd[..32].copy_from_slice(&user);
        assert!(check_report_data(&rd, &user, false).is_ok());
        assert!(matches!(
            check_report_data(&rd, &[8u8; 32], false),
            Err(TdxVerifyError::ReportDataMismatch { .. })
        ));
        rd[63] = 1;
        assert!(matches!(
            check_report_data(&rd, &user, false),
            Err(TdxVerifyError::ReportDataMismatch { .. })
        ));
        assert!(check_report_data(&rd, &user, true).is_ok());
    }
}

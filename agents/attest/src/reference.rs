//! Comparing verified PCR values with reference values.
//!
//! Where the reference values come from (measured-boot's precomputed file) and which PCRs
//! are enforced is the caller's policy; this only does the comparison, and reports every
//! difference with index, expected and actual value so an operator can see what changed.

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

/// Result for one reference PCR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcrOutcome {
    Match,
    /// Differs, but the reference is warn-only.
    WarnMismatch,
    /// Differs and is enforced.
    Mismatch,
    /// Not in the verified set (not quoted).
    Missing {
        warn_only: bool,
    },
}

/// One reference PCR compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrCheck {
    pub index: u32,
    pub expected: [u8; 32],
    pub actual: Option<[u8; 32]>,
    pub outcome: PcrOutcome,
}

impl fmt::Display for PcrCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actual = self
            .actual
            .map_or_else(|| "not quoted".to_string(), hex::encode);
        write!(
            f,
            "PCR {}: expected {}, actual {}",
            self.index,
            hex::encode(self.expected),
            actual
        )
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PcrPolicyError {
    /// Enforced PCRs differ from (or are missing against) the reference.
    #[error("{} enforced PCR(s) do not match the reference: {}", .0.len(), list(.0))]
    Mismatch(Vec<PcrCheck>),
}

fn list(checks: &[PcrCheck]) -> String {
    checks
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Compares `verified` PCRs with `expected` (index → (value, warn_only)): one check per
/// reference PCR, whatever the outcome (for a full report).
pub fn check_pcrs(
    verified: &BTreeMap<u32, [u8; 32]>,
    expected: &BTreeMap<u32, ([u8; 32], bool)>,
) -> Vec<PcrCheck> {
    expected
        .iter()
        .map(|(&index, &(value, warn_only))| {
            let actual = verified.get(&index).copied();
            let outcome = match actual {
                None => PcrOutcome::Missing { warn_only },
                Some(a) if a == value => PcrOutcome::Match,
                Some(_) if warn_only => PcrOutcome::WarnMismatch,
                Some(_) => PcrOutcome::Mismatch,
            };
            PcrCheck {
                index,
                expected: value,
                actual,
                outcome,
            }
        })
        .collect()
}

/// Like [`check_pcrs`], but an error listing the enforced failures if there are any.
pub fn compare_pcrs(
    verified: &BTreeMap<u32, [u8; 32]>,
    expected: &BTreeMap<u32, ([u8; 32], bool)>,
) -> Result<Vec<PcrCheck>, PcrPolicyError> {
    let checks = check_pcrs(verified, expected);
    let failed: Vec<PcrCheck> = checks
        .iter()
        .filter(|c| {
            matches!(
                c.outcome,
                PcrOutcome::Mismatch | PcrOutcome::Missing { warn_only: false }
            )
        })
        .cloned()
        .collect();
    if failed.is_empty() {
        Ok(checks)
    } else {
        Err(PcrPolicyError::Mismatch(failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_enforced_mismatch_with_values_and_tolerates_warn_only() {
        let verified = BTreeMap::from([(4, [1; 32]), (9, [2; 32]), (12, [3; 32])]);
        let ok = BTreeMap::from([(4, ([1; 32], false)), (12, ([0xee; 32], true))]);
        let checks = compare_pcrs(&verified, &ok).expect("warn-only passes");
        assert_eq!(checks[1].outcome, PcrOutcome::WarnMismatch);

        let bad = BTreeMap::from([(9, ([7; 32], false)), (11, ([0; 32], false))]);
        let err = compare_pcrs(&verified, &bad).expect_err("enforced");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "PCR 9: expected {}, actual {}",
                "07".repeat(32),
                "02".repeat(32)
            )),
            "{msg}"
        );
        assert!(
            msg.contains("PCR 11") && msg.contains("not quoted"),
            "{msg}"
        );
    }
}

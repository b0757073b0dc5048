//! Explaining why PCR values differ, by component: between the expectations of two
//! images (`PCR 11: .cmdline changed`) or between an expectation and an event log.
//!
//! The extends of each PCR are aligned on their digests (longest common subsequence);
//! within each gap between matched extends, the n-th expected and the n-th other extend
//! pair up as "changed", and the rest are "missing" or "unexpected".

use crate::digest::Digest;
use crate::eventlog::EventLog;
use crate::pcr::ExpectedPcrs;
use std::fmt;

/// How one extend differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Both have an extend here, with different digests.
    Changed,
    /// Expected but absent from the other side.
    Missing,
    /// Present on the other side only.
    Unexpected,
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub pcr: u32,
    pub change: Change,
    /// The component, named from the expected side when it has one.
    pub component: String,
    pub expected: Option<Digest>,
    pub actual: Option<Digest>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |x: &Option<Digest>| x.map_or_else(|| "-".to_owned(), |d| d.short());
        match self.change {
            Change::Changed => write!(
                f,
                "PCR {}: {} changed (expected {}…, got {}…)",
                self.pcr,
                self.component,
                d(&self.expected),
                d(&self.actual)
            ),
            Change::Missing => write!(f, "PCR {}: {} missing", self.pcr, self.component),
            Change::Unexpected => write!(
                f,
                "PCR {}: unexpected extra measurement: {} ({}…)",
                self.pcr,
                self.component,
                d(&self.actual)
            ),
        }
    }
}

/// One side of a comparison: (label, digest) per extend.
type Side = Vec<(String, Digest)>;

fn align(pcr: u32, expected: &Side, actual: &Side) -> Vec<Difference> {
    let (n, m) = (expected.len(), actual.len());
    // lcs[i][j]: length of the LCS of expected[i..] and actual[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i].1 == actual[j].1 {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    let (mut gap_e, mut gap_a): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    let flush = |gap_e: &mut Vec<usize>, gap_a: &mut Vec<usize>, out: &mut Vec<Difference>| {
        let pairs = gap_e.len().max(gap_a.len());
        for k in 0..pairs {
            let e = gap_e.get(k).and_then(|&x| expected.get(x));
            let a = gap_a.get(k).and_then(|&x| actual.get(x));
            out.push(match (e, a) {
                (Some(e), Some(a)) => Difference {
                    pcr,
                    change: Change::Changed,
                    component: e.0.clone(),
                    expected: Some(e.1),
                    actual: Some(a.1),
                },
                (Some(e), None) => Difference {
                    pcr,
                    change: Change::Missing,
                    component: e.0.clone(),
                    expected: Some(e.1),
                    actual: None,
                },
                (None, Some(a)) => Difference {
                    pcr,
                    change: Change::Unexpected,
                    component: a.0.clone(),
                    expected: None,
                    actual: Some(a.1),
                },
                (None, None) => continue,
            });
        }
        gap_e.clear();
        gap_a.clear();
    };
    while i < n || j < m {
        if i < n && j < m && expected[i].1 == actual[j].1 {
            flush(&mut gap_e, &mut gap_a, &mut out);
            i += 1;
            j += 1;
        } else if j >= m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            gap_e.push(i);
            i += 1;
        } else {
            gap_a.push(j);
            j += 1;
        }
    }
    flush(&mut gap_e, &mut gap_a, &mut out);
    out
}

fn expected_side(e: &ExpectedPcrs, pcr: u32) -> Side {
    e.events_for(pcr)
        .map(|m| (m.component.to_string(), m.digest))
        .collect()
}

/// Why two images' expected PCRs differ (empty when they are equal).
pub fn diff_expected(old: &ExpectedPcrs, new: &ExpectedPcrs) -> Vec<Difference> {
    let mut out = Vec::new();
    for pcr in ExpectedPcrs::PCRS {
        if old.value(pcr) != new.value(pcr) {
            out.extend(align(
                pcr,
                &expected_side(old, pcr),
                &expected_side(new, pcr),
            ));
        }
    }
    out
}

/// Why the PCRs replayed from `log` differ from `expected` (empty when they agree on
/// every PCR this crate predicts). Log events are labelled with their description.
pub fn diff_against_log(expected: &ExpectedPcrs, log: &EventLog) -> Vec<Difference> {
    let replayed = log.replay();
    let mut out = Vec::new();
    for pcr in ExpectedPcrs::PCRS {
        let actual_value = replayed.get(&pcr).copied().unwrap_or(Digest::ZERO);
        if expected.value(pcr) == Some(actual_value) {
            continue;
        }
        let actual: Side = log
            .extends(pcr)
            .filter_map(|e| e.sha256.map(|d| (e.description.clone(), d)))
            .collect();
        let mut diffs = align(pcr, &expected_side(expected, pcr), &actual);
        if diffs.is_empty() {
            // Same extends but a different value: the log does not explain the PCR.
            diffs.push(Difference {
                pcr,
                change: Change::Changed,
                component: "PCR value (the event log does not account for it)".into(),
                expected: expected.value(pcr),
                actual: Some(actual_value),
            });
        }
        out.extend(diffs);
    }
    out
}

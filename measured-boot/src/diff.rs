//! Explaining why PCR values differ, by component: between the expectations of two
//! images (`PCR 11: .cmdline changed`) or between an expectation and an event log.
//!
//! The extends of each PCR are aligned on their digests (longest common subsequence);
//! within each gap between matched extends, the n-th expected and the n-th other extend
//! pair up as "changed", and the rest are "missing" or "unexpected".

use crate::digest::Digest;
use crate::eventlog::EventLog;
use crate::pcr::ExpectedPcrs;
use crate::reference::ReferenceMeasurements;
use std::collections::BTreeMap;
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
    /// The event log does not replay to the value the node's TPM quoted for this PCR
    /// (incomplete or forged), so it cannot say which component differs.
    LogDoesNotReplay,
    /// The reference lists no extends for this PCR, so nothing can be named.
    NoReferenceEvents,
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
            Change::LogDoesNotReplay => write!(
                f,
                "PCR {}: differs (expected {}…, quoted {}…); the node's event log replays to {}…, not to the quoted value, so it cannot name the component",
                self.pcr,
                d(&self.expected),
                d(&self.actual),
                self.component
            ),
            Change::NoReferenceEvents => write!(
                f,
                "PCR {}: differs (expected {}…, quoted {}…); the reference lists no extends for it (made by an older veil measure?)",
                self.pcr,
                d(&self.expected),
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
        let Some(expected_value) = expected.value(pcr) else {
            continue;
        };
        if expected_value != actual_value {
            out.extend(explain(
                pcr,
                expected_value,
                actual_value,
                &expected_side(expected, pcr),
                log,
            ));
        }
    }
    out
}

/// Why the PCRs a node's TPM quoted differ from a reference file, each difference
/// named from the node's event log. The log is not signed: it is believed for a PCR
/// only if it replays to exactly the quoted value; otherwise that is what is reported.
/// PCRs the reference does not list, and PCRs that match, are not examined.
pub fn diff_reference_against_log(
    reference: &ReferenceMeasurements,
    quoted: &BTreeMap<u32, Digest>,
    log: &EventLog,
) -> Vec<Difference> {
    let replayed = log.replay();
    let mut out = Vec::new();
    for (&pcr, want) in &reference.pcrs {
        let Some(&actual_value) = quoted.get(&pcr) else {
            continue;
        };
        if want.expected == actual_value {
            continue;
        }
        let from_log = replayed.get(&pcr).copied().unwrap_or(Digest::ZERO);
        if from_log != actual_value {
            out.push(Difference {
                pcr,
                change: Change::LogDoesNotReplay,
                component: from_log.short(),
                expected: Some(want.expected),
                actual: Some(actual_value),
            });
            continue;
        }
        if want.events.is_empty() {
            out.push(Difference {
                pcr,
                change: Change::NoReferenceEvents,
                component: String::new(),
                expected: Some(want.expected),
                actual: Some(actual_value),
            });
            continue;
        }
        let side: Side = want
            .events
            .iter()
            .map(|e| (e.component.clone(), e.digest))
            .collect();
        out.extend(explain(pcr, want.expected, actual_value, &side, log));
    }
    out
}

/// The differences behind one PCR whose values differ.
fn explain(
    pcr: u32,
    expected_value: Digest,
    actual_value: Digest,
    expected: &Side,
    log: &EventLog,
) -> Vec<Difference> {
    let actual: Side = log
        .extends(pcr)
        .filter_map(|e| e.sha256.map(|d| (e.description.clone(), d)))
        .collect();
    let mut diffs = align(pcr, expected, &actual);
    if diffs.is_empty() {
        // Same extends but a different value: the log does not explain the PCR.
        diffs.push(Difference {
            pcr,
            change: Change::Changed,
            component: "PCR value (the event log does not account for it)".into(),
            expected: Some(expected_value),
            actual: Some(actual_value),
        });
    }
    diffs
}

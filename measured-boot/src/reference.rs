//! The reference measurements file `veil measure --output json` writes and the verifier
//! loads: expected PCR values (enforced or warn-only) and facts about the image.
//!
//! ```json
//! {"pcrs": {"4": {"expected": "<hex>", "warnOnly": false}, "9": {…}, "11": {…,
//!   "phases": {"stub": "<hex>", "enter-initrd": "<hex>", …}}, "12": {…}, "13": {…}},
//!   (each PCR also lists its "events": [{"component": ".cmdline", "digest": "<hex>"}, …])
//!  "image": {"ukiSha256": "<hex>", "roothash": "<hex>", "osRelease": {…},
//!   "kernelVersion": "…"}}
//! ```

use crate::digest::Digest;
use crate::pcr::ExpectedPcrs;
use crate::uki::Uki;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// The PCRs that pin what boots: the UKI (4), what its stub and kernel loaded from it,
/// the command line with the dm-verity root hash among it (9), and the UKI's sections
/// and boot phase (11).
pub const BOOT_CHAIN_PCRS: [u32; 3] = [4, 9, 11];

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceMeasurements {
    /// PCR index → expectation. Keys are written as JSON strings ("4").
    pub pcrs: BTreeMap<u32, PcrReference>,
    pub image: ImageFacts,
    /// Where the image is meant to run (`veil measure --profile`: `qemu`,
    /// `azure-sev-snp`, …): a verifier holds nodes to it, with its policy and command
    /// line, which must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// The expectation for one PCR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PcrReference {
    pub expected: Digest,
    /// A mismatch is reported but does not fail verification.
    pub warn_only: bool,
    /// PCR 11 only: the value after systemd-stub and after each boot phase, in boot order.
    #[serde(default, skip_serializing_if = "Phases::is_empty")]
    pub phases: Phases,
    /// Every extend that makes `expected`, in order: lets a verifier name the component
    /// behind a mismatch from the node's event log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<ReferenceEvent>,
}

/// One expected extend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceEvent {
    /// What is measured, e.g. ".cmdline" or "UKI PE hash".
    pub component: String,
    pub digest: Digest,
}

/// Ordered phase name → value (serialised as a JSON object in boot order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Phases(pub Vec<(String, Digest)>);

impl Phases {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value after `phase`.
    pub fn get(&self, phase: &str) -> Option<Digest> {
        self.0.iter().find(|(p, _)| p == phase).map(|(_, d)| *d)
    }
}

impl Serialize for Phases {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Phases {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Phases;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of phase name to hex digest")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Phases, A::Error> {
                let mut v = Vec::new();
                while let Some((k, d)) = a.next_entry::<String, Digest>()? {
                    v.push((k, d));
                }
                Ok(Phases(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// What the image is, for people and for the verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageFacts {
    /// SHA-256 of the UKI file.
    pub uki_sha256: Digest,
    /// `roothash=` from the UKI command line (the dm-verity root hash).
    pub roothash: Option<String>,
    /// `usrhash=`, when the image verifies /usr instead of /.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usrhash: Option<String>,
    /// The UKI's `.osrel`.
    pub os_release: BTreeMap<String, String>,
    /// The UKI's `.uname`.
    pub kernel_version: Option<String>,
}

impl ImageFacts {
    pub fn from_uki(uki: &Uki) -> ImageFacts {
        ImageFacts {
            uki_sha256: uki.sha256(),
            roothash: uki.roothash(),
            usrhash: uki.usrhash(),
            os_release: uki.os_release(),
            kernel_version: uki.uname(),
        }
    }
}

impl ReferenceMeasurements {
    /// The reference for an image: every predicted PCR enforced.
    pub fn new(expected: &ExpectedPcrs, uki: &Uki) -> ReferenceMeasurements {
        let mut pcrs = BTreeMap::new();
        for pcr in ExpectedPcrs::PCRS {
            let Some(value) = expected.value(pcr) else {
                continue;
            };
            let phases = if pcr == 11 {
                Phases(expected.pcr11_phases.clone())
            } else {
                Phases::default()
            };
            pcrs.insert(
                pcr,
                PcrReference {
                    expected: value,
                    warn_only: false,
                    phases,
                    events: expected
                        .events_for(pcr)
                        .map(|m| ReferenceEvent {
                            component: m.component.to_string(),
                            digest: m.digest,
                        })
                        .collect(),
                },
            );
        }
        ReferenceMeasurements {
            pcrs,
            image: ImageFacts::from_uki(uki),
            profile: None,
        }
    }

    /// Parses the JSON file.
    pub fn from_json(s: &str) -> serde_json::Result<ReferenceMeasurements> {
        serde_json::from_str(s)
    }

    /// Which of [`BOOT_CHAIN_PCRS`] this reference does not enforce (absent or
    /// warn-only): a cluster's reference must leave none out, or a node running any
    /// kernel and command line would match it.
    pub fn unenforced_boot_chain(&self) -> Vec<u32> {
        BOOT_CHAIN_PCRS
            .into_iter()
            .filter(|i| self.pcrs.get(i).is_none_or(|p| p.warn_only))
            .collect()
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail (string keys, no non-finite floats).
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(pcrs: &[(u32, bool)]) -> ReferenceMeasurements {
        let zero = "00".repeat(32);
        let pcrs: Vec<String> = pcrs
            .iter()
            .map(|(i, warn)| format!(r#""{i}":{{"expected":"{zero}","warnOnly":{warn}}}"#))
            .collect();
        ReferenceMeasurements::from_json(&format!(
            r#"{{"pcrs":{{{}}},"image":{{"ukiSha256":"{zero}","roothash":"{zero}","osRelease":{{}},"kernelVersion":"k"}}}}"#,
            pcrs.join(",")
        ))
        .expect("reference")
    }

    #[test]
    fn a_reference_that_leaves_the_boot_chain_out_says_which_pcrs() {
        assert_eq!(reference(&[]).unenforced_boot_chain(), vec![4, 9, 11]);
        assert_eq!(
            reference(&[(4, false), (9, true), (12, false)]).unenforced_boot_chain(),
            vec![9, 11],
            "warn-only enforces nothing"
        );
        assert!(
            reference(&[(4, false), (9, false), (11, false), (13, true)])
                .unenforced_boot_chain()
                .is_empty()
        );
    }
}

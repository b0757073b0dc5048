//! Cloud profiles: which evidence a node on a given kind of machine must present.
//!
//! A profile names where a node runs (`qemu`, `azure-sev-snp`, …) and with it the one
//! evidence kind a verifier takes from such a node. The node never chooses: it may
//! say what it detected, but a verifier under a profile refuses any other evidence
//! kind, so a node cannot move itself to a weaker check by claiming another platform.
//!

use std::fmt;
use std::str::FromStr;

use crate::evidence::EvidencePlatform;

/// Where the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// QEMU (or any machine) whose TPM has an EK certificate from a CA the operator
    /// names: AK activation against that EK, then quotes; with the policy's `sevSnp` or
    /// `tdx` sections, a configfs-tsm report over the AK.
    Qemu,
    /// Azure SEV-SNP CVMs: the paravisor's HCL report and the vTPM AK's quote.
    AzureSevSnp,
    AzureTdx,
    GcpSevSnp,
    GcpTdx,
    AwsSevSnp,
}

impl Profile {
    pub const ALL: [Profile; 6] = [
        Profile::Qemu,
        Profile::AzureSevSnp,
        Profile::AzureTdx,
        Profile::GcpSevSnp,
        Profile::GcpTdx,
        Profile::AwsSevSnp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Qemu => "qemu",
            Profile::AzureSevSnp => "azure-sev-snp",
            Profile::AzureTdx => "azure-tdx",
            Profile::GcpSevSnp => "gcp-sev-snp",
            Profile::GcpTdx => "gcp-tdx",
            Profile::AwsSevSnp => "aws-sev-snp",
        }
    }

    /// The evidence kind a node under this profile must present.
    pub fn evidence(self) -> EvidencePlatform {
        match self {
            Profile::Qemu | Profile::AwsSevSnp => EvidencePlatform::Tpm,
            Profile::AzureSevSnp => EvidencePlatform::AzureSevSnp,
            Profile::AzureTdx => EvidencePlatform::AzureTdx,
            Profile::GcpSevSnp | Profile::GcpTdx => EvidencePlatform::GcpVtpm,
        }
    }

    /// The CPU report a node under this profile must add, beside the evidence kind
    /// (`"SEV-SNP"` or `"TDX"`): where the vTPM alone does not prove a confidential VM.
    pub fn hardware(self) -> Option<&'static str> {
        match self {
            Profile::GcpSevSnp | Profile::AwsSevSnp => Some("SEV-SNP"),
            Profile::GcpTdx => Some("TDX"),
            _ => None,
        }
    }

    /// Whether a verifier activates the node's AK against a certified EK before it
    /// takes a quote (the `qemu` profile); elsewhere the hardware report names the AK.
    pub fn activates_ak(self) -> bool {
        self == Profile::Qemu
    }

    /// What a verified piece of evidence under this profile proves, for people.
    pub fn proves(self) -> &'static str {
        match self {
            Profile::Qemu => {
                "the TPM quote's PCRs, from an AK activated against an EK the TPM CA certified (and, with a hardware report, the CPU's launch measurement over that AK)"
            }
            Profile::AzureSevSnp => {
                "the vTPM quote's PCRs, from the AK that Azure's paravisor named in an SEV-SNP report signed by the chip (VCEK to AMD's pinned roots), with the paravisor's launch measurement pinned"
            }
            Profile::AzureTdx => {
                "the vTPM quote's PCRs, from the AK that Azure's paravisor named in a TD report, quoted by Intel's quoting enclave (PCK chain to Intel's pinned root, collateral, MRTD pinned)"
            }
            Profile::AwsSevSnp => {
                "the NitroTPM quote's PCRs, from the AK that an SEV-SNP report (VLEK or VCEK, to AMD's pinned roots) over the launch-measured guest binds (NitroTPM is outside the TEE: the PCRs are AWS's word)"
            }
            Profile::GcpSevSnp | Profile::GcpTdx => {
                "the vTPM quote's PCRs, from the AK that Google certified (Google's vTPM is outside the TEE: this is Google's word), and the CPU's launch measurement in a report over that AK"
            }
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Profile::ALL.iter().map(|p| p.name()).collect();
                format!("'{s}' is not a profile (one of: {})", names.join(", "))
            })
    }
}

impl<'de> serde::Deserialize<'de> for Profile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_known() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>(), Ok(p));
        }
        let e = "azure".parse::<Profile>().expect_err("not a profile");
        assert!(e.contains("one of: qemu, azure-sev-snp"), "{e}");
    }

    #[test]
    fn only_qemu_activates_and_each_profile_takes_one_kind() {
        assert!(Profile::Qemu.activates_ak());
        assert!(!Profile::AzureSevSnp.activates_ak());
        assert_eq!(
            Profile::AzureSevSnp.evidence(),
            EvidencePlatform::AzureSevSnp
        );
        assert!(!Profile::AwsSevSnp.activates_ak());
        assert_eq!(Profile::GcpTdx.hardware(), Some("TDX"));
        assert_eq!(Profile::Qemu.hardware(), None);
    }
}

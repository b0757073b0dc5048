//! TEST DATA: Intel PCS answers as they were served, put back together from recorded
//! collateral (`QuoteCollateralV3` JSON): each signed part (TCB info, QE identity) in
//! its JSON envelope with its signature in hex, each issuer chain URL-encoded in its
//! header, the CRLs in DER. Intel's signatures cover the parts, which are unchanged, so
//! what the verifier checks is Intel's own data.
//!
//! Shared by `veil-attest`'s tests of assembling answers, and by the tests that serve
//! them from a PCS test double (`veil-fetch`, the join service, `veil`).

#![allow(dead_code)]

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use veil_attest::tdx::pcs::{PcsAnswer, PcsAnswers};

fn field<'a>(c: &'a serde_json::Value, name: &str) -> &'a str {
    c[name]
        .as_str()
        .unwrap_or_else(|| panic!("recorded collateral has no {name}"))
}

fn header(pem: &str) -> Option<String> {
    Some(utf8_percent_encode(pem, NON_ALPHANUMERIC).to_string())
}

/// The answers a PCS gave for `collateral_json`.
pub fn served(collateral_json: &str) -> PcsAnswers {
    let c: serde_json::Value = serde_json::from_str(collateral_json).expect("recorded collateral");
    let der = |name: &str| hex::decode(field(&c, name)).expect("hex CRL");
    PcsAnswers {
        tcb_info: PcsAnswer {
            body: format!(
                r#"{{"tcbInfo":{},"signature":"{}"}}"#,
                field(&c, "tcb_info"),
                field(&c, "tcb_info_signature")
            )
            .into_bytes(),
            issuer_chain: header(field(&c, "tcb_info_issuer_chain")),
        },
        qe_identity: PcsAnswer {
            body: format!(
                r#"{{"enclaveIdentity":{},"signature":"{}"}}"#,
                field(&c, "qe_identity"),
                field(&c, "qe_identity_signature")
            )
            .into_bytes(),
            issuer_chain: header(field(&c, "qe_identity_issuer_chain")),
        },
        pck_crl: PcsAnswer {
            body: der("pck_crl"),
            issuer_chain: header(field(&c, "pck_crl_issuer_chain")),
        },
        root_ca_crl: der("root_ca_crl"),
    }
}

/// The recorded Azure TDX CVM's evidence (tests/data/azure/README.md), its vTPM quote
/// over the nonce "challenge".
pub fn recorded_azure_tdx() -> veil_attest::azure::AzureTdxEvidence {
    veil_attest::azure::AzureTdxEvidence {
        hcl_report: include_bytes!("../data/azure/tdx-hcl-report.bin").to_vec(),
        td_quote: include_bytes!("../data/azure/tdx-td-quote.bin").to_vec(),
        quote: include_bytes!("../data/azure/tdx-quote.bin").to_vec(),
        signature: include_bytes!("../data/azure/tdx-quote.sig").to_vec(),
        pcrs: include_bytes!("../data/azure/tdx-quote-pcrs.bin")
            .chunks(32)
            .enumerate()
            .map(|(i, v)| {
                (
                    i as u32,
                    veil_attest::Digest32(v.try_into().expect("32 bytes")),
                )
            })
            .collect(),
    }
}
